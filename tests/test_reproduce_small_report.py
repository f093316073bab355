"""benchmarks/reproduce_small.py without training: the paired-difference interval against a plain computation, the
verdict rule on constructed cases, the run order of plan(), the done / resume / skip logic on a fake run tree, and
the report on a synthetic partial matrix (eval.json + metrics.jsonl + layer_cka.json written here)."""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import reproduce_small as rs  # noqa: E402

T975 = {4: 2.7764451051977987, 9: 2.2621571627409915}  # Student t quantiles 0.975 (tables), df 4 and 9


@pytest.mark.parametrize("n", [5, 10])
def test_paired_ci_is_mean_plus_minus_t_times_standard_error(n):
    d = np.random.default_rng(n).normal(0.7, 1.3, size=n)
    mean = sum(d) / n
    sd = math.sqrt(sum((x - mean) ** 2 for x in d) / (n - 1))
    half = T975[n - 1] * sd / math.sqrt(n)
    got = rs.paired_ci(list(d))
    assert got == pytest.approx((mean, mean - half, mean + half), rel=1e-9)
    assert math.isnan(rs.paired_ci([1.0])[1]) and math.isnan(rs.paired_ci([])[0])


def test_verdict_rule():
    assert rs.verdict([1.0, 1.2, 0.9, 1.1, 1.05]) == "**reproduced**"
    assert rs.verdict([-1.0, -1.2, -0.9]).startswith("**not reproduced**")
    mixed = [1.0, -1.0, 0.5, -0.4]
    _, lo, hi = rs.paired_ci(mixed)
    assert rs.verdict(mixed) == f"not resolvable at this scale (interval width {hi - lo:.2f})"
    assert rs.verdict([5.0, 6.0]) == "not yet run (n=2)"
    assert rs.verdict([]) == "not yet run (n=0)"
    # four seeds tied at one val-image step: a zero-width t-interval is not evidence
    assert rs.verdict([100 / 359 * 2] * 4).startswith("not resolvable at this scale (the 4 differences are equal")
    # the same two-image difference from different accuracy pairs differs in the last bits of the floats
    tied = [100 * (k + 2) / 359 - 100 * k / 359 for k in (320, 325, 336, 347)]
    assert len(set(tied)) > 1
    assert rs.verdict(tied).startswith("not resolvable at this scale (the 4 differences are equal")
    assert rs.verdict([1.0, 1.2, 0.9], claimed=False) == "**above 0**"
    assert rs.verdict([-1.0, -1.2, -0.9], claimed=False) == "**below 0**"


def test_plan_order():
    runs = rs.plan(["full", "hard"], ["baseline", "sscl"], [96, 12, 48, 24], [0, 1, 2], curve_seeds=3)
    names = [r.name for r in runs]
    full = names[:names.index("hard_teacher")]
    assert full[0] == "full_teacher"
    # main comparison: 48 epochs, all methods at a seed before the next seed
    assert full[1:7] == [f"full_{m}_e48_s{s}" for s in (0, 1, 2) for m in ("baseline", "sscl")]
    # the long comparison: the largest budget, the same way
    assert full[7:13] == [f"full_{m}_e96_s{s}" for s in (0, 1, 2) for m in ("baseline", "sscl")]
    # budget curve at the first seed, ascending
    assert full[13:17] == [f"full_{m}_e{b}_s0" for b in (12, 24) for m in ("baseline", "sscl")]
    # the rest
    assert full[17:] == [f"full_{m}_e{b}_s{s}" for b in (12, 24) for s in (1, 2) for m in ("baseline", "sscl")]
    assert len(runs) == 2 * len(full) and names[len(full)] == "hard_teacher"
    assert [r.phase for r in runs[:14]] == ["teacher"] + ["main"] * 6 + ["long"] * 6 + ["curve"]
    # by default the other budgets are trained at the first seed only
    default = rs.plan(["full"], ["baseline"], [12, 24, 48], [0, 1, 2])
    assert [r.name for r in default[4:]] == ["full_baseline_e12_s0", "full_baseline_e24_s0"]
    assert [r.phase for r in default] == ["teacher"] + ["main"] * 3 + ["curve"] * 2
    # budgets per task: only hard has a larger budget than the main one, trained at every seed
    per_task = rs.plan(["full", "hard"], ["baseline"], {"full": [12, 48], "hard": [12, 48, 192]}, [0, 1])
    assert [r.name for r in per_task] == [
        "full_teacher", "full_baseline_e48_s0", "full_baseline_e48_s1", "full_baseline_e12_s0",
        "hard_teacher", "hard_baseline_e48_s0", "hard_baseline_e48_s1", "hard_baseline_e192_s0",
        "hard_baseline_e192_s1", "hard_baseline_e12_s0"]
    assert rs.plan(["hard"], ["baseline"], rs.BUDGETS, [0])[-1].name == "hard_baseline_e24_s0"
    by_phase = rs.plan(["full", "hard"], ["baseline"], [12, 48], [0, 1], order="phase", curve_seeds=2)
    assert [r.name for r in by_phase[:6]] == ["full_teacher", "hard_teacher", "full_baseline_e48_s0",
                                              "full_baseline_e48_s1", "hard_baseline_e48_s0", "hard_baseline_e48_s1"]
    # no 48 in the budgets: the largest is the main comparison
    assert rs.plan(["hard"], ["baseline"], [3, 5], [0])[1].name == "hard_baseline_e5_s0"
    teacher = runs[0]
    assert "method.name=ann" in teacher.overrides(Path("/o")) and teacher.budget == rs.TEACHER_EPOCHS
    student = rs.Run("hard", "baseline", 12, 3, "rest")
    ov = student.overrides(Path("/o"))
    for o in ("run.epochs=12", "run.eval_every_epochs=12", "checkpoint.every_epochs=12", "run.seed=3",
              "data.train_fraction=0.25", "method.name=baseline", "teacher.weights=/o/hard_teacher/model.safetensors"):
        assert o in ov


def _finished(run_dir: Path, budget: int, top1=(50.0, 60.0, 65.0, 70.0), weights=True, cka=None,
              firing=None) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    evals = [{"epoch": budget - 1, "step": 10 * budget, "num_samples": 359, "top1": list(top1),
              "top5": [99.0] * len(top1), "firing_rates": firing or {"stage1": 0.2, "stage2": 0.1}}]
    (run_dir / "eval.json").write_text(json.dumps(evals))
    (run_dir / "metrics.jsonl").write_text(json.dumps({"kind": "step", "step": 1, "loss": {"total": 2.3}}) + "\n")
    if weights:
        (run_dir / "model.safetensors").write_bytes(b"")
    if cka is not None:
        (run_dir / "layer_cka.json").write_text(json.dumps(cka))


def test_done_resume_and_skip(tmp_path, monkeypatch):
    out = tmp_path
    _finished(out / "hard_teacher", rs.TEACHER_EPOCHS, top1=(97.0,))
    done = rs.Run("hard", "baseline", 12, 0, "main")
    _finished(out / done.name, 12, cka={"start": {}, "end": {}})
    wrong_epoch = rs.Run("hard", "baseline", 12, 1, "main")
    _finished(out / wrong_epoch.name, 13)
    no_weights = rs.Run("hard", "baseline", 12, 2, "main")
    _finished(out / no_weights.name, 12, weights=False)
    resumable = rs.Run("hard", "sscl", 12, 0, "main")
    (out / resumable.name / "checkpoints" / "step_00000005").mkdir(parents=True)
    (out / resumable.name / "checkpoints" / "step_00000005" / "COMPLETE.json").write_text("{}")
    stale = rs.Run("hard", "sscl", 12, 1, "main")
    (out / stale.name / "checkpoints").mkdir(parents=True)
    missing = rs.Run("hard", "sscl", 12, 2, "main")
    assert rs.is_done(out / done.name, 12) and not rs.is_done(out / wrong_epoch.name, 12)
    assert [rs.run_state(out, r) for r in (done, wrong_epoch, no_weights, resumable, stale, missing)] == [
        "done", "stale", "stale", "resumable", "stale", "missing"]

    launched, cka = [], []

    def fake_launch(run, out_, ranks):
        launched.append(run.name)
        if run.seed == 1 and run.method == "sscl":
            return 1, out_ / f"{run.name}.log"  # fails: logged, the next run still starts
        _finished(out_ / run.name, run.budget)
        return 0, out_ / f"{run.name}.log"

    monkeypatch.setattr(rs, "launch", fake_launch)
    monkeypatch.setattr(rs, "ensure_cka", lambda out_, run: cka.append(run.name))
    runs = [rs.Run("hard", "teacher", rs.TEACHER_EPOCHS, 0, "teacher"), done, wrong_epoch, no_weights, resumable,
            stale, missing]
    failed = rs.train_all(runs, out, ranks=2)
    assert launched == [wrong_epoch.name, no_weights.name, resumable.name, stale.name, missing.name]
    assert failed == [f"{stale.name}: exit code 1; log {out / (stale.name + '.log')}"]
    assert cka == [done.name, wrong_epoch.name, no_weights.name, resumable.name, missing.name]  # not the teacher
    # without a teacher, the students are not started and are reported
    other = tmp_path / "other"
    failed = rs.train_all([rs.Run("full", "baseline", 12, 0, "main")], other, ranks=2)
    assert len(failed) == 1 and "no teacher" in failed[0]


def test_launch_moves_a_stale_run_aside(tmp_path, monkeypatch):
    run = rs.Run("hard", "baseline", 12, 0, "main")
    (tmp_path / run.name).mkdir()
    (tmp_path / run.name / "metrics.jsonl").write_text("old\n")
    monkeypatch.setattr(rs.subprocess, "call", lambda *a, **k: 0)
    rc, log = rs.launch(run, tmp_path, 2)
    assert rc == 0 and (tmp_path / f"{run.name}.stale1" / "metrics.jsonl").read_text() == "old\n"
    assert not (tmp_path / run.name).exists() and log == tmp_path / f"{run.name}.log"


def test_report_on_a_partial_synthetic_matrix(tmp_path):
    out, doc = tmp_path / "runs", tmp_path / "docs" / "RESULTS.md"
    doc.parent.mkdir()
    doc.write_text("# Results\n\nprose before\n\n<!-- BEGIN GENERATED -->\nold block\n<!-- END GENERATED -->\n\n"
                   "## What is reproduced\nprose after\n")
    _finished(out / "hard_teacher", rs.TEACHER_EPOCHS, top1=(97.5,))
    layers = ["stage1", "stage2", "stage3", "pooled"]
    rng = np.random.default_rng(0)
    for s in range(5):
        base = 80.0 + 2 * s
        start = {l: 0.3 for l in layers}
        _finished(out / f"hard_baseline_e48_s{s}", 48, top1=(base - 10, base - 5, base - 2, base),
                  cka={"start": start, "end": {l: 0.5 + 0.01 * s for l in layers}})
        gain = 2.0 + 0.2 * rng.normal()
        _finished(out / f"hard_sscl_e48_s{s}", 48, top1=(base - 9, base - 4, base - 1, base + gain),
                  cka={"start": start, "end": {l: 0.7 + 0.01 * s for l in layers}})
        if s < 2:  # TCL: only two seeds so far
            _finished(out / f"hard_tcl_e48_s{s}", 48, top1=(base, base, base, base))
    _finished(out / "hard_baseline_e12_s0", 12, top1=(60.0, 61.0, 62.0, 63.0))
    (out / "hard_sscl_e12_s0").mkdir()  # started, unfinished: counted missing, not read
    block = rs.report(out, ["full", "hard"], ["baseline", "tcl", "sscl"], [12, 48], [0, 1, 2, 3, 4], doc,
                      curve_seeds=5)
    text = doc.read_text()
    assert text.startswith("# Results\n\nprose before\n\n<!-- BEGIN GENERATED -->\n")
    assert text.endswith("<!-- END GENERATED -->\n\n## What is reproduced\nprose after\n")
    assert "old block" not in text and block in text
    assert "ANN teacher: not trained yet." in block and "No finished student run yet." in block  # task full
    assert "ANN teacher (`hard_teacher`): val top-1 97.50 %." in block
    # hard: teacher + 3 methods x 2 budgets x 5 seeds = 31 planned; teacher, 5 + 5 + 2 at 48 and 1 at 12 done
    assert ("**14 of 31 planned runs done**; missing: 3 in the main comparison, 2 in the budget curve, 12 in the rest"
            in block)
    hard = block.split("### Task `hard`")[1]
    # budget curve table: baseline at 12 epochs has 1 seed, at 48 five
    assert "| `baseline` | 63.00 (1) | 84.00 ± 3.16 (5) |" in hard
    # paired differences: SSCL ~ +2 at t=T with 5 seeds -> reproduced; TCL 2 seeds -> not yet run
    verdicts = hard.split("#### Verdicts, 48 epochs")[1]
    row = next(l for l in verdicts.splitlines() if l.startswith("| SSCL improves on the baseline"))
    assert "(n=5)" in row and row.endswith("| **reproduced** |")
    row = next(l for l in verdicts.splitlines() if l.startswith("| TCL improves on the baseline at t = T"))
    assert row.endswith("| not yet run (n=2) |")
    row = next(l for l in verdicts.splitlines() if l.startswith("| SSCL raises CKA"))
    # the synthetic CKA difference is +0.2 on every seed: no spread, so no verdict from a zero-width interval
    assert "+0.200 [+0.200, +0.200] (n=5)" in row and row.endswith("the t-interval is degenerate) |")
    row = next(l for l in verdicts.splitlines() if l.startswith("| control: CKA to the teacher rises during baseline"))
    assert row.endswith("| **above 0** |")
    assert "NCE (uniform weights)" not in verdicts  # sscl_nocka not in the matrix: its claims are left out
    assert "| stage1 | 0.300 ± 0.000 (5) | 0.520 ± 0.016 (5) | 0.720 ± 0.016 (5) |" in hard
    assert "| `sscl` | 0.200 | 0.100 |" in hard  # firing rates
    assert (doc.parent / "study_hard_budget.png").stat().st_size > 0

    # budgets per task: hard's largest budget (96) gets its own tables and verdicts, from its own runs
    for s in range(3):
        _finished(out / f"hard_baseline_e96_s{s}", 96, top1=(90.0, 91.0, 92.0, 93.0 + s),
                  cka={"start": start, "end": {l: 0.6 for l in layers}})
        _finished(out / f"hard_sscl_e96_s{s}", 96, top1=(90.0, 91.0, 92.0, 93.0 + s + (-1.5, 0.5, -0.5)[s]))
    block = rs.report(out, ["full", "hard"], ["baseline", "tcl", "sscl"], {"full": [12, 48], "hard": [12, 48, 96]},
                      [0, 1, 2, 3, 4], doc)
    assert "budgets (full: 12, 48; hard: 12, 48, 96) epochs" in block
    assert "compared per seed at (full: 48; hard: 48 and 96) epochs" in block
    hard = block.split("### Task `hard`")[1]
    assert "| `baseline` | 63.00 (1) | 84.00 ± 3.16 (5) | 94.00 ± 1.00 (3) |" in hard
    late = hard.split("#### Verdicts, 96 epochs")[1]
    row = next(l for l in late.splitlines() if l.startswith("| SSCL improves on the baseline"))
    # paired differences -1.5, +0.5, -0.5: mean -0.5, sd 1, half-width t(2) / sqrt(3) = 2.48
    assert "-0.50 [-2.98, +1.98] (n=3)" in row and "not resolvable" in row
    assert "| stage1 | 0.300 ± 0.000 (3) | 0.600 ± 0.000 (3) |" in hard.split("CKA to the teacher per layer, 96")[1]
