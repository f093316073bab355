"""STCL on event data end to end: event-digits shards -> DALI (two views) -> Trainer (real DeepSpeed engines) in a
real 2-rank gloo world. The two views the engine receives are [T, B, 2, H, W] each, crops of the same event
sequence drawn independently per view, and STCL memorises the 10-sample set (the classification term of both
views falls to under half its start, every total finite). The world runs once (``train_world.case_events_stcl``)."""
from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

sys.path.insert(0, os.path.dirname(__file__))
import train_world  # noqa: E402
from train_helpers import free_port, make_teacher  # noqa: E402

W = 2
PAD = 2  # demo_events_baseline.yaml: data.augment.pad_crop


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(Path(__file__).resolve().parents[1] / ".torch_extensions"))
    tmp = tmp_path_factory.mktemp("events_stcl")
    (tmp / "spec.json").write_text(json.dumps({"cache": str(tmp / "cache"),  # the worker's base overrides want one
                                               "teacher": str(make_teacher(tmp / "teacher.safetensors"))}))
    mp.spawn(train_world.worker, args=(W, str(tmp), free_port(), [["events_stcl"]]), nprocs=W, join=True)
    recs = [json.loads((tmp / f"events_stcl.rank{r}.json").read_text()) for r in range(W)]
    views = [torch.load(tmp / f"events_stcl_views.rank{r}.pt") for r in range(W)]
    return recs, views


def shifts_between(a: np.ndarray, b: np.ndarray) -> list[tuple[int, int]]:
    """Every (dy, dx) with b[..., y, x] == a[..., y + dy, x + dx] wherever both are inside the window: b is the
    window of the same padded frames as a, moved by (dy, dx). Plain slicing, |dy|, |dx| <= 2 * PAD."""
    h, w = a.shape[-2:]
    out = []
    for dy in range(-2 * PAD, 2 * PAD + 1):
        for dx in range(-2 * PAD, 2 * PAD + 1):
            ys, xs = slice(max(0, -dy), min(h, h - dy)), slice(max(0, -dx), min(w, w - dx))
            ya, xa = slice(ys.start + dy, ys.stop + dy), slice(xs.start + dx, xs.stop + dx)
            if np.array_equal(b[..., ys, xs], a[..., ya, xa]):
                out.append((dy, dx))
    return out


@pytest.mark.slow
def test_two_event_views_are_independent_crops_of_one_sequence(world):
    _, views = world
    moves = []
    for rank_seen in views:
        assert len(rank_seen) == 3
        for call in rank_seen:
            v1, v2 = call["views"]
            assert v1.shape == v2.shape == (4, 5, 2, 32, 32) and v1.dtype == torch.float32  # [T, B, 2, H, W]
            assert not torch.equal(v1, v2)
            for j in range(v1.shape[1]):
                a, b = v1[:, j].numpy(), v2[:, j].numpy()
                assert a.sum() > 0 and (a[:, 0].sum() > 0) and (a[:, 1].sum() > 0)  # events of both polarities
                found = shifts_between(a, b)
                assert found, f"sample {j}: view 2 is no crop of the event sequence of view 1"
                moves.append(found[0])
    # independent per view: the relative crop varies from sample to sample, and is often not zero
    assert len(set(moves)) > 3 and sum(m != (0, 0) for m in moves) > len(moves) // 2, moves


@pytest.mark.slow
def test_stcl_memorises_event_sequences_with_a_finite_falling_loss(world):
    recs, _ = world
    assert all(r["rc"] == 0 and r["steps"] == train_world.EVENT_STEPS and r["skipped"] == 0 for r in recs)
    losses, ce = recs[0]["losses"], recs[0]["classification"]
    assert len(losses) == train_world.EVENT_STEPS and all(math.isfinite(v) for v in losses)
    first, last = np.mean(ce[:6]), np.mean(ce[-6:])
    assert last < 0.5 * first, (first, last, ce)
