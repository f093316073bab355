"""Per-layer whole-map linear CKA between a run's student and its ANN teacher on a fixed set of images.

The same measure SSCL weights its NCE terms with (Eq.8 in Kornblith's form, unbiased HSIC of Eq.9 on the whole maps,
``representation_rows``), but taken after the fact and for every method, so that the baseline's similarity to the
teacher can be compared with SSCL's (the paper only shows SSCL's side). The HSIC terms are averaged over the val
split's mini-batches (Nguyen et al. 2020: the mean of unbiased per-batch HSIC estimates the population HSIC) and CKA
is formed from the means.

Two students per run, both in eval mode (running BatchNorm statistics, as the network is evaluated):
- ``end``: the run's exported ``model.safetensors``;
- ``start``: the student built with the run's seed before any step. The trainer seeds with
  ``torch.manual_seed(run.seed)`` immediately before ``build_student(cfg.model)`` (distsnn/train/trainer.py), so the
  same two calls here give its exact initial weights; its BatchNorm running statistics are still the initial 0 / 1.

``python -m distsnn.analysis.layer_cka RUN_DIR [--teacher FILE]`` writes ``RUN_DIR/layer_cka.json``.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from distsnn.config.schema import Config
from distsnn.losses.pooling import representation_rows
from distsnn.losses.similarity import cka_from_hsic_terms, hsic_terms
from distsnn.train.run_dir import read_config

DEFAULT_LAYERS = ["stage1", "stage2", "stage3", "pooled"]


def initial_student(cfg: Config) -> torch.nn.Module:
    """The student exactly as the trainer initialises it: seed, then build (trainer.py, ``Trainer.__init__``)."""
    from distsnn.models import build_student

    torch.manual_seed(cfg.run.seed)
    return build_student(cfg.model, ann=cfg.method.name == "ann")


@torch.no_grad()
def hsic_terms_over_batches(student: torch.nn.Module, teacher: torch.nn.Module, batches, layers: list[str]
                            ) -> tuple[dict[str, torch.Tensor], int, int]:
    """Mean over ``batches`` (an iterable of ``[B, C, H, W]`` images) of the per-layer :func:`hsic_terms` of the
    student's whole map ``[T, B, ...]`` and the teacher's ``[B, ...]``. Batches of fewer than 4 images (the
    unbiased estimator's minimum) are skipped. Returns (layer -> float64 ``[5]``, images used, batches used)."""
    was = student.training, teacher.training
    student.eval()
    teacher.eval()
    sums = {layer: torch.zeros(5, dtype=torch.float64) for layer in layers}
    images = count = 0
    try:
        for x in batches:
            if x.shape[0] < 4:
                continue
            s = student(x, return_features=True).features
            a = teacher(x, return_features=True).features
            for layer in layers:
                sums[layer] += hsic_terms(representation_rows(s[layer], time_major=True),
                                          representation_rows(a[layer], time_major=False)).cpu()
            images += x.shape[0]
            count += 1
    finally:
        student.train(was[0])
        teacher.train(was[1])
    if count == 0:
        raise ValueError("layer CKA: no batch of at least 4 images")
    return {layer: t / count for layer, t in sums.items()}, images, count


def layer_cka(student: torch.nn.Module, teacher: torch.nn.Module, batches, layers: list[str]) -> dict[str, float]:
    """layer -> linear CKA (Eq.8 from the batch-mean unbiased HSIC terms) of student and teacher."""
    terms, _, _ = hsic_terms_over_batches(student, teacher, batches, layers)
    return {layer: cka_from_hsic_terms(t).item() for layer, t in terms.items()}


def val_images(cfg: Config):
    """The digits (or shards) val split through the project's loader, one process, in its fixed order:
    an iterable of ``[B, 3, H, W]`` normalised images (``data.batch_size`` per batch, the last one partial)."""
    from distsnn.data import build_val_loader, prepare_dataset

    info = prepare_dataset(cfg.data)
    loader = build_val_loader(cfg.data, info, 0, 1, torch.device("cpu"))
    return [b.views[0] for b in loader]


def analyse_run(run_dir: str | Path, teacher_weights: str | None = None, layers: list[str] | None = None) -> dict:
    """CKA at the start and end of a finished run; ``teacher_weights`` defaults to the run's ``teacher.weights``,
    ``layers`` to its ``method.sscl.layers`` (the layers SSCL pairs). Returns what :func:`write` stores."""
    from distsnn.models import load_weights
    from distsnn.models.teacher import build_teacher

    run_dir = Path(run_dir)
    cfg = read_config(run_dir)
    if cfg.method.name == "ann":
        raise ValueError(f"{run_dir}: an ANN run has no spiking student to compare with a teacher")
    weights = teacher_weights or cfg.teacher.weights
    if not weights:
        raise ValueError(f"{run_dir}: teacher.weights is empty in config.yaml; pass the teacher's weights file")
    cfg.teacher.weights = str(weights)
    layers = list(layers or cfg.method.sscl.layers or DEFAULT_LAYERS)
    teacher = build_teacher(cfg.teacher, cfg.model)
    start = initial_student(cfg)
    end = initial_student(cfg)
    load_weights(end, run_dir / "model.safetensors", what="model.safetensors")
    images = val_images(cfg)
    out = {"layers": layers, "teacher": str(weights), "seed": cfg.run.seed, "bn": "eval"}
    for name, student in (("start", start), ("end", end)):
        terms, n, k = hsic_terms_over_batches(student, teacher, images, layers)
        out[name] = {layer: cka_from_hsic_terms(t).item() for layer, t in terms.items()}
        out["num_images"], out["num_batches"] = n, k
    return out


def write(run_dir: str | Path, teacher_weights: str | None = None, layers: list[str] | None = None) -> Path:
    """:func:`analyse_run`, written atomically to ``<run_dir>/layer_cka.json``."""
    result = analyse_run(run_dir, teacher_weights, layers)
    path = Path(run_dir) / "layer_cka.json"
    tmp = path.with_name(".layer_cka.json.tmp")
    tmp.write_text(json.dumps(result, indent=1))
    tmp.replace(path)
    return path


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run_dir")
    p.add_argument("--teacher", default=None, help="teacher weights (default: the run's teacher.weights)")
    p.add_argument("--layers", nargs="+", default=None)
    args = p.parse_args(argv)
    path = write(args.run_dir, args.teacher, args.layers)
    print(path.read_text())


if __name__ == "__main__":
    main()
