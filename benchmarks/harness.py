"""Shared helpers of the benchmark scripts: timing, saved-for-backward bytes, memcpy bandwidth, machine info."""
from __future__ import annotations

import contextlib
import datetime
import os
import platform
import statistics
import time

import torch

from distsnn.launch import deepspeed_command, free_port  # noqa: F401  (the benchmarks import them from here)


def median_ms(fn, repeats: int, warmup: int) -> float:
    """Median wall time of ``fn()`` in milliseconds over ``repeats`` calls, after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times)


def interleaved_median_ms(fns: dict, repeats: int, warmup: int) -> dict:
    """name -> median ms of ``fns[name]()``, timed round-robin (one call of each per round) so that load from
    other processes on a shared machine falls on all contenders alike; ``warmup`` untimed rounds first."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return {name: 1e3 * statistics.median(t) for name, t in times.items()}


def malloc_env() -> str:
    """The glibc malloc tunables in effect: tensors >= 32 MiB are mmap'd fresh (and page-faulted) on every call
    unless MALLOC_MMAP_THRESHOLD_ is raised, which costs memory-bound kernels up to 2x."""
    keys = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "LD_PRELOAD")
    set_ = [f"{k}={os.environ[k]}" for k in keys if os.environ.get(k)]
    return ", ".join(set_) if set_ else "glibc malloc defaults"


class SavedBytes(contextlib.AbstractContextManager):
    """Counts the bytes autograd keeps for backward inside the ``with`` block, one count per unique storage.

    Views of one tensor (``x[t]``, reshapes) share a storage and are counted once; storages listed in
    ``exclude`` (e.g. model parameters, which live anyway) are left out.
    """

    def __init__(self, exclude: tuple[torch.Tensor, ...] = ()):
        self._exclude = {t.untyped_storage().data_ptr() for t in exclude}
        self._storages: dict[int, int] = {}
        self._hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, lambda t: t)

    def _pack(self, t: torch.Tensor) -> torch.Tensor:
        s = t.untyped_storage()
        if s.data_ptr() not in self._exclude:
            self._storages[s.data_ptr()] = max(self._storages.get(s.data_ptr(), 0), s.nbytes())
        return t

    def __enter__(self):
        self._hooks.__enter__()
        return self

    def __exit__(self, *exc):
        return self._hooks.__exit__(*exc)

    @property
    def nbytes(self) -> int:
        return sum(self._storages.values())


def memcpy_bandwidth(nbytes: int = 256 * 2**20, repeats: int = 10) -> float:
    """Bytes/s moved (read + write) by ``dst.copy_(src)`` on a ``nbytes`` float32 tensor, median of ``repeats``."""
    src = torch.rand(nbytes // 4)
    dst = torch.empty_like(src)
    ms = median_ms(lambda: dst.copy_(src), repeats, warmup=2)
    return 2 * nbytes / (ms / 1e3)


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_line() -> str:
    """One line naming the machine, date, versions and thread count, for RESULTS.md."""
    from importlib.metadata import PackageNotFoundError, version
    try:
        sj = version("spikingjelly")
    except PackageNotFoundError:
        sj = "not installed"
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return (f"{datetime.date.today().isoformat()}, `nproc`={os.cpu_count()}, CPU: {cpu_model()}, "
            f"torch {torch.__version__}, spikingjelly {sj}, torch threads {torch.get_num_threads()}, "
            f"load average at start {load}, {malloc_env()}")


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def emit_table_report(notes: list[str], header: list[str], rows: list[list[str]], markdown_path: str | None) -> str:
    """The machine line, the ``notes`` lines (what was run) and the table, printed and written by
    :func:`emit_report`."""
    return emit_report("\n".join([f"Machine: {machine_line()}.", *notes, "", markdown_table(header, rows)]),
                       markdown_path)


def emit_report(report: str, markdown_path: str | None) -> str:
    """Print the report and, if asked, write it to ``markdown_path`` (for RESULTS.md)."""
    print()
    print(report)
    if markdown_path:
        with open(markdown_path, "w") as f:
            f.write(report + "\n")
    return report
