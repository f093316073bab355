#!/usr/bin/env python
"""The small reproduction study (docs/RESULTS.md): every method on the embedded digits data, several seeds,
2 ranks through the real ``deepspeed`` launcher, then the table and plots regenerated from the run directories.

    python benchmarks/reproduce_small.py                 # train what is missing, then report
    python benchmarks/reproduce_small.py --report-only   # only regenerate docs/RESULTS.md and the PNGs

Every number in the report is read from ``<out>/<run>/eval.json`` and ``metrics.jsonl``; nothing is typed in.
The recipe is ``configs/study_digits.yaml``; the variants are ``--set`` overrides listed in ``VARIANTS``.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from harness import free_port  # noqa: E402
CONFIG = "study_digits.yaml"
TEACHER = "study_teacher"
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


def launch(name: str, overrides: list[str], out: Path, ranks: int) -> None:
    if (out / name / "model.safetensors").exists():
        print(f"[study] {name}: done already", flush=True)
        return
    deepspeed = shutil.which("deepspeed") or str(Path(sys.executable).with_name("deepspeed"))
    cmd = [deepspeed, "--master_port", str(free_port()), "--num_gpus", str(ranks), "launchers/train.py", "--config", CONFIG,
           "--set", f"run.out_dir={out}", "--set", f"run.name={name}"]
    for o in overrides:
        cmd += ["--set", o]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env.setdefault("TORCH_EXTENSIONS_DIR", str(ROOT / ".torch_extensions"))
    print(f"[study] {' '.join(cmd[1:])}", flush=True)
    with open(out / f"{name}.log", "w") as log:
        rc = subprocess.call(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    if rc != 0:
        sys.exit(f"[study] {name} failed with exit code {rc}; see {out / (name + '.log')}")


def last_eval(run: Path) -> dict:
    return json.loads((run / "eval.json").read_text())[-1]


def step_records(run: Path) -> list[dict]:
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r.get("kind") == "step"]


def mean_sd(xs: list[float]) -> str:
    return f"{statistics.mean(xs):.2f} ± {statistics.stdev(xs):.2f}" if len(xs) > 1 else f"{xs[0]:.2f}"


def report(out: Path, seeds: list[int], doc: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows, curves, T = [], {}, None
    for key, (label, _) in VARIANTS.items():
        evals = [last_eval(out / f"{key}_s{s}") for s in seeds if (out / f"{key}_s{s}" / "eval.json").exists()]
        if not evals:
            continue
        T = len(evals[0]["top1"])
        per_t = [[e["top1"][t] for e in evals] for t in range(T)]
        curves[label] = [statistics.mean(v) for v in per_t]
        fr = {k: statistics.mean(e["firing_rates"][k] for e in evals) for k in evals[0]["firing_rates"]}
        rows.append((key, label, len(evals), [mean_sd(v) for v in per_t], fr))
    teacher = last_eval(out / TEACHER)
    fig, ax = plt.subplots(figsize=(6, 4))
    for label, ys in curves.items():
        ax.plot(range(1, T + 1), ys, marker="o", label=label)
    ax.axhline(teacher["top1"][0], color="k", ls="--", lw=1, label="ANN teacher")
    ax.set(xlabel="inference time step t", ylabel="val top-1 (%)", title=f"digits, mean over {len(seeds)} seeds")
    ax.set_xticks(range(1, T + 1))
    ax.legend(fontsize=7)
    fig.tight_layout()
    png = doc.parent / "results_accuracy_vs_t.png"
    fig.savefig(png, dpi=110)
    plt.close(fig)

    lines = ["| method | seeds | " + " | ".join(f"top-1 t={t}" for t in range(1, T + 1)) + " |",
             "|---|---|" + "---|" * T]
    for key, label, n, accs, _ in rows:
        lines.append(f"| {label} (`{key}`) | {n} | " + " | ".join(accs) + " |")
    table = "\n".join(lines)
    stages = sorted({k for *_, fr in rows for k in fr})
    fr_lines = ["| method | " + " | ".join(stages) + " |", "|---|" + "---|" * len(stages)]
    for key, label, _, _, fr in rows:
        fr_lines.append(f"| `{key}` | " + " | ".join(f"{fr.get(s, float('nan')):.3f}" for s in stages) + " |")
    cka_lines = []
    for key in ("sscl", "sscl_nocka"):
        runs = [out / f"{key}_s{s}" for s in seeds if (out / f"{key}_s{s}" / "metrics.jsonl").exists()]
        if not runs:
            continue
        recs = [step_records(r) for r in runs]
        layers = [k.split(".", 1)[1] for k in recs[0][0]["loss"] if k.startswith("cka.")]
        cka_lines.append(f"\n`{key}` (mean over seeds; first logged step -> last step):\n")
        cka_lines.append("| layer | CKA start | CKA end | lambda start | lambda end |\n|---|---|---|---|---|")
        for layer in layers:
            cs = statistics.mean(r[0]["loss"][f"cka.{layer}"] for r in recs)
            ce = statistics.mean(r[-1]["loss"][f"cka.{layer}"] for r in recs)
            ls = statistics.mean(r[0]["loss"][f"lambda.{layer}"] for r in recs)
            le = statistics.mean(r[-1]["loss"][f"lambda.{layer}"] for r in recs)
            cka_lines.append(f"| {layer} | {cs:.3f} | {ce:.3f} | {ls:.2f} | {le:.2f} |")
    where = out.relative_to(ROOT) if out.is_relative_to(ROOT) else out
    generated = (f"<!-- generated by benchmarks/reproduce_small.py from {where}; do not edit by hand -->\n"
                 f"ANN teacher (`{TEACHER}`): val top-1 {teacher['top1'][0]:.2f} %, top-5 {teacher['top5'][0]:.2f} %.\n\n"
                 f"### Top-1 (%) at every inference step t (mean ± sd over seeds {seeds})\n\n{table}\n\n"
                 f"![accuracy vs t](results_accuracy_vs_t.png)\n\n"
                 f"### CKA and lambda per layer, start and end of SSCL training\n{chr(10).join(cka_lines)}\n\n"
                 f"### Firing rates at the final evaluation (spikes per neuron per step, mean over seeds)\n\n"
                 + "\n".join(fr_lines) + "\n")
    begin, end = "<!-- BEGIN GENERATED -->", "<!-- END GENERATED -->"
    text = doc.read_text() if doc.exists() else f"# Results\n\n{begin}\n{end}\n"
    head, rest = text.split(begin, 1)
    tail = rest.split(end, 1)[1]
    doc.write_text(f"{head}{begin}\n{generated}{end}{tail}")
    print(generated)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--ranks", type=int, default=2)
    p.add_argument("--out", default=str(ROOT / "runs" / "study"))
    p.add_argument("--only", nargs="*", default=None, help="train only these variants")
    p.add_argument("--report-only", action="store_true")
    p.add_argument("--doc", default=str(ROOT / "docs" / "RESULTS.md"))
    args = p.parse_args()
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    if not args.report_only:
        launch(TEACHER, ["method.name=ann", "run.seed=0"], out, args.ranks)
        teacher = out / TEACHER / "model.safetensors"
        for seed in args.seeds:
            for key, (_, overrides) in VARIANTS.items():
                if args.only is None or key in args.only:
                    launch(f"{key}_s{seed}", overrides + [f"run.seed={seed}", f"teacher.weights={teacher}"],
                           out, args.ranks)
    report(out, args.seeds, Path(args.doc))


if __name__ == "__main__":
    main()
