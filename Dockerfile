# distsnn training image: DeepSpeed launcher under tini + docker/entrypoint.sh (SIGTERM to every rank).
#   docker build -t ghcr.io/distsnn/distsnn:0.1.0 .
# Stage 1 builds the virtual environment from the lock file (sdists such as deepspeed are built
# here); stage 2 copies only the environment and the sources, no pip cache, and the two things the
# GPU path needs at run time: a C/C++ compiler (Triton compiles a small C launcher per kernel on first
# use and Inductor's CPU code is C++; without one the fused LIF falls back to the ~6x slower eager
# loop) and libibverbs + its providers (NCCL's InfiniBand/RoCE transport; without them NCCL uses TCP).
ARG PYTHON_IMAGE=python:3.11.7-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential=12.9 \
 && rm -rf /var/lib/apt/lists/*
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
# The lock first: the dependency layer is rebuilt only when the lock changes.
COPY requirements.lock pyproject.toml README.md ./
COPY distsnn ./distsnn
RUN pip install -c requirements.lock .

FROM ${PYTHON_IMAGE}
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# tini: PID 1, reaps zombies, forwards signals to docker/entrypoint.sh. g++ brings gcc and libc6-dev
# (the Python headers are in the base image); ibverbs-providers brings libibverbs1 and the mlx5 provider.
RUN apt-get update \
 && apt-get install -y --no-install-recommends tini=0.19.0-1+b3 g++=4:12.2.0-3 ibverbs-providers=44.0-2 \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --gid 10001 distsnn \
 && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /tmp --shell /usr/sbin/nologin distsnn
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/tmp \
    TORCH_EXTENSIONS_DIR=/tmp/torch_extensions \
    TRITON_CACHE_DIR=/tmp/triton \
    TORCHINDUCTOR_CACHE_DIR=/tmp/torchinductor
WORKDIR /app
COPY launchers ./launchers
COPY configs ./configs
COPY --chmod=0755 docker/entrypoint.sh ./docker/entrypoint.sh
# Numeric user so that Kubernetes' runAsNonRoot can verify it (the pods set the same uid).
USER 10001:10001
EXPOSE 9400-9407 29500
ENTRYPOINT ["/usr/bin/tini", "--", "/app/docker/entrypoint.sh"]
CMD ["--num_gpus=1", "launchers/train.py", "--config", "configs/demo_ann.yaml"]
