"""Worlds of 1, 2 and 3 gloo ranks (``torch.multiprocessing.spawn``) for ``test_train_resize.py``: reference runs,
then runs resumed from their step-2 checkpoint on another world size. Each case writes what it observed to
``<tmp>/<case>.rank<r>.json``. Not a test module (no ``test_`` prefix)."""
from __future__ import annotations

import datetime
import json
import os
import shutil
import traceback
from pathlib import Path

import torch
import torch.distributed as dist

from train_helpers import tiny_overrides
from train_world import build, digest, fit, params, write

# 60 train images; 2 x 4, 1 x 4 x accumulation 2 and 3 x 2 (from 2 x 3) all give 7 steps an epoch, so the
# learning-rate schedule (warm-up + cosine over run.max_steps) is the same in every world.
BASE = ["method.name=baseline", "data.train_fraction=0.04", "run.epochs=1", "run.max_steps=5",
        "checkpoint.every_steps=2", "optim.warmup_epochs=0.3", "optim.weight_decay=0"]
RESUME_TAG = "step_00000002"


def record_micro_losses(tr) -> list:
    """[(step, total loss)] of every forward of this rank (one per micro-batch)."""
    seen, forward = [], tr.objective.forward

    def wrapped(*args, **kwargs):
        out = forward(*args, **kwargs)
        seen.append((tr.step, out.total.item()))
        return out

    tr.objective.forward = wrapped
    return seen


def case_run(tmp, out, rank, world, name, extra, resume_from=None):
    """``name`` trained to run.max_steps; with ``resume_from``, from a copy of that run's step-2 checkpoint."""
    runs = Path(out)
    if resume_from is not None:
        if rank == 0:
            dst = runs / name / "checkpoints" / RESUME_TAG
            shutil.rmtree(runs / name, ignore_errors=True)
            shutil.copytree(runs / resume_from / "checkpoints" / RESUME_TAG, dst)
        dist.barrier()
    tr = build(tiny_overrides_for(tmp) + BASE + extra + [f"run.name={name}"], rank, world)
    losses = record_micro_losses(tr)
    after_resume = {}
    resume = tr.resume

    def resume_and_look():
        ok = resume()
        after_resume.update(
            weights=digest(params(tr)),
            buffers={k: v.tolist() for k, v in tr.objective.state_dict().items() if not k.endswith("weight")
                     and not k.endswith("bias")},
            batch=tr.cfg.data.batch_size, accum=tr.cfg.deepspeed.grad_accum,
            note=tr.resize_note, data_note=tr.train_loader.resize_note)
        return ok

    tr.resume = resume_and_look
    rc = fit(tr)
    rec = {"rc": rc, "steps": tr.step, "micro_losses": losses, "weights": digest(params(tr)),
           "param_tensors": [p.tolist() for p in params(tr)][:4], "after_resume": after_resume,
           "global_batch": tr.global_batch}
    if rank == 0:
        lines = (tr.run.path / "metrics.jsonl").read_text().splitlines()
        rec["lr"] = {r["step"]: r["lr"] for r in map(json.loads, lines) if r.get("kind") == "step"}
        rec["log_steps"] = sorted(rec["lr"])
    write(tmp, name, rank, rec)


def tiny_overrides_for(tmp):
    spec = json.loads(Path(tmp, "spec.json").read_text())
    return tiny_overrides(f"{tmp}/runs", spec["cache"], spec["teacher"])


def worker(rank: int, world: int, tmp: str, port: int, cases: list) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank), OMP_NUM_THREADS="1")
    torch.set_num_threads(1)
    dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=300))
    try:
        for name, extra, resume_from in cases:
            try:
                case_run(tmp, f"{tmp}/runs", rank, world, name, extra, resume_from)
            except Exception:
                write(tmp, f"error_{name}", rank, {"traceback": traceback.format_exc()})
                raise
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
