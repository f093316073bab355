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

# promtool/prometheus (metrics tests) come from Debian; installed only when missing.
system-deps:
	@command -v promtool >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus >/dev/null; }

demo: install
	$(PY) launchers/demo.py

test: install system-deps
	$(PY) -m pytest -q tests
