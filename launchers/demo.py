#!/usr/bin/env python
"""The README's main job on the embedded digits data: train the ANN teacher, then the SSCL student, each with
2 ranks on CPU through the ``deepspeed`` launcher, and print the anytime-accuracy table (top-1 at t = 1..T).

Idempotent: a finished run resumes from its last checkpoint and only re-evaluates.
Usage: ``python launchers/demo.py [--ranks 2] [--out runs]``.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    """A free TCP port for the rendezvous, so that concurrent jobs on one machine do not collide on 29500."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(config: str, ranks: int, out: str, extra: list[str]) -> None:
    deepspeed = shutil.which("deepspeed") or str(Path(sys.executable).with_name("deepspeed"))
    cmd = [deepspeed, "--master_port", str(free_port()), "--num_gpus", str(ranks), "launchers/train.py", "--config", config,
           "--set", f"run.out_dir={out}", *extra]
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    env.setdefault("TORCH_EXTENSIONS_DIR", str(ROOT / ".torch_extensions"))
    print(f"\n$ {' '.join(cmd)}", flush=True)
    rc = subprocess.call(cmd, cwd=ROOT, env=env)
    if rc != 0:
        sys.exit(f"demo: {config} exited with code {rc}")


def table(run_dir: Path, title: str) -> str:
    history = json.loads((run_dir / "eval.json").read_text())
    last = history[-1]
    T = len(last["top1"])
    head = "| run | epoch | " + " | ".join(f"top-1 @t={t}" for t in range(1, T + 1)) + " | top-5 @t=T |"
    sep = "|" + "---|" * (T + 3)
    row = f"| {title} | {last['epoch']} | " + " | ".join(f"{a:.2f}" for a in last["top1"]) + f" | {last['top5'][-1]:.2f} |"
    return "\n".join([head, sep, row])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ranks", type=int, default=2)
    p.add_argument("--out", default="runs")
    args = p.parse_args()
    out = str(Path(args.out).resolve())
    launch("demo_ann.yaml", args.ranks, out, [])
    teacher = Path(out) / "demo_ann" / "model.safetensors"
    launch("demo_sscl.yaml", args.ranks, out, ["--set", f"teacher.weights={teacher}"])
    print("\nAnytime accuracy on the digits val split (359 images; prediction at t = mean logits of steps 1..t):")
    print(table(Path(out) / "demo_ann", "ANN teacher (ann_resnet20 x0.125)"))
    print(table(Path(out) / "demo_sscl", "SSCL student (spiking_resnet20 x0.125, T=4)"))
    print(f"\nRun directories: {out}/demo_ann, {out}/demo_sscl (config.yaml, metrics.jsonl, eval.json, PNG plots, "
          "checkpoints, model.safetensors)")


if __name__ == "__main__":
    main()
