#!/usr/bin/env python
"""The README's main job on the embedded digits data: train the ANN teacher, the plain spiking baseline and the
SSCL student (same network, data and schedule as the baseline, guided by the teacher), each with 2 ranks on CPU
through the ``deepspeed`` launcher, then print teacher, baseline and SSCL side by side (top-1 at t = 1..T).

Idempotent: a finished run resumes from its last checkpoint and only re-evaluates.
Usage: ``python launchers/demo.py [--ranks 2] [--out runs]``.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from distsnn.launch import deepspeed_command, free_port  # noqa: E402
from distsnn.models.registry import ann_counterpart  # noqa: E402
from distsnn.train.run_dir import read_config  # noqa: E402

RUNS = ("demo_ann", "demo_baseline", "demo_sscl")  # the run names the three demo recipes set


def launch(config: str, ranks: int, out: str, extra: list[str]) -> float:
    """Runs one recipe with ``ranks`` CPU ranks through the ``deepspeed`` launcher; returns its wall time in s."""
    cmd = [*deepspeed_command(), "--master_port", str(free_port()), "--num_gpus", str(ranks), "launchers/train.py", "--config", config,
           "--set", f"run.out_dir={out}", *extra]
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    env.setdefault("TORCH_EXTENSIONS_DIR", str(ROOT / ".torch_extensions"))
    print(f"\n$ {' '.join(cmd)}", flush=True)
    start = time.perf_counter()
    rc = subprocess.call(cmd, cwd=ROOT, env=env)
    if rc != 0:
        sys.exit(f"demo: {config} exited with code {rc}")
    return time.perf_counter() - start


def run_all(ranks: int, out: Path) -> dict[str, float]:
    """Trains the teacher, the baseline and the SSCL student (guided by that teacher) in turn under ``out``;
    returns run name -> wall time in s."""
    teacher = out / "demo_ann" / "model.safetensors"
    extras = {"demo_ann": [], "demo_baseline": [], "demo_sscl": ["--set", f"teacher.weights={teacher}"]}
    return {name: launch(f"{name}.yaml", ranks, str(out), extras[name]) for name in RUNS}


def last_eval(run_dir: Path) -> dict:
    return json.loads((run_dir / "eval.json").read_text())[-1]


def titles(ann, base, sscl) -> list[str]:
    """Row titles from what the three runs trained (their resolved configs: model, width, T, SSCL weight)."""
    def net(cfg) -> str:
        return f"{cfg.model.name} x{cfg.model.width_multiplier:g}"
    return [f"ANN teacher ({ann_counterpart(ann.model.name)} x{ann.model.width_multiplier:g})",
            f"baseline: {net(base)}, T={base.model.timesteps}, mean CE",
            f"SSCL: {net(sscl)} + teacher, Eq.20 at weight {sscl.method.sscl.weight:g}"]


def table(rows: list[tuple[str, dict]], T: int) -> str:
    """One row per run: top-1 at every inference step t (a 1-step ANN repeats its value) and top-5 at t = T."""
    head = "| run | epoch | " + " | ".join(f"top-1 @t={t}" for t in range(1, T + 1)) + " | top-5 @t=T |"
    lines = [head, "|" + "---|" * (T + 3)]
    for title, ev in rows:
        top1 = ev["top1"] if len(ev["top1"]) == T else ev["top1"][-1:] * T
        lines.append(f"| {title} | {ev['epoch'] + 1} | " + " | ".join(f"{a:.2f}" for a in top1)
                     + f" | {ev['top5'][-1]:.2f} |")
    return "\n".join(lines)


def verdict(baseline: dict, sscl: dict, num_val: int) -> str:
    """What SSCL adds over the baseline at t = T, in images of the val split; a trailing SSCL is said plainly."""
    diff = sscl["top1"][-1] - baseline["top1"][-1]
    images = round(abs(diff) * num_val / 100)
    if images == 0:
        return "SSCL and the baseline tie at t = T on this run."
    word = "ahead of" if diff > 0 else "BEHIND"
    return (f"SSCL is {word} the baseline by {abs(diff):.2f} points at t = T ({images} of {num_val} val images) on this "
            "single seed; across seeds see docs/RESULTS.md.")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    p.add_argument("--ranks", type=int, default=2)
    p.add_argument("--out", default="runs")
    args = p.parse_args()
    out = Path(args.out).resolve()
    seconds = run_all(args.ranks, out)
    ann, base, sscl = (last_eval(out / name) for name in RUNS)
    T = len(sscl["top1"])
    print(f"\nAnytime accuracy on the digits val split ({sscl['num_samples']} images; prediction at t = mean logits "
          "of steps 1..t):")
    print(table(list(zip(titles(*(read_config(out / name) for name in RUNS)), (ann, base, sscl))), T))
    print(verdict(base, sscl, sscl["num_samples"]))
    print("Wall time: " + ", ".join(f"{name} {s:.0f} s" for name, s in seconds.items())
          + f"; {sum(seconds.values()) / 60:.1f} min in all")
    print(f"\nRun directories: {out}/demo_ann, {out}/demo_baseline, {out}/demo_sscl (config.yaml, metrics.jsonl, "
          "eval.json, PNG plots, checkpoints, model.safetensors)")


if __name__ == "__main__":
    main()
