"""The image recipe: hadolint-clean, pinned base, installs from the lock, non-root, no build-essential or pip
in the final stage but the compiler Triton/Inductor need and libibverbs for NCCL, entrypoint = tini +
docker/entrypoint.sh; and the entrypoint itself, run for real around the `deepspeed` launcher: a SIGTERM
reaches every rank at once and the ranks' exit code (75, "retry me") comes out."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
DOCKERFILE = REPO / "Dockerfile"
VENV_BIN = Path(sys.executable).parent


def _stages() -> list[list[str]]:
    """Instructions per stage (continuation lines joined)."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    stages: list[list[str]] = [[]]
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.upper().startswith("FROM ") and stages[-1] and any(x.upper().startswith("FROM ") for x in stages[-1]):
            stages.append([])
        stages[-1].append(line)
    return stages


def test_hadolint_passes():
    res = subprocess.run([str(VENV_BIN / "hadolint"), str(DOCKERFILE)], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr


def test_base_image_is_pinned():
    arg = re.search(r"^ARG PYTHON_IMAGE=(\S+)$", DOCKERFILE.read_text(), re.M).group(1)
    assert re.fullmatch(r"python:\d+\.\d+\.\d+-slim-\w+(@sha256:[0-9a-f]{64})?", arg), arg
    froms = [line for st in _stages() for line in st if line.upper().startswith("FROM ")]
    assert len(froms) == 2 and all("${PYTHON_IMAGE}" in f for f in froms)


def test_installs_from_the_lock_file():
    build, final = _stages()
    installs = [line for line in build if "pip install" in line]
    assert installs and all("-c requirements.lock" in line for line in installs)
    assert any(line.startswith("COPY") and "requirements.lock" in line for line in build)
    # the lock really pins what pyproject asks for
    lock = {l.split("==")[0].lower().replace("_", "-") for l in (REPO / "requirements.lock").read_text().splitlines()
            if "==" in l}
    for dep in ("torch", "deepspeed", "nvidia-dali-cuda130", "prometheus-client"):
        assert dep in lock, dep


def test_final_stage_runs_as_non_root_without_build_tools():
    build, final = _stages()
    users = [line.split()[1] for line in final if line.startswith("USER ")]
    assert users, "final stage sets no USER"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) != 0  # numeric, so runAsNonRoot can verify it
    final_text = " ".join(final)
    for tool in ("build-essential", "make ", "pip install"):
        assert tool not in final_text, f"final stage installs {tool!r}"
    assert any("build-essential" in line for line in build)
    assert any(line.startswith("COPY --from=build /opt/venv") for line in final)
    # the Kubernetes pods run as the image's user
    job = yaml.safe_load((REPO / "k8s" / "base" / "job.yaml").read_text())
    assert str(job["spec"]["template"]["spec"]["securityContext"]["runAsUser"]) == uid


def test_final_stage_can_compile_the_fused_lif_and_load_verbs():
    # Triton builds a C launcher per kernel (gcc + Python.h, the base image has the headers) and Inductor's CPU
    # code is C++: without a compiler the fused LIF silently runs the eager loop. NCCL's IB transport dlopens
    # libibverbs (and needs a provider such as mlx5) or falls back to TCP.
    final_text = " ".join(_stages()[1])
    installs = re.findall(r"apt-get install [^&]*", final_text)
    pkgs = {p.split("=")[0]: p for line in installs for p in line.split() if "=" in p and not p.startswith("-")}
    assert {"g++", "ibverbs-providers", "tini"} <= set(pkgs), pkgs
    assert all(re.fullmatch(r"[\w.+-]+=[\w.:+~-]+", p) for p in pkgs.values()), pkgs  # pinned (hadolint DL3008)
    assert "TRITON_CACHE_DIR=/tmp/triton" in final_text  # the root filesystem is read-only in the pods


def test_entrypoint_is_tini_then_the_launcher():
    final = _stages()[1]
    entry = [line for line in final if line.startswith("ENTRYPOINT")][-1]
    assert entry == 'ENTRYPOINT ["/usr/bin/tini", "--", "/app/docker/entrypoint.sh"]'
    assert any("docker/entrypoint.sh" in line and "--chmod=0755" in line for line in final)
    assert os.access(REPO / "docker" / "entrypoint.sh", os.X_OK)
    assert re.search(r'^deepspeed "\$@" &$', (REPO / "docker" / "entrypoint.sh").read_text(), re.M)


def test_dockerignore_keeps_the_context_small():
    lines = (REPO / ".dockerignore").read_text().split()
    assert lines[lines.index("*")] == "*"  # deny everything, then allow what the image needs
    copied = {"requirements.lock", "pyproject.toml", "README.md", "distsnn/", "launchers/", "configs/", "docker/"}
    assert copied <= {l[1:] for l in lines if l.startswith("!")}
    assert not {"!.venv/", "!tests/", "!runs/", "!.git/"} & set(lines)


@pytest.mark.slow
def test_entrypoint_forwards_sigterm_to_every_rank_and_passes_exit_code_75(tmp_path):
    env = {**os.environ, "PATH": f"{VENV_BIN}:{os.environ['PATH']}", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([str(REPO / "docker" / "entrypoint.sh"), "--num_gpus", "2",
                             str(REPO / "tests" / "sigterm_rank_process.py"), str(tmp_path)],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 120
    while not all((tmp_path / f"ready.{r}").exists() for r in (0, 1)):
        assert proc.poll() is None, proc.stdout.read()
        assert time.monotonic() < deadline, "ranks did not start"
        time.sleep(0.2)
    rank_pids = [int((tmp_path / f"ready.{r}").read_text()) for r in (0, 1)]
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 75, out
    assert "forwarding TERM to ranks" in out
    # both ranks got the signal, finished their 2 s "checkpoint", and none is left behind
    signalled = [float((tmp_path / f"signalled.{r}").read_text()) for r in (0, 1)]
    stopped = [float((tmp_path / f"stopped.{r}").read_text()) for r in (0, 1)]
    # at once: each rank was signalled before the other finished its checkpoint (the launcher's
    # own path signals the next rank only after the previous one exited)
    assert signalled[0] < stopped[1] and signalled[1] < stopped[0]
    for pid in rank_pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
