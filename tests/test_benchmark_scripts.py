"""The CPU benchmarks cannot rot: each runs end to end at tiny sizes and prints its table with a positive number in
every expected row. (benchmarks/losses.py and benchmarks/train_step.py had both broken unnoticed when the objective
gained its ``timesteps`` argument, benchmarks/scaling.py when the demo's width changed; these runs are what would
have said so.) The numbers themselves are measured
in benchmarks/RESULTS.md, never asserted here."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from train_helpers import REPO, launch_env  # noqa: E402

# script, tiny arguments, {first cell of an expected table row: index of its column that must hold a number > 0}
CASES = {
    "losses": (["--world", "2", "--rows", "8", "--map-rows", "8", "--map-px", "64", "--repeats", "1",
                "--model-batch", "1"],
               {"all_gather_with_grad": 3, "temporal_supcon, TCL": 3, "temporal_supcon, STCL": 3, "nce_critic": 3,
                "CKA [N, 512] pair, Gram form": 3, "CKA [N, 512] pair, moment form": 3,
                "objective tcl: 4 layer terms": 3, "objective stcl: 4 layer terms": 3,
                "objective sscl+stcl: 9 layer terms": 3, "objective sscl: 5 layer terms, whole ResNet-18 maps": 3}),
    "train_step": (["--arch", "resnet18", "--batch", "4", "--image", "64", "--steps", "1", "--warmup", "0"],
                   {"distsnn spiking_resnet18, fast LIF": 2, "distsnn spiking_resnet18, reference LIF": 2,
                    "distsnn SSCL step": 2, "ANN resnet18 (ReLU)": 2}),
    "lif": (["--repeats", "1", "--warmup", "0"], {"distsnn fast": 2, "distsnn reference": 2}),
    "comm_model": ([], {"imagenet_sscl_r34": 2, "imagenet_stcl_sew18": 2}),
    "gpu_hours_cifar": ([], {"`cifar100_sscl_r20_t4`": 2, "`cifar100_stcl_sew34`": 2}),
    # one real 1-rank run of the demo recipe (its random teacher had kept the old demo width and the run exited 70)
    "scaling": (["--ranks", "1", "--steps", "6", "--warmup", "2", "--repeats", "1"], {"1": 1}),
}


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def _number(cell: str) -> float:
    m = re.search(r"[-+]?\d+(?:\.\d+)?", cell.replace("*", ""))
    assert m, f"no number in {cell!r}"
    return float(m.group())


def _run(script: str, args: list[str]) -> str:
    """Run ``benchmarks/<script>.py`` with ``args``; its stdout (the test fails on a non-zero exit)."""
    p = subprocess.run([sys.executable, str(REPO / "benchmarks" / f"{script}.py"), *args], cwd=REPO,
                       env=launch_env(), capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    return p.stdout


@pytest.mark.slow
@pytest.mark.parametrize("script", sorted(CASES))
def test_benchmark_runs_and_prints_every_row(script):
    args, expected = CASES[script]
    out = _run(script, args)
    rows = [_cells(line) for line in out.splitlines() if line.startswith("| ")]
    for name, col in expected.items():
        hits = [r for r in rows if r[0].startswith(name)]
        assert hits, f"{script}: no row starting {name!r} in\n{out[-3000:]}"
        for r in hits:
            assert _number(r[col]) > 0, f"{script}: row {r}"


@pytest.mark.slow
def test_data_benchmark_reads_through_both_pipelines():
    out = _run("data", ["--images", "16", "--epochs", "1", "--repeats", "1", "--batch", "8"])
    rates = dict(re.findall(r"^(DALI CPU pipeline|webdataset \+ torchvision DataLoader):\s+(\d+) img/s", out, re.M))
    assert set(rates) == {"DALI CPU pipeline", "webdataset + torchvision DataLoader"}, out
    assert all(int(v) > 0 for v in rates.values()), rates
