"""``launchers/export.py`` on a run directory of the demo recipe (config.yaml written by the trainer's RunDir,
model.safetensors by save_weights): both formats written, read back, and as close as the printed figures say."""
from __future__ import annotations

import re
import subprocess
import sys

import nir
import numpy as np
import pytest
import torch

from distsnn.config import load
from distsnn.export import load_run
from distsnn.export.cli import main
from distsnn.export.onnx_export import run_onnx
from distsnn.models import build_student, save_weights
from distsnn.train.run_dir import RunDir
from train_helpers import REPO, launch_env


def _make_run(out_dir, recipe: str = "demo_sscl.yaml"):
    """The recipe's run directory as training leaves it, with untrained weights and BN statistics of 2 batches."""
    cfg = load(recipe, [f"run.out_dir={out_dir}"])
    run = RunDir(cfg, write=True)
    torch.manual_seed(0)
    model = build_student(cfg.model, ann=cfg.method.name == "ann").train()
    with torch.no_grad():
        for _ in range(2):
            model(torch.randn(8, 3, cfg.data.image_size, cfg.data.image_size))
    save_weights(model, run.path / "model.safetensors")
    return run.path, cfg


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setenv("DISTSNN_LIF_COMPILE", "0")  # the fused LIF's eager kernel: no compile for two BN-statistics batches
    try:
        yield _make_run(tmp_path_factory.mktemp("runs"))
    finally:
        mp.undo()


def _export(*args) -> str:
    proc = subprocess.run([sys.executable, str(REPO / "launchers" / "export.py"), *map(str, args)], cwd=REPO,
                          env=launch_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def test_demo_run_exports_to_nir_and_onnx(demo_run, tmp_path, capsys):
    run_dir, cfg = demo_run
    T, K, size = cfg.model.timesteps, cfg.model.num_classes, cfg.data.image_size

    out = _export(run_dir, "--format", "nir")
    assert f"wrote {run_dir / 'model.nir'}" in out, out
    part = (r"spikes identical in (\d+)/(\d+) spiking layers \((\d+) of (\d+) spike values differ\), "
            r"max \|logit_NIR - logit_model\| = ([0-9.e+-]+)")
    exact = re.search("float64 graph: " + part, out)
    m = re.search("float32 file: " + part, out)
    assert exact and m, out
    assert exact[1] == exact[2] and exact[3] == "0" and float(exact[5]) < 1e-9, out
    graph = nir.read(run_dir / "model.nir")
    n_lif = sum(isinstance(n, nir.LIF) for n in graph.nodes.values())
    assert int(m[1]) == int(m[2]) == n_lif == 19  # ResNet-20: 3 stem neurons + 8 blocks x 2; the float32 file too
    assert int(m[4]) > 0 and float(m[5]) < 1e-4
    assert graph.metadata["timesteps"] == T and graph.metadata["model"] == cfg.model.name
    assert graph.nodes["input"].input_type["input"].tolist() == [3, size, size]

    onnx_path = tmp_path / "elsewhere" / "net.onnx"
    assert main(["--format", "onnx", "--out", str(onnx_path), str(run_dir)]) == 0  # in-process: one import less
    out = capsys.readouterr().out
    assert f"wrote {onnx_path} (ONNX opset 18" in out and f"output logits [{T}, batch, {K}]" in out, out
    figure = re.search(r"max \|logit_ONNX - logit_model\| = (\S+) \(per t = 1\.\.(\d+)", out)
    assert figure and float(figure[1]) <= 1e-4 and int(figure[2]) == T, out
    # independently of the printed figure: the file against the run's weights, on other images, another batch size
    model = load_run(run_dir).model
    x = torch.rand(3, 3, size, size) * 4 - 2
    with torch.no_grad():
        ours = model(x).numpy()
    np.testing.assert_allclose(run_onnx(onnx_path, x.numpy()), ours, rtol=0, atol=1e-4)


def test_unexportable_runs_are_refused_by_name(demo_run, tmp_path, capsys, monkeypatch):
    run_dir, _ = demo_run

    def refused(*argv) -> str:
        assert main([*map(str, argv)]) == 78
        return capsys.readouterr().err

    assert "no such directory" in refused(tmp_path / "nope", "--format", "nir")

    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    (unfinished / "config.yaml").write_text((run_dir / "config.yaml").read_text())
    assert "no model.safetensors" in refused(unfinished, "--format", "onnx")

    (unfinished / "config.yaml").unlink()
    assert "no config.yaml" in refused(unfinished, "--format", "nir")

    other = tmp_path / "other"  # the demo's config, but weights of another width
    other.mkdir()
    (other / "config.yaml").write_text((run_dir / "config.yaml").read_text())
    cfg = load("demo_sscl.yaml", ["model.width_multiplier=0.125"])
    save_weights(build_student(cfg.model), other / "model.safetensors")
    assert re.search(r"model\.safetensors: .*shape mismatch", refused(other, "--format", "nir"))

    monkeypatch.setenv("DISTSNN_LIF_COMPILE", "0")
    ann_dir, _ = _make_run(tmp_path / "ann_runs", "demo_ann.yaml")
    err = refused(ann_dir, "--format", "nir")
    assert "an ANN has no spiking neurons" in err and not (ann_dir / "model.nir").exists()
    # ... while ONNX takes the ANN teacher: logits [batch, K], no time axis
    assert main([str(ann_dir), "--format", "onnx"]) == 0
    out = capsys.readouterr().out
    figure = re.search(r"max \|logit_ONNX - logit_model\| = (\S+)$", out.strip())
    assert "output logits [batch, 10]" in out and figure and float(figure[1]) <= 1e-4, out
