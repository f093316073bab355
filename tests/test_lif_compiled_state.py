"""Whether the fused LIF ran compiled is visible: ``compiled_state()`` after real fwd+bwd calls in fresh processes
(with a working C++ compiler: True; with none, as in an image without one: False after the eager fallback), and
the ``distsnn_lif_compiled`` gauge over real HTTP (1 / 0 / absent)."""
from __future__ import annotations

import os
import subprocess
import sys
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from distsnn.config.schema import TelemetryConfig
from distsnn.telemetry import Telemetry

SCRIPT = """
import torch
from distsnn.spiking import lif_fused
from distsnn.spiking.lif_fused import compiled_state
assert compiled_state() is None
x = torch.randn(4, 2, 8, requires_grad=True)
lif_fused(x, 0.25, 0.5, "rect", 1.0).sum().backward()
print("STATE", compiled_state())
"""


def _state(tmp_path, **env) -> tuple[str, str]:
    res = subprocess.run([sys.executable, "-c", SCRIPT], env={**os.environ, "OMP_NUM_THREADS": "1", **env},
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    return res.stdout.split("STATE ")[-1].strip(), res.stderr


@pytest.mark.parametrize("compiler", ["working", "missing"])
def test_compiled_state_reports_the_fallback(tmp_path, compiler):
    if compiler == "working":
        state, _ = _state(tmp_path)
        assert state == "True"
    else:  # no C++ compiler and an empty kernel cache: the image's first step before this fix
        state, err = _state(tmp_path, CXX="/bin/false", TORCHINDUCTOR_CACHE_DIR=str(tmp_path / "inductor"))
        assert state == "False"
        assert "LIF: torch.compile of lif_forward failed" in err


def test_lif_compiled_gauge():
    t = Telemetry(TelemetryConfig(base_port=0), run="r", method="sscl", rank=0, local_rank=0, world_size=1)
    try:
        def value():
            text = urllib.request.urlopen(t.url, timeout=5).read().decode()
            vals = [s.value for f in text_string_to_metric_families(text) for s in f.samples
                    if s.name == "distsnn_lif_compiled"]
            return vals[0] if vals else None
        t.update_lif_compiled(None)
        assert value() is None  # no fused LIF ran (ANN, reference implementation): nothing to alert on
        t.update_lif_compiled(False)
        assert value() == 0.0
        t.update_lif_compiled(True)
        assert value() == 1.0
    finally:
        t.close()
