#!/usr/bin/env python
"""Parity: does the distributed trainer lose anything? distsnn's trainer (2 ranks through the real ``deepspeed``
launcher, DALI reading the shards) against a plain single-process PyTorch loop written out below (a torch
``DataLoader`` over the same digits shards, torchvision augmentation, plain SGD, the same network, schedule and
global batch). Final top-1 at t = T, several seeds each; the two must agree within the seed spread. A third
column evaluates the trainer's final weights with the plain loop's val pipeline, which separates a difference in
training from one in evaluation (DALI's resize vs torchvision's).

    python benchmarks/parity.py                       # 3 seeds x (trainer, plain loop), 30 epochs, then the table
    python benchmarks/parity.py --seeds 0 --epochs 1  # smoke run

Differences that remain by design: the trainer's BatchNorm sees each rank's 32 images, the plain loop's all 64
(the statistics of a 2-rank run without SyncBatchNorm); the plain loop runs the LIF as the reference loop over T,
the trainer as the fused kernel (equal by test, so this covers the kernel too); DALI's and torchvision's random
crops draw from the same distribution but not the same numbers. Every number in the table is read from the runs' result files.
"""
from __future__ import annotations

import argparse
import dataclasses
import io
import json
import math
import os
import statistics
import subprocess
import sys
import tarfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from harness import deepspeed_command, free_port  # noqa: E402

RANKS, PER_RANK_BATCH = 2, 32
# The recipe both sides run: the demo's network (spiking ResNet-20 at 1/4 width, T = 4, SSCL's LIF) and the mean CE
# baseline on the digits at 16 px; a random-resized crop (area 0.5-1) that both DALI and torchvision implement.
RECIPE = """\
run: {{name: parity, epochs: {epochs}, eval_every_epochs: {epochs}, log_every_steps: 10, plots: false}}
model:
  name: spiking_resnet20
  num_classes: 10
  timesteps: 4
  width_multiplier: 0.25
  neuron: {{decay: 0.25, threshold: 0.5, surrogate: rect, surrogate_width: 1.0}}
data:
  source: digits
  image_size: 16
  val_resize: 16
  batch_size: {batch}
  num_threads: 1
  shuffle_buffer: 512
  augment: {{min_scale: 0.5, hflip: false, mean: [0.5, 0.5, 0.5], std: [0.5, 0.5, 0.5]}}
method: {{name: baseline}}
optim: {{lr: 0.1, momentum: 0.9, weight_decay: 5.0e-4, warmup_epochs: 0.5}}
deepspeed: {{zero_stage: 0, precision: fp32}}
checkpoint: {{every_epochs: {epochs}, keep_last: 1}}
telemetry: {{enabled: false}}
"""


# --- the project's trainer -------------------------------------------------------------------------------------------
def run_trainer(recipe: Path, out: Path, seed: int) -> dict:
    """2 ranks through ``deepspeed launchers/train.py``; the last evaluation of ``eval.json``."""
    name = f"trainer_s{seed}"
    result = out / name / "eval.json"
    if not result.exists():
        cmd = [*deepspeed_command(), "--master_port", str(free_port()), "--num_gpus", str(RANKS), "launchers/train.py",
               "--config", str(recipe), "--set", f"run.out_dir={out}", "--set", f"run.name={name}",
               "--set", f"run.seed={seed}", "--set", "run.device=cpu"]
        env = dict(os.environ, OMP_NUM_THREADS="1")
        env.setdefault("TORCH_EXTENSIONS_DIR", str(ROOT / ".torch_extensions"))
        t0 = time.time()
        with open(out / f"{name}.log", "w") as log:
            rc = subprocess.call(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        if rc != 0:
            sys.exit(f"[parity] {name} failed with exit code {rc}; see {out / (name + '.log')}")
        print(f"[parity] {name}: {time.time() - t0:.0f} s", flush=True)
    last = json.loads(result.read_text())[-1]
    return {"top1_T": last["top1"][-1], "top1_1": last["top1"][0], "val": last["num_samples"]}


# --- the plain loop ----------------------------------------------------------------------------------------------
def read_shards(pattern_dir: str, split: str) -> list[tuple[bytes, int]]:
    """(image bytes, label) of every sample of ``<dir>/<split>-*.tar``, read with tarfile."""
    samples = []
    for tar in sorted(Path(pattern_dir).glob(f"{split}-*.tar")):
        members = {}
        with tarfile.open(tar) as tf:
            for m in tf.getmembers():
                key, ext = m.name.split(".", 1)
                members.setdefault(key, {})[ext] = tf.extractfile(m).read()
        for key, comp in members.items():
            samples.append((comp.get("jpg", comp.get("png")), int(comp["cls"].decode())))
    return samples


class ShardImages:
    """A map-style dataset over the decoded samples, with a torchvision transform."""

    def __init__(self, samples, transform):
        from PIL import Image

        self.images = [Image.open(io.BytesIO(b)).convert("RGB") for b, _ in samples]
        self.labels = [lab for _, lab in samples]
        self.transform = transform

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return self.transform(self.images[i]), self.labels[i]


def plain_model(cfg):
    """The same network; its LIF as the plain loop over T (neuron.implementation: reference) rather than the fused,
    compiled kernel the trainer runs: the two are equal by test, and the comparison then covers the kernel too."""
    from distsnn.models import build_student

    return build_student(dataclasses.replace(cfg.model, neuron=dataclasses.replace(cfg.model.neuron,
                                                                                    implementation="reference")))


def plain_val_loader(cfg):
    """torchvision's resize (shorter side, antialiased) + centre crop over the val shards."""
    import torch
    from torchvision import transforms as tv

    from distsnn.data.digits import digits_dir

    d, aug = cfg.data, cfg.data.augment
    tf = tv.Compose([tv.Resize(d.val_resize, antialias=True), tv.CenterCrop(d.image_size), tv.ToTensor(),
                     tv.Normalize(aug.mean, aug.std)])
    return torch.utils.data.DataLoader(ShardImages(read_shards(digits_dir(d.cache_dir), "val"), tf), batch_size=256)


def plain_eval(model, val) -> dict:
    """Top-1 (%) of the time-averaged logits (t = T) and of the first step's (t = 1)."""
    import torch

    model.eval()
    correct_T = correct_1 = n = 0
    with torch.no_grad():
        for x, y in val:
            logits = model(x)  # [T, B, K]
            correct_T += (logits.mean(0).argmax(1) == y).sum().item()
            correct_1 += (logits[0].argmax(1) == y).sum().item()
            n += len(y)
    return {"top1_T": 100.0 * correct_T / n, "top1_1": 100.0 * correct_1 / n, "val": n}


def cross_eval(recipe: Path, out: Path, seed: int) -> dict:
    """The trainer's final weights evaluated by the plain loop's val pipeline: splits a difference between the two
    sides into training and evaluation (DALI's resize vs torchvision's)."""
    import torch

    from distsnn.config import load
    from distsnn.models import load_weights

    torch.set_num_threads(1)
    cfg = load(recipe)
    model = plain_model(cfg)
    load_weights(model, str(out / f"trainer_s{seed}" / "model.safetensors"))
    return plain_eval(model, plain_val_loader(cfg))


def run_plain(recipe: Path, out: Path, seed: int) -> dict:
    """One process, no DeepSpeed, no DALI: the textbook loop at the trainer's global batch."""
    result = out / f"plain_s{seed}.json"
    if result.exists():
        return json.loads(result.read_text())
    import random

    import numpy as np
    import torch
    import torch.nn.functional as F
    from torch import nn
    from torchvision import transforms as tv

    from distsnn.config import load
    from distsnn.data.digits import digits_dir

    cfg = load(recipe)
    t0 = time.time()
    torch.set_num_threads(1)  # like each trainer rank (OMP_NUM_THREADS=1); 2 threads on a shared 2-core box: ~15x slower
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    d, aug = cfg.data, cfg.data.augment
    shards = digits_dir(d.cache_dir)  # the very shards the trainer reads
    train_tf = tv.Compose([tv.RandomResizedCrop(d.image_size, scale=(aug.min_scale, 1.0), ratio=(3 / 4, 4 / 3),
                                                antialias=True), tv.ToTensor(), tv.Normalize(aug.mean, aug.std)])
    batch = d.batch_size * RANKS  # the trainer's global batch
    train = torch.utils.data.DataLoader(ShardImages(read_shards(shards, "train"), train_tf), batch_size=batch,
                                        shuffle=True, drop_last=True, generator=torch.Generator().manual_seed(seed))
    model = plain_model(cfg)
    o = cfg.optim
    decay, no_decay = [], []
    for m in model.modules():  # weight decay on conv/linear weights only, as usual for ResNets
        for pname, p in m.named_parameters(recurse=False):
            (no_decay if isinstance(m, nn.BatchNorm2d) or pname == "bias" else decay).append(p)
    opt = torch.optim.SGD([{"params": decay, "weight_decay": o.weight_decay},
                           {"params": no_decay, "weight_decay": 0.0}], lr=o.lr, momentum=o.momentum)
    total = len(train) * cfg.run.epochs
    warm = int(round(o.warmup_epochs * len(train)))

    def lr_at(step):  # linear warm-up to the peak, then cosine to min_lr, per step
        if step < warm:
            return o.lr * (step + 1) / warm
        return o.min_lr + 0.5 * (o.lr - o.min_lr) * (1 + math.cos(math.pi * min(1.0, (step - warm) / max(1, total - warm))))

    step = 0
    for _ in range(cfg.run.epochs):
        model.train()
        for x, y in train:
            for g in opt.param_groups:
                g["lr"] = lr_at(step)
            loss = F.cross_entropy(model(x).mean(0), y)  # logits [T, B, K]: CE of the time average (TCL Eq.4)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
    res = plain_eval(model, plain_val_loader(cfg)) | {"steps": step}
    result.write_text(json.dumps(res))
    print(f"[parity] plain_s{seed}: {time.time() - t0:.0f} s, {step} steps", flush=True)
    return res


# --- the table ---------------------------------------------------------------------------------------------------
def mean_sd(xs):
    return (statistics.mean(xs), statistics.stdev(xs) if len(xs) > 1 else float("nan"))


def report(rows: dict, epochs: int) -> str:
    seeds = sorted(rows)
    n = {rows[s][k]["val"] for s in seeds for k in ("trainer", "plain")}
    assert len(n) == 1, f"the two sides evaluated different numbers of images: {n}"
    lines = [f"Top-1 (%) on the digits val split ({n.pop()} images) after {epochs} epochs; spiking ResNet-20 at 1/4 width, "
             f"T = 4, mean-CE baseline, global batch {PER_RANK_BATCH * RANKS}.", "",
             "| seed | trainer (2 ranks, DeepSpeed, DALI) t=T | plain PyTorch loop t=T | trainer's weights, plain "
             "loop's eval t=T | trainer t=1 | plain t=1 |",
             "| --- | --- | --- | --- | --- | --- |"]
    for s in seeds:
        t, p, x = rows[s]["trainer"], rows[s]["plain"], rows[s]["cross"]
        lines.append(f"| {s} | {t['top1_T']:.2f} | {p['top1_T']:.2f} | {x['top1_T']:.2f} | {t['top1_1']:.2f} | "
                     f"{p['top1_1']:.2f} |")
    (mt, st), (mp, sp), (mx, sx) = (mean_sd([rows[s][k]["top1_T"] for s in seeds]) for k in ("trainer", "plain", "cross"))
    lines.append(f"| mean ± sd | {mt:.2f} ± {st:.2f} | {mp:.2f} ± {sp:.2f} | {mx:.2f} ± {sx:.2f} | | |")
    if len(seeds) < 2:
        verdict = "one seed: no spread to compare against, so no verdict (run 3 seeds)."
    else:
        spread = max(st, sp)
        ok = abs(mt - mp) <= spread
        verdict = (f"difference of the means {mt - mp:+.2f} points against a seed spread (larger sd) of {spread:.2f}: "
                   + ("**agree within the seed spread**." if ok else "**outside the seed spread: investigate**."))
    return "\n".join(lines + ["", verdict])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--out", default=str(ROOT / "runs" / "parity"))
    a = ap.parse_args()
    out = Path(a.out) / f"ep{a.epochs}"
    out.mkdir(parents=True, exist_ok=True)
    recipe = out / "parity_digits.yaml"
    recipe.write_text(RECIPE.format(epochs=a.epochs, batch=PER_RANK_BATCH))
    rows = {s: {"trainer": run_trainer(recipe, out, s), "plain": run_plain(recipe, out, s)} for s in a.seeds}
    for s in a.seeds:
        rows[s]["cross"] = cross_eval(recipe, out, s)
    text = report(rows, a.epochs)
    (out / "parity.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
