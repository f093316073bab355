"""One plain process (a world of 1, gloo): a real ``Trainer`` with ``deepspeed.precision=bf16`` on the CPU; prints
as JSON the output dtypes of every convolution of the student during ``trainer.engine(...)``, once as the trainer
runs it and once the old way (autocast entered around the engine, none inside), then the return code of a
one-step ``fit()`` (its plan and metrics.jsonl are read by the test). Run by test_train_precision.py; not a test
module. Args: out_dir cache_dir."""
from __future__ import annotations

import json
import sys

import torch

from distsnn.config import load
from distsnn.train.compute_dtype import engine_conv_dtypes
from distsnn.train.main import _preflight
from distsnn.train.trainer import Trainer, init_distributed


def main(out_dir: str, cache: str) -> None:
    cfg = load("demo_sscl.yaml", [f"run.out_dir={out_dir}", f"data.cache_dir={cache}", "method.name=baseline",
                                  "deepspeed.precision=bf16", "telemetry.enabled=false", "data.batch_size=4",
                                  "data.train_fraction=0.05", "data.prefetch=1", "run.plots=false", "run.max_steps=1",
                                  "run.name=bf16", "run.log_every_steps=1"])
    device = torch.device("cpu")
    init_distributed(device, 1)
    trainer = Trainer(cfg, _preflight(cfg), device, 0, 1, 0)
    batch = next(iter(trainer.train_loader))
    inside = engine_conv_dtypes(trainer, batch, outer_autocast=False)
    trainer.engine.module.autocast_dtype = None  # the old set-up: autocast only around engine(...)
    around = engine_conv_dtypes(trainer, batch, outer_autocast=True)
    trainer.engine.module.autocast_dtype = torch.bfloat16
    try:
        rc = trainer.fit()
    finally:
        trainer.close()
    print(json.dumps({"plan_precision": trainer.plan()["precision"], "inside": inside, "around": around, "rc": rc}))


if __name__ == "__main__":
    main(*sys.argv[1:3])
