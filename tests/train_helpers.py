"""Shared set-up of the trainer tests: the tiny run's overrides, a random teacher, the launch environment."""
from __future__ import annotations

import json
import os
from pathlib import Path

from distsnn.launch import free_port  # noqa: F401  (the trainer tests import it from here)

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = REPO / ".venv" / "bin"
CONFIG = "demo_sscl.yaml"


TINY_WIDTH = 0.125   # the trainer tests' student and teacher: half the demo's width, a quarter of its convolutions


def tiny_overrides(out_dir, cache_dir, teacher, width: float | None = TINY_WIDTH) -> list[str]:
    """demo_sscl.yaml made tiny: no telemetry, no plots, full-precision losses every step in metrics.jsonl,
    evaluation and checkpoints only at the end unless a test asks, a random (untrained) teacher of ``width``
    (None: the demo's own width)."""
    return [f"run.out_dir={out_dir}", "run.log_every_steps=1", "run.eval_every_epochs=1000", "run.plots=false",
            *([f"model.width_multiplier={width}"] if width is not None else []),
            f"data.cache_dir={cache_dir}", "data.prefetch=1", "telemetry.enabled=false",
            "checkpoint.every_epochs=1000", "checkpoint.keep_last=5",
            f"teacher.weights={teacher}", "teacher.check_accuracy=false",
            "method.tcl.proj_hidden=32", "method.tcl.proj_dim=16"]


def make_teacher(path: Path, width: float = TINY_WIDTH) -> Path:
    """A freshly built ann_resnet20 (10 classes), the demo teacher's architecture at ``width``, untrained."""
    import timm
    import torch

    import distsnn.models  # noqa: F401  (registers ann_resnet20 with timm)
    from distsnn.models import save_weights

    torch.manual_seed(0)
    save_weights(timm.create_model("ann_resnet20", num_classes=10, width_multiplier=width), path)
    return path


def demo_width() -> float:
    """The width of the demo recipe's student (and so of its teacher)."""
    from distsnn.config import load
    return load(CONFIG).model.width_multiplier


def launch_env() -> dict:
    """The venv's `deepspeed` first on PATH, 1 thread per rank, the shm-comm op build cached (as the Makefile does)."""
    return {**os.environ, "PATH": f"{VENV_BIN}:{os.environ['PATH']}", "OMP_NUM_THREADS": "1",
            "TORCH_EXTENSIONS_DIR": os.environ.get("TORCH_EXTENSIONS_DIR", str(REPO / ".torch_extensions")),
            "PYTHONUNBUFFERED": "1"}


def metrics(run_path: Path) -> list[dict]:
    path = Path(run_path) / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def step_losses(run_path: Path) -> dict[int, float]:
    """step -> total loss; a step logged twice (redone after a resume) keeps its last value."""
    return {step: loss["total"] for step, loss in step_components(run_path).items()}


def step_components(run_path: Path) -> dict[int, dict[str, float]]:
    """step -> every logged loss component (``total``, ``ce``, ...); a step logged twice keeps its last values."""
    return {r["step"]: r["loss"] for r in metrics(run_path) if r.get("kind") == "step"}
