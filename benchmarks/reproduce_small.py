#!/usr/bin/env python
"""The small reproduction study (docs/RESULTS.md, issue 16): task x method x budget x seed on the embedded digits,
2 ranks through the real ``deepspeed`` launcher, post-hoc layer CKA of every run, then the tables, plots and the
claim-by-claim verdicts regenerated from the run directories.

    python benchmarks/reproduce_small.py --dry-run       # the planned runs in order, which are done, the cost
    python benchmarks/reproduce_small.py                 # train what is missing (resumable), then report
    python benchmarks/reproduce_small.py --report-only   # only regenerate docs/RESULTS.md's block and the PNGs

Every number in the report is read from ``<out>/<run>/eval.json`` and ``layer_cka.json``; nothing is typed in
except the papers' claimed effects (``CLAIMS``), which the report labels as such. The recipe is
``configs/study_digits.yaml``; tasks (``TASKS``), methods (``VARIANTS``) and budgets are ``--set`` overrides.
The order of the runs is :func:`plan`'s. A finished run is skipped; a run interrupted after a checkpoint resumes
from it (the trainer does so by itself); a failed run is logged and the next one starts; the exit code is 1 if any
run failed.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

CONFIG = "study_digits.yaml"
# task -> (what it is, overrides). "full": the whole train split (1,438 images), no random-resized crops (the demo's
# data); "hard": a quarter of it per class (359 images) and crops of min area 0.35, so that fewer methods sit at
# the ceiling. The val split (359 images) is the same for both.
TASKS = {
    "full": ("the whole digits train split (1,438 images), no random-resized crops",
             ["data.train_fraction=1.0", "data.augment.min_scale=1.0"]),
    "hard": ("a quarter of the train split per class (359 images), random-resized crops of min area 0.35",
             ["data.train_fraction=0.25", "data.augment.min_scale=0.35"]),
}
# name -> (label, overrides); the SSCL ablation of its Table 3 is sscl_nocka (plain NCE) vs sscl (NCE x 1/CKA).
VARIANTS = {
    "baseline": ("baseline (mean CE, Eq.4)", ["method.name=baseline"]),
    "tet": ("TET (Eq.5)", ["method.name=tet"]),
    "tcl": ("TCL (Eq.8, SupCon Eq.10)", ["method.name=tcl", "method.tcl.weight=0.5"]),
    "stcl": ("STCL (Eq.9, two views)", ["method.name=stcl", "method.tcl.weight=5.0"]),
    "sscl_nocka": ("SSCL: NCE without CKA weights", ["method.name=sscl", "method.sscl.cka_weights=false"]),
    "sscl": ("SSCL: NCE x 1/CKA (Eq.20)", ["method.name=sscl", "method.sscl.cka_weights=true"]),
    "sscl+stcl": ("SSCL + STCL", ["method.name=sscl+stcl", "method.tcl.weight=5.0"]),
}
TEACHER_METHODS = ("sscl_nocka", "sscl", "sscl+stcl")
# Budgets (epochs) per task. The main comparison is at 48 epochs on both tasks; the largest budget of a task is also
# trained at every seed (the long comparison). `full`'s baseline (seed 0) is at 91.6 / 94.4 / 96.7 / 98.1 %
# after 12 / 24 / 48 / 96 epochs with a 98.6 % teacher, still rising at 48, so full adds 96; `hard` has a quarter
# of the steps per epoch and its baseline is at 39 / 62 / 82 / 93 / 96 % after 12 / 24 / 48 / 192 / 384 epochs
# (192 epochs: 960 steps, about full's 1,056 at 48), so hard adds 192 (384 would double the matrix's largest
# part). The default matrix is ~10 h on 2 idle cores (--dry-run says what is left).
BUDGETS = {"full": [12, 24, 48, 96], "hard": [12, 24, 48, 192]}
SEEDS = [0, 1, 2, 3, 4]
MAIN_BUDGET = 48
CURVE_SEEDS = 1  # how many seeds the budgets other than the main and the largest one get
TEACHER_EPOCHS = 30
# Cost model of --dry-run: seconds per epoch on the full task with 2 ranks on 2 idle cores (the hard task has a
# quarter of the steps), plus the launcher's start-up and the post-hoc CKA per run. Measured on this machine's
# demo runs; on a shared machine expect more.
SECONDS_PER_EPOCH = {"teacher": 2.0, "baseline": 3.0, "tet": 3.0, "tcl": 4.5, "stcl": 5.0, "sscl_nocka": 3.7,
                     "sscl": 3.7, "sscl+stcl": 6.0}
TASK_SCALE = {"full": 1.0, "hard": 0.25}
STARTUP_S = 15.0
CKA_S = 8.0
MIN_PAIRS = 3  # fewer paired seeds than this: "not yet run"
TIE_TOLERANCE = 1e-9  # paired differences closer than this are equal (one image count from different pairs differs in ulps)


# ---- the plan -----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Run:
    task: str
    method: str     # a VARIANTS key, or "teacher"
    budget: int     # epochs
    seed: int
    phase: str      # "teacher" | "main" | "long" | "curve" | "rest"

    @property
    def name(self) -> str:
        if self.method == "teacher":
            return f"{self.task}_teacher"
        return f"{self.task}_{self.method}_e{self.budget}_s{self.seed}"

    def overrides(self, out: Path) -> list[str]:
        common = [f"run.out_dir={out}", f"run.name={self.name}", f"run.seed={self.seed}", f"run.epochs={self.budget}",
                  f"run.eval_every_epochs={self.budget}", f"checkpoint.every_epochs={self.budget}"]
        if self.method == "teacher":
            return TASKS[self.task][1] + ["method.name=ann"] + common
        # every student names its task's teacher: SSCL trains with it, and layer_cka.json compares every method to it
        return (TASKS[self.task][1] + VARIANTS[self.method][1] + common
                + [f"teacher.weights={out / teacher_name(self.task) / 'model.safetensors'}"])

    def seconds(self) -> float:
        """The cost model's estimate of this run (training + start-up + CKA)."""
        per_epoch = SECONDS_PER_EPOCH[self.method] * TASK_SCALE.get(self.task, 1.0)
        return STARTUP_S + self.budget * per_epoch + (0.0 if self.method == "teacher" else CKA_S)


def teacher_name(task: str) -> str:
    return f"{task}_teacher"


def task_budgets(budgets: list[int] | dict[str, list[int]], task: str) -> list[int]:
    """The budgets of ``task``, ascending (``budgets``: one list for every task, or task -> list)."""
    chosen = budgets[task] if isinstance(budgets, dict) else budgets
    return sorted(set(chosen))


def main_budget(budgets: list[int], preferred: int = MAIN_BUDGET) -> int:
    """The budget of the main comparison: ``preferred`` (48) if asked for, else the largest."""
    return preferred if preferred in budgets else max(budgets)


def compared_budgets(budgets: list[int], preferred: int = MAIN_BUDGET) -> list[int]:
    """The budgets trained at every seed and compared per seed: the main one and the largest (once if the same)."""
    return list(dict.fromkeys([main_budget(budgets, preferred), max(budgets)]))


def plan(tasks: list[str], methods: list[str], budgets: list[int] | dict[str, list[int]], seeds: list[int],
         main: int = MAIN_BUDGET, teacher_epochs: int = TEACHER_EPOCHS, order: str = "task",
         curve_seeds: int = CURVE_SEEDS) -> list[Run]:
    """Every run of the matrix, in the order they are trained. Per task: its ANN teacher (seed 0); the main
    comparison (budget ``main``, every seed, all methods at a seed before the next seed, so paired differences
    grow evenly); the long comparison (the task's largest budget, if not the main one, the same way); the
    budget curve (the other budgets, ascending, at the first seed); the rest (the other budgets at the next
    ``curve_seeds - 1`` seeds; none by default). ``order="task"`` finishes a task before the next; ``"phase"`` runs
    every task's teachers, then every task's main comparison, long comparison, curve, rest."""
    phases: list[tuple[str, str, list[Run]]] = []
    for task in tasks:
        mine = task_budgets(budgets, task)
        compared = compared_budgets(mine, main)
        others = [b for b in mine if b not in compared]
        phases.append((task, "teacher", [Run(task, "teacher", teacher_epochs, 0, "teacher")]))
        for phase, b in zip(("main", "long"), compared):
            phases.append((task, phase, [Run(task, m, b, s, phase) for s in seeds for m in methods]))
        phases.append((task, "curve", [Run(task, m, b, seeds[0], "curve") for b in others for m in methods]))
        phases.append((task, "rest", [Run(task, m, b, s, "rest") for b in others for s in seeds[1:curve_seeds]
                                         for m in methods]))
    if order == "phase":
        rank = {"teacher": 0, "main": 1, "long": 2, "curve": 3, "rest": 4}
        phases.sort(key=lambda p: rank[p[1]])  # stable: tasks keep their order within a phase
    elif order != "task":
        raise ValueError(f"order: {order!r} is not 'task' or 'phase'")
    return [r for _, _, runs in phases for r in runs]


# ---- run state ----------------------------------------------------------------------------------------------------
def read_evals(run_dir: Path) -> list[dict]:
    try:
        return json.loads((run_dir / "eval.json").read_text())
    except (OSError, ValueError):
        return []


def is_done(run_dir: Path, budget: int) -> bool:
    """Finished: the last evaluation is of the budget's last epoch and the weights are exported."""
    evals = read_evals(run_dir)
    return bool(evals) and evals[-1].get("epoch") == budget - 1 and (run_dir / "model.safetensors").is_file()


def has_checkpoint(run_dir: Path) -> bool:
    """A complete checkpoint (its manifest written last, distsnn/train/checkpoint.py) that the trainer resumes from."""
    ckpts = run_dir / "checkpoints"
    return ckpts.is_dir() and any((p / "COMPLETE.json").is_file() for p in ckpts.iterdir() if p.is_dir())


def run_state(out: Path, run: Run) -> str:
    """done | resumable (a checkpoint to resume from) | stale (a directory without one: restarted) | missing."""
    d = out / run.name
    if is_done(d, run.budget):
        return "done"
    if not d.exists():
        return "missing"
    return "resumable" if has_checkpoint(d) else "stale"


def launch(run: Run, out: Path, ranks: int) -> tuple[int, Path]:
    """Train one run through the deepspeed launcher; (exit code, log path). A stale directory (no checkpoint: the
    trainer would start over and append to its metrics) is moved aside first, not deleted."""
    from harness import deepspeed_command, free_port

    d = out / run.name
    if d.exists() and not has_checkpoint(d):
        k = 1
        while (out / f"{run.name}.stale{k}").exists():
            k += 1
        d.rename(out / f"{run.name}.stale{k}")
        print(f"[study] {run.name}: unfinished without a checkpoint; moved aside to {run.name}.stale{k}", flush=True)
    cmd = [*deepspeed_command(), "--master_port", str(free_port()), "--num_gpus", str(ranks), "launchers/train.py",
           "--config", CONFIG]
    for o in run.overrides(out):
        cmd += ["--set", o]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env.setdefault("TORCH_EXTENSIONS_DIR", str(ROOT / ".torch_extensions"))
    log = out / f"{run.name}.log"
    with open(log, "a") as f:
        f.write(f"\n$ {' '.join(cmd)}\n")
        f.flush()
        rc = subprocess.call(cmd, cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT)
    return rc, log


def ensure_cka(out: Path, run: Run) -> None:
    """``layer_cka.json`` of a finished student run (skipped when present)."""
    d = out / run.name
    if (d / "layer_cka.json").is_file():
        return
    from distsnn.analysis import layer_cka

    t0 = time.perf_counter()
    layer_cka.write(d, str(out / teacher_name(run.task) / "model.safetensors"))
    print(f"[study] {run.name}: layer_cka.json ({time.perf_counter() - t0:.0f} s)", flush=True)


def train_all(runs: list[Run], out: Path, ranks: int) -> list[str]:
    """Train (or resume) every run not done, then its CKA; returns the failures, one line each."""
    failed: list[str] = []
    for i, run in enumerate(runs, 1):
        d = out / run.name
        teacher = out / teacher_name(run.task) / "model.safetensors"
        state = run_state(out, run)
        if state != "done":
            if run.method != "teacher" and not teacher.is_file():
                failed.append(f"{run.name}: not started, no teacher ({teacher})")
                print(f"[study] {i}/{len(runs)} {failed[-1]}", flush=True)
                continue
            print(f"[study] {i}/{len(runs)} {run.name} ({state}; ~{run.seconds():.0f} s estimated)", flush=True)
            t0 = time.perf_counter()
            rc, log = launch(run, out, ranks)
            if rc != 0 or not is_done(d, run.budget):
                failed.append(f"{run.name}: exit code {rc}; log {log}")
                print(f"[study] FAILED {failed[-1]}", flush=True)
                continue
            print(f"[study] {run.name} done in {time.perf_counter() - t0:.0f} s: top-1 "
                  f"{' / '.join(f'{a:.2f}' for a in read_evals(d)[-1]['top1'])}", flush=True)
        if run.method != "teacher":
            try:
                ensure_cka(out, run)
            except Exception as e:  # noqa: BLE001 -- logged and counted; the matrix goes on
                failed.append(f"{run.name}: layer CKA failed: {type(e).__name__}: {e}")
                print(f"[study] FAILED {failed[-1]}", flush=True)
    return failed


def dry_run(runs: list[Run], out: Path) -> str:
    """The plan as text: every run in order with its state and estimate, then per task and phase the totals."""
    lines = [f"{'#':>4}  {'run':<28} {'phase':<8} {'state':<10} {'est.':>7}"]
    totals: dict[tuple[str, str], list[float]] = {}
    for i, run in enumerate(runs, 1):
        state = run_state(out, run)
        lines.append(f"{i:>4}  {run.name:<28} {run.phase:<8} {state:<10} {run.seconds() / 60:>5.1f} m")
        t = totals.setdefault((run.task, run.phase), [0, 0, 0.0, 0.0])
        t[0] += 1
        t[1] += state == "done"
        t[2] += run.seconds()
        t[3] += 0.0 if state == "done" else run.seconds()
    lines += ["", f"{'task':<6} {'phase':<8} {'runs':>5} {'done':>5} {'all (h)':>8} {'to do (h)':>10}"]
    for (task, phase), (n, done, s_all, s_todo) in totals.items():
        lines.append(f"{task:<6} {phase:<8} {n:>5} {done:>5} {s_all / 3600:>8.2f} {s_todo / 3600:>10.2f}")
    n, done = len(runs), sum(t[1] for t in totals.values())
    s_all, s_todo = sum(t[2] for t in totals.values()), sum(t[3] for t in totals.values())
    lines.append(f"{'all':<15} {n:>5} {done:>5} {s_all / 3600:>8.2f} {s_todo / 3600:>10.2f}")
    lines.append(f"cost model: s/epoch on the full task {SECONDS_PER_EPOCH} x task scale {TASK_SCALE}, "
                 f"+{STARTUP_S:.0f} s start-up and +{CKA_S:.0f} s CKA per run (2 ranks, 2 idle cores)")
    return "\n".join(lines)


# ---- statistics ---------------------------------------------------------------------------------------------------
def paired_ci(diffs: list[float], level: float = 0.95) -> tuple[float, float, float]:
    """Mean of the per-seed paired differences and its two-sided ``level`` t-interval (mean +- t_{n-1} sd/sqrt(n));
    (mean, nan, nan) for fewer than 2 differences."""
    from scipy.stats import t as student_t

    n = len(diffs)
    if n == 0:
        return math.nan, math.nan, math.nan
    mean = statistics.fmean(diffs)
    if n < 2:
        return mean, math.nan, math.nan
    half = student_t.ppf(0.5 + level / 2, n - 1) * statistics.stdev(diffs) / math.sqrt(n)
    return mean, mean - half, mean + half


def verdict(diffs: list[float], level: float = 0.95, min_n: int = MIN_PAIRS, claimed: bool = True) -> str:
    """The report's rule: reproduced if the interval of the paired difference lies above 0, not reproduced
    (contradicted) if below 0, otherwise not resolvable at this scale (with the interval's width); with fewer than
    ``min_n`` paired seeds: not yet run. ``claimed=False`` (a control, no paper claim): above 0 / below 0.
    Differences with no spread at all (top-1 moves in steps of one val image, so n seeds can tie exactly) give a
    t-interval of zero width, which says nothing about the spread: not resolvable."""
    n = len(diffs)
    if n < min_n:
        return f"not yet run (n={n})"
    if max(diffs) - min(diffs) < TIE_TOLERANCE:
        return f"not resolvable at this scale (the {n} differences are equal: no spread, the t-interval is degenerate)"
    _, lo, hi = paired_ci(diffs, level)
    if lo > 0:
        return "**reproduced**" if claimed else "**above 0**"
    if hi < 0:
        return "**not reproduced** (contradicted: interval below 0)" if claimed else "**below 0**"
    return f"not resolvable at this scale (interval width {hi - lo:.2f})"


def mean_sd(xs: list[float], digits: int = 2) -> str:
    if not xs:
        return "-"
    if len(xs) == 1:
        return f"{xs[0]:.{digits}f} (1)"
    return f"{statistics.fmean(xs):.{digits}f} ± {statistics.stdev(xs):.{digits}f} ({len(xs)})"


def fmt_diff(diffs: list[float], digits: int = 2) -> str:
    if not diffs:
        return "-"
    mean, lo, hi = paired_ci(diffs)
    if math.isnan(lo):
        return f"{mean:+.{digits}f} (n=1)"
    return f"{mean:+.{digits}f} [{lo:+.{digits}f}, {hi:+.{digits}f}] (n={len(diffs)})"


# ---- the claims ---------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Claim:
    text: str
    source: str         # the paper, table or figure
    paper_effect: str   # what the paper reports (its set-up, not ours)
    a: str              # the method claimed better ...
    b: str | None       # ... than this one (None: a within-run change, see measure)
    measure: str        # "t=T" | "t=1" | "t=1 minus t=T" | "cka end" | "cka end minus start"


# Effects as the papers print them: SSCL Table 3 (CIFAR-100, spiking ResNet-20, T = 2 / 4); TCL Table 1 (SEW-ResNet-
# 18/34, CIFAR-10/100) and Fig. 2 (CIFAR-100, trained at T = 8, evaluated at t = 1; Spiking-ResNet first, SEW second).
CLAIMS = [
    Claim("NCE (uniform weights) improves on the baseline", "SSCL Table 3",
          "+0.98 (T=2), +0.71 (T=4)", "sscl_nocka", "baseline", "t=T"),
    Claim("x 1/CKA improves on NCE only", "SSCL Table 3",
          "+0.56 (T=2), +0.70 (T=4)", "sscl", "sscl_nocka", "t=T"),
    Claim("SSCL improves on the baseline", "SSCL Table 3", "+1.54 (T=2), +1.41 (T=4)", "sscl", "baseline", "t=T"),
    Claim("SSCL raises CKA to the teacher above the baseline's (mean over layers, end of training)",
          "SSCL Sec. 3, Fig. 1 (not quantified)", "-", "sscl", "baseline", "cka end"),
    Claim("CKA to the teacher rises during SSCL training (end minus seeded start, mean over layers)",
          "SSCL Sec. 3 (not quantified)", "-", "sscl", None, "cka end minus start"),
    Claim("control: CKA to the teacher rises during baseline training (no paper claim)", "-", "-",
          "baseline", None, "cka end minus start"),
    Claim("TCL improves on the baseline at t = T", "TCL Table 1; Fig. 2", "+0.45 to +1.31 (Table 1 CIFAR); +0.98 (Fig. 2)",
          "tcl", "baseline", "t=T"),
    Claim("TCL improves on the baseline at t = 1", "TCL Fig. 2", "+21.2 (70.09 vs 48.93), +25.5 (SEW)",
          "tcl", "baseline", "t=1"),
    Claim("TCL's gain is largest at small t: gain at t = 1 minus gain at t = T", "TCL Sec. 1, Fig. 2",
          "+20.2 (Spiking-ResNet), +24.5 (SEW)", "tcl", "baseline", "t=1 minus t=T"),
    Claim("STCL improves on the baseline", "TCL Table 1", "+0.97 to +3.44 (CIFAR)", "stcl", "baseline", "t=T"),
    Claim("STCL improves on TCL", "TCL Table 1", "+1.05 to +2.46 (CIFAR)", "stcl", "tcl", "t=T"),
    Claim("TET improves on the baseline at t = 1", "TCL Fig. 2", "+18.1 (67.07 vs 48.93), +24.5 (SEW)",
          "tet", "baseline", "t=1"),
    Claim("TET improves on the baseline at t = T ('minimal gains')", "TCL Sec. 1, Fig. 2", "+0.28, +0.00 (SEW)",
          "tet", "baseline", "t=T"),
    Claim("SSCL + STCL improves on SSCL (no paper claim: this project's combination)", "-", "-",
          "sscl+stcl", "sscl", "t=T"),
]


# ---- the results --------------------------------------------------------------------------------------------------
@dataclass
class Result:
    top1: list[float]               # top-1 (%) at t = 1..T
    firing: dict[str, float]
    cka_start: dict[str, float] | None
    cka_end: dict[str, float] | None


def load_result(run_dir: Path, budget: int) -> Result | None:
    if not is_done(run_dir, budget):
        return None
    last = read_evals(run_dir)[-1]
    cka = None
    try:
        cka = json.loads((run_dir / "layer_cka.json").read_text())
    except (OSError, ValueError):
        pass
    return Result(last["top1"], last.get("firing_rates", {}), cka and cka.get("start"), cka and cka.get("end"))


def value(r: Result, measure: str) -> float | None:
    """One run's number for a claim's measure (None when the run lacks it, e.g. no layer_cka.json)."""
    if measure == "t=T":
        return r.top1[-1]
    if measure == "t=1":
        return r.top1[0]
    if measure == "t=1 minus t=T":
        return r.top1[0] - r.top1[-1]
    if measure == "cka end":
        return statistics.fmean(r.cka_end.values()) if r.cka_end else None
    if measure == "cka end minus start":
        if not (r.cka_end and r.cka_start):
            return None
        return statistics.fmean(r.cka_end.values()) - statistics.fmean(r.cka_start.values())
    raise ValueError(f"unknown measure {measure!r}")


class Table:
    """Results of one task, keyed (method, budget, seed)."""

    def __init__(self, out: Path, task: str, methods: list[str], budgets: list[int], seeds: list[int]):
        self.task, self.methods, self.budgets, self.seeds = task, methods, budgets, seeds
        self.results: dict[tuple[str, int, int], Result] = {}
        for m in methods:
            for b in budgets:
                for s in seeds:
                    r = load_result(out / Run(task, m, b, s, "").name, b)
                    if r is not None:
                        self.results[(m, b, s)] = r

    def values(self, method: str, budget: int, measure: str) -> list[float]:
        vals = [value(self.results[(method, budget, s)], measure) for s in self.seeds
                if (method, budget, s) in self.results]
        return [v for v in vals if v is not None]

    def paired(self, a: str, b: str | None, budget: int, measure: str) -> list[float]:
        """Per seed: measure(a) - measure(b) over the seeds both have (b None: measure(a) itself)."""
        diffs = []
        for s in self.seeds:
            ra, rb = self.results.get((a, budget, s)), self.results.get((b, budget, s)) if b else None
            va = value(ra, measure) if ra else None
            vb = (value(rb, measure) if rb else None) if b else 0.0
            if va is not None and vb is not None:
                diffs.append(va - vb)
        return diffs


# ---- the report ---------------------------------------------------------------------------------------------------
def _plot_budget(table: Table, png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    for ax, measure, title in zip(axes, ("t=1", "t=T"), ("t = 1", "t = T")):
        for m in table.methods:
            pts = [(b, table.values(m, b, measure)) for b in table.budgets]
            pts = [(b, v) for b, v in pts if v]
            if not pts:
                continue
            xs = [b for b, _ in pts]
            ys = [statistics.fmean(v) for _, v in pts]
            es = [statistics.stdev(v) if len(v) > 1 else 0.0 for _, v in pts]
            ax.errorbar(xs, ys, yerr=es, marker="o", capsize=3, label=m)
        ax.set_xscale("log", base=2)
        ax.set_xticks(table.budgets, [str(b) for b in table.budgets])
        ax.set(xlabel="budget (epochs)", title=f"{table.task}: val top-1 at {title} (mean ± sd over seeds)")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("top-1 (%)")
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)


PHASES = {"teacher": "teacher", "main": "main comparison", "long": "long comparison",
          "curve": "budget curve", "rest": "rest"}


def _missing(runs: list[Run], out: Path, task: str) -> str:
    mine = [r for r in runs if r.task == task]
    todo = [r for r in mine if run_state(out, r) != "done"]
    if not todo:
        return f"All {len(mine)} planned runs of this task are done."
    by_phase: dict[str, int] = {}
    for r in todo:
        by_phase[r.phase] = by_phase.get(r.phase, 0) + 1
    text = (f"**{len(mine) - len(todo)} of {len(mine)} planned runs done**; missing: "
            + ", ".join(f"{n} in the {PHASES[p]}" for p, n in by_phase.items()))
    if len(todo) <= 12:
        text += " (" + ", ".join(f"`{r.name}`" for r in todo) + ")"
    return text + "."


def _cka_table(table: Table, budget: int) -> list[str]:
    """Linear CKA to the teacher per layer at the seeded start and at the end of every method's runs of ``budget``."""
    ends = {m: [table.results[(m, budget, s)].cka_end for s in table.seeds
                if (m, budget, s) in table.results and table.results[(m, budget, s)].cka_end] for m in table.methods}
    have = [m for m in table.methods if ends[m]]
    if not have:
        return []
    layers = list(ends[have[0]][0])
    starts: dict[int, dict[str, float]] = {}  # per seed: the same seeded init for every method
    for (m, b, s), r in table.results.items():
        if b == budget and r.cka_start:
            starts.setdefault(s, r.cka_start)
    lines = [f"#### Linear CKA to the teacher per layer, {budget} epochs (whole maps, unbiased HSIC averaged over "
             "the val batches; mean ± sd (n seeds))", "",
             "| layer | start (seeded init) | " + " | ".join(f"end `{m}`" for m in have) + " |",
             "|---|---|" + "---|" * len(have)]
    for layer in layers:
        cells = [mean_sd([st[layer] for st in starts.values() if layer in st], 3)]
        cells += [mean_sd([end[layer] for end in ends[m] if layer in end], 3) for m in have]
        lines.append(f"| {layer} | " + " | ".join(cells) + " |")
    return lines + [""]


def _firing_table(table: Table, budget: int) -> list[str]:
    """Mean firing rate per stage at the final evaluation of every method's runs of ``budget``."""
    rows = [(m, [table.results[(m, budget, s)].firing for s in table.seeds if (m, budget, s) in table.results])
            for m in table.methods]
    rows = [(m, frs) for m, frs in rows if frs]
    if not rows:
        return []
    stages = sorted({k for _, frs in rows for fr in frs for k in fr})
    lines = [f"#### Firing rates, {budget} epochs (spikes per neuron per step at the final evaluation, mean over "
             "seeds)", "", "| method | " + " | ".join(stages) + " |", "|---|" + "---|" * len(stages)]
    for m, frs in rows:
        cells = [statistics.fmean(fr[k] for fr in frs if k in fr) if any(k in fr for fr in frs) else math.nan
                 for k in stages]
        lines.append(f"| `{m}` | " + " | ".join(f"{c:.3f}" for c in cells) + " |")
    return lines + [""]


def task_section(out: Path, task: str, methods: list[str], budgets: list[int], seeds: list[int], main: int,
                 runs: list[Run], png_dir: Path) -> str:
    table = Table(out, task, methods, budgets, seeds)
    lines = [f"### Task `{task}`: {TASKS[task][0]}", ""]
    teacher = read_evals(out / teacher_name(task))
    if teacher:
        lines.append(f"ANN teacher (`{teacher_name(task)}`): val top-1 {teacher[-1]['top1'][0]:.2f} %.")
    else:
        lines.append("ANN teacher: not trained yet.")
    lines += [_missing(runs, out, task), ""]
    if not table.results:
        return "\n".join(lines + ["No finished student run yet.", ""])

    # (a) the budget curve
    for measure, what in (("t=T", "t = T"), ("t=1", "t = 1")):
        lines += [f"#### Budget curve: top-1 (%) at {what}, mean ± sd (n seeds)", "",
                  "| method | " + " | ".join(f"{b} ep" for b in budgets) + " |", "|---|" + "---|" * len(budgets)]
        for m in methods:
            lines.append(f"| `{m}` | " + " | ".join(mean_sd(table.values(m, b, measure)) for b in budgets) + " |")
        lines.append("")
    png = png_dir / f"study_{task}_budget.png"
    _plot_budget(table, png)
    lines += [f"![{task}: top-1 vs budget]({png.name})", ""]

    # (b) the comparison with the baseline, paired by seed, at the main budget (and the largest, if another)
    for b in compared_budgets(budgets, main):
        lines += [f"#### {b} epochs: top-1 (%) and the paired difference to the baseline (same seed), mean "
                  "[95 % t-interval]", "",
                  "| method | t = 1 | t = T | Δ t = 1 | Δ t = T |", "|---|---|---|---|---|"]
        for m in methods:
            d1 = table.paired(m, "baseline", b, "t=1") if m != "baseline" else []
            dT = table.paired(m, "baseline", b, "t=T") if m != "baseline" else []
            lines.append(f"| {VARIANTS[m][0]} (`{m}`) | {mean_sd(table.values(m, b, 't=1'))} | "
                         f"{mean_sd(table.values(m, b, 't=T'))} | {fmt_diff(d1)} | {fmt_diff(dT)} |")
        lines.append("")

    # (c) layer CKA to the teacher, seeded start and end, and (d) firing rates, at the compared budgets
    for b in compared_budgets(budgets, main):
        lines += _cka_table(table, b) + _firing_table(table, b)

    # (e) the verdicts
    for b in compared_budgets(budgets, main):
        lines += [f"#### Verdicts, {b} epochs", "",
                  "| claim | paper | paper's effect (its set-up) | here: paired difference, mean [95 % interval] | "
                  "verdict |", "|---|---|---|---|---|"]
        for c in CLAIMS:
            if c.a not in methods or (c.b is not None and c.b not in methods):
                continue
            diffs = table.paired(c.a, c.b, b, c.measure)
            vs = f"`{c.a}` - `{c.b}`" if c.b else f"`{c.a}`"
            digits = 3 if c.measure.startswith("cka") else 2
            lines.append(f"| {c.text} | {c.source} | {c.paper_effect} | {vs}, {c.measure}: {fmt_diff(diffs, digits)} "
                         f"| {verdict(diffs, claimed=c.source != '-')} |")
        lines.append("")
    return "\n".join(lines)


def report(out: Path, tasks: list[str], methods: list[str], budgets: list[int] | dict[str, list[int]],
           seeds: list[int], doc: Path, main: int = MAIN_BUDGET, teacher_epochs: int = TEACHER_EPOCHS,
           curve_seeds: int = CURVE_SEEDS) -> str:
    """Rewrite the generated block of ``doc`` (and the PNGs next to it) from what exists under ``out``; works on a
    partial matrix and says what is missing. Returns the block."""
    runs = plan(tasks, methods, budgets, seeds, main, teacher_epochs, curve_seeds=curve_seeds)
    per_task = {t: task_budgets(budgets, t) for t in tasks}
    matrix = "; ".join(f"{t}: {', '.join(map(str, b))}" for t, b in per_task.items())
    compared = "; ".join(f"{t}: {' and '.join(map(str, compared_budgets(b, main)))}" for t, b in per_task.items())
    doc.parent.mkdir(parents=True, exist_ok=True)
    where = out.relative_to(ROOT) if out.is_relative_to(ROOT) else out
    head = [f"<!-- generated by benchmarks/reproduce_small.py from {where}; do not edit by hand -->",
            f"Matrix: tasks {', '.join(tasks)} x methods {', '.join(methods)} x budgets ({matrix}) epochs x seeds "
            f"{', '.join(map(str, seeds))}; compared per seed at ({compared}) epochs, the other budgets at the first "
            f"{curve_seeds} seed(s). Top-1 is on the 359-image val split at inference step t (mean logits of steps "
            "1..t).",
            "",
            f"**Verdict rule.** For each claim, the per-seed paired difference (same task, budget and seed; the seed "
            f"fixes the initial weights and the data order) and its 95 % t-interval (mean ± t(n-1) sd/sqrt(n)): "
            f"**reproduced** if the interval lies above 0, **not reproduced** (contradicted) if it lies below 0, "
            f"otherwise *not resolvable at this scale* (the interval's width says how large an effect could hide; "
            f"also when every seed gives the same difference, a zero-width interval that measures no spread); "
            f"with fewer than {MIN_PAIRS} paired seeds, *not yet run*. The papers' effects are theirs (CIFAR / "
            "ImageNet, other networks, 200-320 epochs), quoted for scale, not expected here.",
            ""]
    body = [task_section(out, t, methods, per_task[t], seeds, main_budget(per_task[t], main), runs, doc.parent)
            for t in tasks]
    generated = "\n".join(head) + "\n" + "\n".join(body)
    begin, end = "<!-- BEGIN GENERATED -->", "<!-- END GENERATED -->"
    text = doc.read_text() if doc.exists() else f"# Results\n\n{begin}\n{end}\n"
    if begin not in text or end not in text:
        text = text.rstrip("\n") + f"\n\n{begin}\n{end}\n"
    before, rest = text.split(begin, 1)
    after = rest.split(end, 1)[1]
    doc.write_text(f"{before}{begin}\n{generated}{end}{after}")
    return generated


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    p.add_argument("--methods", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--budgets", type=int, nargs="+",
                   help=f"epochs of each student run, the same for every task (default per task: {BUDGETS})")
    p.add_argument("--seeds", type=int, nargs="+", default=SEEDS)
    p.add_argument("--main-budget", type=int, default=MAIN_BUDGET,
                   help="budget of the main comparison, trained first at every seed (the largest if not in --budgets)")
    p.add_argument("--teacher-epochs", type=int, default=TEACHER_EPOCHS)
    p.add_argument("--curve-seeds", type=int, default=CURVE_SEEDS,
                   help="how many of --seeds the budgets other than the main and the largest are trained at")
    p.add_argument("--order", choices=("task", "phase"), default="task",
                   help="task: finish a task before the next; phase: every task's main comparison first")
    p.add_argument("--ranks", type=int, default=2)
    p.add_argument("--out", default=str(ROOT / "runs" / "study"))
    p.add_argument("--report-only", action="store_true")
    p.add_argument("--dry-run", action="store_true", help="print the planned runs in order, their state and cost")
    p.add_argument("--doc", default=str(ROOT / "docs" / "RESULTS.md"))
    args = p.parse_args()
    out = Path(args.out).resolve()
    budgets = BUDGETS if args.budgets is None else sorted(set(args.budgets))
    if args.curve_seeds < 1:
        p.error(f"--curve-seeds: {args.curve_seeds} < 1 (the budget curve needs a seed)")
    runs = plan(args.tasks, args.methods, budgets, args.seeds, args.main_budget, args.teacher_epochs, args.order,
                args.curve_seeds)
    if args.dry_run:
        print(dry_run(runs, out))
        return
    failed: list[str] = []
    if not args.report_only:
        out.mkdir(parents=True, exist_ok=True)
        failed = train_all(runs, out, args.ranks)
    print(report(out, args.tasks, args.methods, budgets, args.seeds, Path(args.doc).resolve(), args.main_budget,
                 args.teacher_epochs, args.curve_seeds))
    if failed:
        print(f"[study] {len(failed)} run(s) failed (the others are kept; rerun to retry):", file=sys.stderr)
        for f in failed:
            print(f"  {f}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
