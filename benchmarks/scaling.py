#!/usr/bin/env python
"""Data-parallel scaling on this machine: the real SSCL demo training step with 1 vs 2 gloo ranks.

Each run is the real launcher, ``deepspeed --num_gpus N launchers/train.py --config demo_sscl.yaml`` (student
spiking_resnet20 at the recipe's width, 16x16, T=4, batch 32 per rank, ANN teacher forward, SSCL objective with
its gathers, DeepSpeed gradient all-reduce, SGD step), one thread per rank (OMP_NUM_THREADS=1; the launcher script sets
torch's thread count from it). Throughput and the data-wait share come from the trainer's own
``metrics.jsonl`` (``images_per_s``, ``step_time_s``, ``data_wait_s`` logged every step), after dropping the
first ``--warmup`` steps (LIF kernel compile, allocator warm-up). Runs alternate 1, 2, 1, 2, ... so that load
from other processes falls on both alike; the load average is printed with every run.

    img/s total   = global batch x steps / sum(step_time_s)    (global batch = 32 x ranks)
    efficiency    = img/s(2 ranks) / (2 x img/s(1 rank))
    vs independent = img/s(2 ranks) / img/s(two 1-rank runs at once on the same 2 cores, no communication):
                    the cost of distribution alone, net of what the cores lose by sharing memory and caches
    data-wait     = sum(data_wait_s) / sum(step_time_s)

``--keep-cores-busy`` runs one SCHED_IDLE busy loop per core for the whole benchmark (every contender alike): it
gets a core only when nothing else wants it, so a core never goes idle. On a virtual machine a vCPU that idles
(a rank waiting at a collective) may be handed back to the host; on this one the collective-free work of a 2-rank
step (the teacher forward) took 20-40 % more CPU time than in a 1-rank step (benchmarks/RESULTS.md). The option
tests how much of that the idle waits explain; bare-metal cores and GPUs do not hand their time away.

The teacher is a randomly initialised ``ann_resnet20`` of the recipe's width saved to a temporary safetensors
file (its accuracy does not change the step's cost). Usage::

    .venv/bin/python benchmarks/scaling.py [--ranks 1 2] [--steps 40] [--warmup 5] [--repeats 2] [--markdown F]
        [--set method.name=baseline] [--no-pin] [--bind] [--keep-cores-busy]
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from harness import deepspeed_command, free_port, machine_line, markdown_table  # noqa: E402

PER_RANK_BATCH = 32  # demo_sscl.yaml data.batch_size


def make_teacher(path: Path) -> None:
    """A random ann_resnet20 at the demo recipe's width (the demo teacher's architecture) as safetensors."""
    import timm

    import distsnn.models  # noqa: F401  (registers the timm names)
    from distsnn.config import load
    from distsnn.models import save_weights

    width = load("demo_sscl.yaml").model.width_multiplier
    save_weights(timm.create_model("ann_resnet20", num_classes=10, width_multiplier=width), path)


@contextlib.contextmanager
def cores_kept_busy(enabled: bool):
    """One SCHED_IDLE busy loop pinned to each core while the block runs (see the module docstring)."""
    spin = "import os\nos.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))\nwhile True:\n    pass"
    procs = []
    try:
        if enabled:
            for core in sorted(os.sched_getaffinity(0)):
                procs.append(subprocess.Popen([sys.executable, "-c", spin], preexec_fn=lambda c=core:
                                              os.sched_setaffinity(0, {c})))
        yield
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()


def start(ranks: int, cores: str | None, steps: int, out_dir: Path, name: str, teacher: Path, log: Path,
          extra: list[str], bind: bool = False) -> subprocess.Popen:
    """Start one training run through the deepspeed launcher (its own master port); ``cores``: taskset list
    confining the whole run (ranks, their DALI threads, the launcher), or None. ``bind``: instead, each rank gets
    its own share of ``cores`` (deepspeed ``--bind_cores_to_rank``, which runs numactl)."""
    sets = {"run.out_dir": out_dir, "run.name": name, "run.max_steps": steps, "run.log_every_steps": 1,
            "run.plots": "false", "teacher.weights": teacher, "teacher.check_accuracy": "false",
            "telemetry.enabled": "false", "checkpoint.resume": "false"}
    cmd = [*deepspeed_command(), "--num_gpus", str(ranks), "--master_port", str(free_port())]
    if bind:
        cmd += ["--bind_cores_to_rank", "--bind_core_list", cores]
    cmd += ["launchers/train.py", "--config", "demo_sscl.yaml"]
    if cores is not None and not bind:
        cmd = ["taskset", "-c", cores, *cmd]
    for k, v in sets.items():
        cmd += ["--set", f"{k}={v}"]
    for kv in extra:
        cmd += ["--set", kv]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env.setdefault("TORCH_EXTENSIONS_DIR", str(ROOT / ".torch_extensions"))
    with open(log, "w") as f:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT)
    proc.metrics, proc.log = out_dir / name / "metrics.jsonl", log
    return proc


def finish(proc: subprocess.Popen) -> Path:
    rc = proc.wait()
    if rc != 0:
        sys.exit(f"scaling: run exited with code {rc}; log: {proc.log}")
    return proc.metrics


def read_steps(metrics: Path, warmup: int) -> list[dict]:
    steps = [r for r in map(json.loads, metrics.read_text().splitlines()) if r.get("kind") == "step"]
    kept = [r for r in steps if r["step"] > warmup]
    if not kept:
        sys.exit(f"scaling: {metrics} has no step after the first {warmup} (warm-up); raise --steps")
    return kept


def summarise(steps: list[dict], ranks: int) -> dict:
    t = sum(r["step_time_s"] for r in steps)
    wait = sum(r["data_wait_s"] for r in steps)
    return {"ranks": ranks, "steps": len(steps), "img_s": PER_RANK_BATCH * ranks * len(steps) / t,
            "median_step_s": statistics.median(r["step_time_s"] for r in steps), "wait_share": wait / t}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ranks", type=int, nargs="+", default=[1, 2])
    p.add_argument("--steps", type=int, default=40, help="optimizer steps per run (run.max_steps)")
    p.add_argument("--warmup", type=int, default=5, help="first steps of each run left out")
    p.add_argument("--repeats", type=int, default=2, help="runs per rank count, interleaved")
    p.add_argument("--markdown", help="also write the table to this file")
    p.add_argument("--keep", action="store_true", help="keep the run directories (printed)")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="config override passed to every run (e.g. method.name=baseline to leave out the losses)")
    p.add_argument("--bind", action="store_true",
                   help="one core per rank (deepspeed --bind_cores_to_rank, needs numactl); independent runs: one "
                        "core each")
    p.add_argument("--keep-cores-busy", action="store_true",
                   help="a SCHED_IDLE busy loop on every core for the whole benchmark, so that no vCPU idles "
                        "while a rank waits (see the module docstring)")
    p.add_argument("--no-pin", action="store_true",
                   help="do not confine an N-rank run to N cores (then 1 rank also uses the idle cores)")
    args = p.parse_args()
    if args.bind and (args.no_pin or not shutil.which("numactl")):
        p.error("--bind needs numactl (apt-get install numactl) and excludes --no-pin")
    if not args.no_pin and max(args.ranks) > os.cpu_count():
        p.error(f"--ranks {max(args.ranks)} needs as many cores; this machine has {os.cpu_count()} (or --no-pin)")
    if args.steps <= args.warmup:
        p.error("--steps must exceed --warmup")

    tmp = Path(tempfile.mkdtemp(prefix="distsnn-scaling-"))
    teacher = tmp / "teacher.safetensors"
    make_teacher(teacher)
    print(f"machine: {machine_line()}" + ("; cores kept busy (SCHED_IDLE loops)" if args.keep_cores_busy else ""),
          flush=True)
    kinds = [("data-parallel", r) for r in args.ranks] + [("independent", r) for r in args.ranks if r > 1]
    runs: dict[tuple[str, int], list[dict]] = {k: [] for k in kinds}
    try:
        with cores_kept_busy(args.keep_cores_busy):
            for rep in range(args.repeats):
                for kind, ranks in kinds:
                    name = f"{kind[0]}{ranks}_{rep}"
                    load0 = os.getloadavg()[0]
                    t0 = time.perf_counter()
                    if kind == "data-parallel":
                        cores = None if args.no_pin else ",".join(map(str, range(ranks)))
                        procs = [start(ranks, cores, args.steps, tmp, name, teacher, tmp / f"{name}.log", args.sets,
                                       bind=args.bind)]
                    else:  # N 1-rank runs at once on the same N cores: what they give with no communication
                        procs = [start(1, None if args.no_pin else (str(i) if args.bind else f"0-{ranks - 1}"),
                                       args.steps, tmp, f"{name}_{i}", teacher, tmp / f"{name}_{i}.log", args.sets)
                                 for i in range(ranks)]
                    parts = [summarise(read_steps(finish(pr), args.warmup), 1 if kind == "independent" else ranks)
                             for pr in procs]
                    s = {"img_s": sum(x["img_s"] for x in parts),
                         "median_step_s": statistics.median(x["median_step_s"] for x in parts),
                         "wait_share": statistics.mean(x["wait_share"] for x in parts),
                         "load": (load0, os.getloadavg()[0])}
                    runs[(kind, ranks)].append(s)
                    print(f"run {name}: {s['img_s']:.1f} img/s, median step {1e3 * s['median_step_s']:.0f} ms, "
                          f"data wait {100 * s['wait_share']:.2f} %, load avg (1 min) {load0:.2f} -> "
                          f"{s['load'][1]:.2f}, wall {time.perf_counter() - t0:.0f} s", flush=True)
    finally:
        if args.keep:
            print(f"run directories: {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)

    one = min(args.ranks)
    base = statistics.median(s["img_s"] for s in runs[("data-parallel", one)]) / one
    rows = []
    for kind, ranks in kinds:
        rs = runs[(kind, ranks)]
        total = statistics.median(s["img_s"] for s in rs)
        loads = [x for s in rs for x in s["load"]]
        indep = runs.get(("independent", ranks))
        vs_indep = total / statistics.median(s["img_s"] for s in indep) if indep and kind == "data-parallel" else None
        label = f"{ranks}" if kind == "data-parallel" else f"{ranks} x 1, independent runs at once"
        rows.append([label, f"{total:.1f}", f"{total / ranks:.1f}", f"{total / (ranks * base):.2f}",
                     f"{vs_indep:.2f}" if vs_indep else "-",
                     f"{100 * statistics.median(s['wait_share'] for s in rs):.2f} %",
                     f"{1e3 * statistics.median(s['median_step_s'] for s in rs):.0f}",
                     ", ".join(f"{s['img_s']:.1f}" for s in rs), f"{min(loads):.1f}-{max(loads):.1f}"])
    table = markdown_table(["ranks", "img/s total", "img/s per rank", f"efficiency vs {one}-rank x ranks",
                            "efficiency vs independent runs", "data-wait share", "median step (ms)",
                            "img/s of each run", "load avg (1 min)"], rows)
    print()
    print(table)
    if args.markdown:
        Path(args.markdown).write_text(table + "\n")


if __name__ == "__main__":
    main()
