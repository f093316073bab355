"""Resuming a checkpoint on another world size, with real DeepSpeed engines, DALI loaders and gloo ranks.

Reference runs on 2 ranks (per-rank batch 4) and on 1 rank (batch 4, gradient accumulation 2) save at step 2;
each is resumed on the other world size, where the trainer keeps the global batch of 8 by changing the
accumulation and the loader finishes the epoch in the old ranks' order. Every micro-batch then holds the same
images as in the reference run, so each micro-batch loss after the resize equals the reference's (the gradient
of two averaged ranks and of two accumulated halves is the same sum), and so do the final weights: model,
momentum (ZeRO 0 in DeepSpeed's model file, ZeRO 2 re-cut from the partitions), learning-rate schedule and step
all carried over. 2 -> 3 ranks (batch 3 -> 2, global 6) runs SSCL: its CKA/Z buffers come back as saved."""
from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

sys.path.insert(0, os.path.dirname(__file__))
import resize_world  # noqa: E402
from train_helpers import free_port, make_teacher  # noqa: E402

ACCUM2 = ["deepspeed.grad_accum=2"]
SSCL = ["method.name=sscl", "method.sscl.cka_min=1.0", "optim.grad_clip=1.0", "data.batch_size=3"]
PHASES = [  # (world, [(case, overrides, resume from)])
    (2, [("ref2_z0", ["data.batch_size=4"], None), ("ref2_z2", ["data.batch_size=4", "deepspeed.zero_stage=2"], None),
         ("sscl2", SSCL, None)]),
    (1, [("ref1_z0", ["data.batch_size=4"] + ACCUM2, None),
         ("ref1_z2", ["data.batch_size=4", "deepspeed.zero_stage=2"] + ACCUM2, None),
         ("from2_z0", ["data.batch_size=4"], "ref2_z0"),
         ("from2_z2", ["data.batch_size=4", "deepspeed.zero_stage=2"], "ref2_z2")]),
    (2, [("from1_z0", ["data.batch_size=4"] + ACCUM2, "ref1_z0"),
         ("from1_z2", ["data.batch_size=4", "deepspeed.zero_stage=2"] + ACCUM2, "ref1_z2")]),
    (3, [("sscl3", SSCL, "sscl2")]),
]


@pytest.fixture(scope="module")
def worlds(tmp_path_factory):
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(Path(__file__).resolve().parents[1] / ".torch_extensions"))
    tmp = tmp_path_factory.mktemp("resize")
    spec = {"cache": str(tmp / "cache"), "teacher": str(make_teacher(tmp / "teacher.safetensors"))}
    (tmp / "spec.json").write_text(json.dumps(spec))
    failures = []
    for world, cases in PHASES:
        try:
            mp.spawn(resize_world.worker, args=(world, str(tmp), free_port(), cases), nprocs=world, join=True)
        except Exception as e:  # reported by every test whose case has no result
            failures.append(f"world {world}: {type(e).__name__}: {e}")
    return tmp, failures


def result(worlds, case: str, world: int) -> list[dict]:
    tmp, failures = worlds
    files = [tmp / f"{case}.rank{r}.json" for r in range(world)]
    if not all(f.exists() for f in files):
        errors = "\n".join(p.read_text() for p in sorted(tmp.glob("error_*.json")))
        pytest.fail(f"case {case} left no result ({failures}):\n{errors}")
    return [json.loads(f.read_text()) for f in files]


def lr_after_resume(rank0: dict) -> dict:
    return {k: v for k, v in rank0["lr"].items() if int(k) > 2}


def micro_losses_in_global_order(ranks: list[dict]) -> dict[int, list[float]]:
    """step index -> the losses of its micro-batches, ranks' micro-batches in rank order (the data stream's)."""
    out: dict[int, list[float]] = {}
    for r in ranks:
        for step, loss in r["micro_losses"]:
            out.setdefault(step, [])
    for step in out:
        for r in ranks:
            out[step] += [loss for s, loss in r["micro_losses"] if s == step]
    return out


@pytest.mark.slow
@pytest.mark.parametrize("zero", [0, 2])
@pytest.mark.parametrize("old,new", [(2, 1), (1, 2)])
def test_resumed_on_another_world_size_the_run_equals_the_uninterrupted_one(worlds, old, new, zero):
    ref = result(worlds, f"ref{old}_z{zero}", old)
    res = result(worlds, f"from{old}_z{zero}", new)
    assert all(r["rc"] == 0 and r["steps"] == 5 for r in ref + res)
    after = res[0]["after_resume"]
    # the global batch of 8 is kept by the accumulation; the per-rank batch stays 4
    assert (after["batch"], after["accum"]) == ((4, 2) if new == 1 else (4, 1)), after
    assert "global batch 8 kept" in after["note"] and "read in the order of the" in after["data_note"]
    assert res[0]["global_batch"] == ref[0]["global_batch"] == 8
    want, got = micro_losses_in_global_order(ref), micro_losses_in_global_order(res)
    assert sorted(got) == [2, 3, 4] and all(len(got[s]) == 2 for s in got)  # steps 3-5, two micro-batches each
    for s in got:
        assert got[s] == pytest.approx(want[s], rel=1e-6, abs=0), f"step {s + 1}: {got[s]} vs {want[s]}"
    # the learning rate of each logged step is the reference's (the schedule continued, not restarted)
    assert lr_after_resume(res[0]) == lr_after_resume(ref[0])
    for a, b in zip(res[0]["param_tensors"], ref[0]["param_tensors"], strict=True):
        assert torch.allclose(torch.tensor(a), torch.tensor(b), rtol=1e-5, atol=1e-7)
    # and the loss did not restart: the reference had moved away from its start by step 3
    assert want[2] != want[0]


@pytest.mark.slow
def test_sscl_from_2_to_3_ranks_keeps_the_global_batch_and_the_objective_buffers(worlds):
    ref = result(worlds, "sscl2", 2)
    res = result(worlds, "sscl3", 3)
    after = [r["after_resume"] for r in res]
    assert {(a["batch"], a["accum"]) for a in after} == {(2, 1)}  # 2 x 3 -> 3 x 2: global batch 6 kept
    assert res[0]["global_batch"] == ref[0]["global_batch"] == 6
    saved = torch.load(Path(worlds[0], "runs", "sscl2", "checkpoints", resize_world.RESUME_TAG,
                            "mp_rank_00_model_states.pt"), weights_only=False)["module"]
    buffers = after[0]["buffers"]
    assert any("log_z" in k for k in buffers) and any("cka" in k or "hsic" in k for k in buffers), sorted(buffers)
    for k, v in buffers.items():
        assert torch.equal(torch.as_tensor(v, dtype=saved["objective." + k].dtype), saved["objective." + k]), k
    assert all(a == after[0] for a in after)
    assert all(r["rc"] == 0 and r["steps"] == 5 for r in res)
    losses = [loss for _, loss in res[0]["micro_losses"]]
    assert len(losses) == 3 and all(math.isfinite(v) for v in losses)
    assert lr_after_resume(res[0]) == lr_after_resume(ref[0])
