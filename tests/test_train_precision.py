"""Precision, device and NCCL set-up of a run: bf16 really reaches the student inside DeepSpeed's forward (a real
engine on the CPU, where autocast supports bf16) and the plan, metrics.jsonl and the convolutions agree; fp16 is
refused at config validation; ``run.device: cuda`` without a usable GPU exits 78 naming the cause; the expected
NCCL transport follows what the pod has."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))
from train_helpers import REPO, launch_env, metrics  # noqa: E402

from distsnn.config import ConfigError, load  # noqa: E402
from distsnn.train.compute_dtype import ConvDtypeProbe, check_compute_dtype  # noqa: E402
from distsnn.train.device import cuda_unavailable_reason, pick_device  # noqa: E402
from distsnn.train.nccl_transport import expected_transport, log_nccl_transport, rdma_devices  # noqa: E402


@pytest.mark.slow
def test_bf16_is_active_inside_the_engine_forward_and_plan_metrics_and_convolutions_agree(tmp_path):
    res = subprocess.run([sys.executable, str(REPO / "tests" / "bf16_engine_process.py"), str(tmp_path / "runs"),
                          str(tmp_path / "cache")], cwd=REPO, env=launch_env(), capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["plan_precision"] == "bf16"
    assert out["inside"] and set(out["inside"]) == {"bfloat16"}, out["inside"]  # every conv of the student
    # the old set-up, autocast only around engine(...): DeepSpeed's forward switches it off (the defect)
    assert set(out["around"]) == {"float32"}, out["around"]
    assert out["rc"] == 0
    [runtime] = [r for r in metrics(tmp_path / "runs" / "bf16") if r.get("kind") == "runtime"]
    assert runtime["precision"] == "bf16" and runtime["conv_output_dtype"] == "bfloat16"
    assert "precision=bf16" in res.stdout and "convolutions ran in torch.bfloat16" in res.stdout


def test_conv_dtype_probe_sees_autocast_and_a_mismatch_is_an_error():
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 1))
    x = torch.randn(2, 3, 8, 8)
    with ConvDtypeProbe(net) as p32:
        net(x)
    with ConvDtypeProbe(net) as p16, torch.autocast("cpu", dtype=torch.bfloat16):
        net(x)
    assert (p32.dtype, p16.dtype) == (torch.float32, torch.bfloat16)
    check_compute_dtype("bf16", torch.bfloat16)
    with pytest.raises(RuntimeError, match="precision resolved to bf16 .* produced torch.float32"):
        check_compute_dtype("bf16", torch.float32)
    with pytest.raises(ValueError, match="no nn.Conv2d"):
        ConvDtypeProbe(nn.Linear(2, 2))


def test_fp16_is_refused_at_config_validation_naming_the_key():
    with pytest.raises(ConfigError, match=r"deepspeed\.precision: 'fp16' is not supported.*use bf16"):
        load("demo_ann.yaml", ["deepspeed.precision=fp16"])
    assert load("demo_ann.yaml", ["deepspeed.precision=bf16"]).deepspeed.precision == "bf16"


@pytest.mark.parametrize("hide", ["", None])
def test_device_cuda_without_a_gpu_exits_78_naming_the_cause(tmp_path, hide):
    if torch.cuda.is_available() and hide is None:
        pytest.skip("a GPU is visible: only the hidden-CUDA case applies")
    env = {k: v for k, v in launch_env().items() if k != "CUDA_VISIBLE_DEVICES"}
    if hide is not None:
        env["CUDA_VISIBLE_DEVICES"] = hide  # CUDA hidden from torch
    res = subprocess.run([sys.executable, "launchers/train.py", "--config", "demo_ann.yaml", "--set", "run.device=cuda",
                          "--set", f"run.out_dir={tmp_path / 'runs'}", "--set", f"data.cache_dir={tmp_path / 'c'}"],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 78, res.stdout + res.stderr
    assert "run.device: cuda, but torch.cuda.is_available() is False" in res.stderr, res.stderr
    if hide is not None:
        assert "CUDA_VISIBLE_DEVICES=''" in res.stderr
    else:  # this machine has no NVIDIA driver at all: the wheel's CUDA version and the driver it needs are named
        assert f"needs CUDA {torch.version.cuda}" in res.stderr and "no NVIDIA driver" in res.stderr
    assert not (tmp_path / "runs").exists() and not (tmp_path / "c").exists()  # before data or any rank


def test_cuda_unavailable_reason_names_driver_and_wheel_versions():
    old = cuda_unavailable_reason("13.0", "12.4", "550.54.15", None)
    assert "driver 550.54.15 supports CUDA 12.4" in old and "built for CUDA 13.0" in old and "580.65.06" in old
    assert "no NVIDIA driver" in cuda_unavailable_reason("13.0", None, None, None)
    assert "CPU-only wheel" in cuda_unavailable_reason(None, None, None, None)
    assert "nvidia.com/gpu" in cuda_unavailable_reason("13.0", "13.0", "580.65.06", "0")


def test_auto_and_cpu_run_on_the_cpu_here():
    if torch.cuda.is_available():
        pytest.skip("a GPU is visible")
    assert pick_device("auto", 0) == pick_device("cpu", 1) == torch.device("cpu")


def test_expected_nccl_transport(tmp_path):
    assert rdma_devices(str(tmp_path)) == []
    (tmp_path / "class" / "infiniband" / "mlx5_0").mkdir(parents=True)
    (tmp_path / "class" / "infiniband" / "mlx5_1").mkdir()
    devs = rdma_devices(str(tmp_path))
    assert devs == ["mlx5_0", "mlx5_1"]
    assert expected_transport({}, [], True, True)[0] == "Socket"
    name, why = expected_transport({"NCCL_IB_HCA": "mlx5"}, devs, True, True)
    assert name == "IB" and "mlx5_0,mlx5_1" in why and "NCCL_IB_HCA=mlx5" in why and "memlock" not in why
    assert "memlock" in expected_transport({}, devs, True, False)[1]
    assert expected_transport({}, devs, False, True) == ("Socket", expected_transport({}, devs, False, True)[1])
    assert expected_transport({"NCCL_IB_DISABLE": "1"}, devs, True, True)[0] == "Socket"
    assert expected_transport({"NCCL_NET": "AWS Libfabric"}, devs, True, True)[0] == "AWS Libfabric"


def test_the_start_line_names_the_expected_transport_and_where_nccls_own_choice_is(capsys, monkeypatch):
    monkeypatch.setenv("NCCL_SOCKET_IFNAME", "eth0")
    monkeypatch.setenv("NCCL_IB_DISABLE", "1")
    line = log_nccl_transport(3)
    assert line in capsys.readouterr().out
    assert "rank 3: NCCL " in line and "expected Socket (NCCL_IB_DISABLE=1)" in line
    assert "interface eth0" in line and "'NCCL INFO NET/' lines" in line
