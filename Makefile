# The two commands of the README. Both are idempotent and install what they need.
#   make demo   - venv + install from the lock, then the main job on the embedded digits data
#   make test   - venv + install from the lock (+ Debian's prometheus for the metrics tests), then pytest
PYTHON ?= python3.11
VENV   ?= .venv
PY     := $(VENV)/bin/python
export TORCH_EXTENSIONS_DIR ?= $(CURDIR)/.torch_extensions
export OMP_NUM_THREADS ?= 1

.PHONY: demo test install system-deps

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml requirements.lock
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c requirements.lock -e ".[test]"
	touch $@

# Tools the tests drive for real, from Debian, installed only when missing: prometheus + promtool (metrics and
# rules), tini (the container init), kubectl (renders the kustomize manifests; the machine image ships a newer one).
SYSTEM_TOOLS := promtool:prometheus prometheus:prometheus tini:tini kubectl:kubernetes-client
system-deps:
	@missing=""; for pair in $(SYSTEM_TOOLS); do cmd=$${pair%%:*}; pkg=$${pair##*:}; \
	  command -v $$cmd >/dev/null 2>&1 || missing="$$missing $$pkg"; done; \
	if [ -n "$$missing" ]; then echo "installing:$$missing"; apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; fi

demo: install
	$(PY) launchers/demo.py

test: install system-deps
	$(PY) -m pytest -q tests
