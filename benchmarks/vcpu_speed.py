#!/usr/bin/env python
"""How steady is each core of this machine? A fixed pure-Python loop timed back to back on every core at once.

One process per core (pinned), each timing the same loop of 100k integer additions for ``--seconds``. A bucket
of one second is "slow" when its median exceeds 1.4x the fastest loop seen on that core. On a quiet bare-metal
machine every bucket is fast; on a shared VM a vCPU can lose half its speed for tens of seconds while the host
runs something else on the same physical core, and the cores do so at different times. Any benchmark that
compares runs (scaling.py's 1 vs 2 ranks, the interleaved rounds of lif.py and train_step.py) inherits that
noise, and a synchronous 2-rank run waits for whichever core is slow. Usage::

    .venv/bin/python benchmarks/vcpu_speed.py [--seconds 60]
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import statistics
import sys
import time
from pathlib import Path

SLOW = 1.4  # a bucket is slow when its median loop time is this many times the core's fastest loop


def loop() -> None:
    s = 0
    for i in range(100_000):
        s += i


def probe(core: int, seconds: float, queue) -> None:
    os.sched_setaffinity(0, {core})
    samples, end = [], time.time() + seconds
    while time.time() < end:
        t0, a = time.time(), time.perf_counter()
        loop()
        samples.append((t0, time.perf_counter() - a))
    queue.put((core, samples))


def summary(samples: list[tuple[float, float]], start: float) -> tuple[str, float, float, float]:
    """(per-second map, '.' fast / 'S' slow; fastest ms; median ms; share of slow seconds)."""
    fastest = min(dt for _, dt in samples)
    buckets: dict[int, list[float]] = {}
    for t, dt in samples:
        buckets.setdefault(int(t - start), []).append(dt)
    marks = ["S" if statistics.median(buckets[k]) > SLOW * fastest else "." for k in sorted(buckets)]
    return "".join(marks), 1e3 * fastest, 1e3 * statistics.median(dt for _, dt in samples), marks.count("S") / len(marks)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=60.0)
    args = p.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from harness import machine_line  # here, not at the top: the spawned probes should not import torch

    print(f"machine: {machine_line()}", flush=True)
    cores = sorted(os.sched_getaffinity(0))
    queue = mp.get_context("spawn").Queue()
    start = time.time()
    procs = [mp.get_context("spawn").Process(target=probe, args=(c, args.seconds, queue)) for c in cores]
    for pr in procs:
        pr.start()
    results = dict(queue.get() for _ in procs)
    for pr in procs:
        pr.join()
    print(f"{len(cores)} cores, {args.seconds:.0f} s, one mark per second ('S': median loop > {SLOW}x the fastest)")
    rows = []
    for core in cores:
        marks, fastest, median, slow = summary(results[core], start)
        rows.append({"core": core, "fastest_ms": round(fastest, 2), "median_ms": round(median, 2),
                     "slow_share": round(slow, 2)})
        print(f"core {core}: fastest {fastest:.2f} ms, median {median:.2f} ms, slow {100 * slow:.0f} % of seconds")
        print(f"  {marks}")
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
