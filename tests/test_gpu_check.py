"""benchmarks/gpu_check.py cannot rot: its CPU mode runs end to end here (every check, tiny sizes, a real
``deepspeed`` launch on gloo), and its FLOP count agrees with the textbook count of a convolution."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from train_helpers import REPO, launch_env  # noqa: E402

sys.path.insert(0, str(REPO / "benchmarks"))
import gpu_check  # noqa: E402

# every row the CPU mode gives (the GPU run adds lif_sj_triton and lif_sj_cuda)
EXPECTED = {"env", "flops", "lif_agreement", "lif_time_distsnn_fast", "lif_time_distsnn_reference",
            "lif_time_spikingjelly_2_0_lifnode", "dali_decode", "dali_resume", "bf16_engine", "bf16_fit",
            "lif_compiled", "deepspeed_run", "sscl_r34_step_1", "sscl_r34_step_2", "share_of_bound", "fp32_vs_bf16",
            "lif_sj_torch", "channels_last_contiguous", "channels_last_channels_last"}


@pytest.mark.parametrize("cin,cout,k,image,stride", [(3, 8, 3, 16, 1), (3, 5, 1, 12, 1), (3, 4, 3, 16, 2)])
def test_flop_count_of_one_convolution_is_2_cin_cout_k2_hw(cin, cout, k, image, stride):
    with torch.device("meta"):
        conv = torch.nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2, bias=False)
    h = w = (image + 2 * (k // 2) - k) // stride + 1  # output size
    # a multiply-add per weight per output position: 2 FLOPs
    assert gpu_check.flops_per_image(conv, image) == 2 * cin * cout * k * k * h * w
    # backward: the weight gradient (input needs none) costs another forward's worth
    assert gpu_check.flops_per_image(conv, image, backward=True) == 2 * 2 * cin * cout * k * k * h * w


@pytest.mark.slow
def test_cpu_mode_runs_every_check_and_writes_json_and_markdown(tmp_path):
    js, md = tmp_path / "out" / "check.json", tmp_path / "out" / "check.md"
    env = {**launch_env(), "OMP_NUM_THREADS": "1"}
    p = subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu_check.py"), "--cpu-smoke",
                        "--cache", str(tmp_path / "cache"), "--out", str(tmp_path / "report"),
                        "--json", str(js), "--markdown", str(md)],
                       cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    doc = json.loads(js.read_text())
    rows = {r["id"]: r for r in doc["checks"]}
    assert EXPECTED <= set(rows), (sorted(EXPECTED - set(rows)), p.stdout[-3000:], p.stderr[-3000:])
    failed = {i: rows[i]["detail"] for i in rows if rows[i]["verdict"] == "FAIL"}
    assert not failed, failed
    assert p.returncode == 0, p.stderr[-3000:]
    assert all(r["verdict"] in ("ok", "info") for r in rows.values())
    assert doc["mode"] == "cpu-smoke" and doc["failed"] == []
    # what the checks measured, not only that they ran
    assert rows["deepspeed_run"]["data"]["backend"] == "gloo" and rows["deepspeed_run"]["data"]["rc"] == 0
    assert 90e9 < rows["flops"]["data"]["total"] < 96e9  # docs/PERFORMANCE.md: 92.9 GFLOP for SSCL-R34
    assert rows["sscl_r34_step_1"]["data"]["images_per_s"] > 0
    assert len(rows["fp32_vs_bf16"]["data"]["fp32"]) == len(rows["fp32_vs_bf16"]["data"]["bf16"]) >= 2
    table = md.read_text()
    assert table.count("\n| ") >= len(EXPECTED) + 1  # header + a line per check
    for rid in EXPECTED:
        assert f"| {rid} |" in table
    assert os.path.exists(tmp_path / "report" / "deepspeed_run.log")
