"""Finishing an epoch on another world size, with real DALI readers on real shards: the rest of the interrupted
epoch is read in the old ranks' order (the same augmented images as the uninterrupted run, no sample twice, at most
a remainder smaller than one new global batch skipped), a checkpoint taken during that replay resumes exactly, and
the next epoch is the new world's own."""
from __future__ import annotations

import collections
import os

import pytest
import torch
from data_helpers import data_cfg, ids_of, image_folder

from distsnn.config.schema import AugmentConfig
from distsnn.data import build_train_loader, prepare_dataset
from distsnn.data.image_sources import image_folder as scan_folder
from distsnn.data.shard_writer import write_split

CPU = torch.device("cpu")
N = 24
SEED = 11


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """24 train samples in 4 shards; solid colours whose id survives cropping (data_helpers)."""
    root = tmp_path_factory.mktemp("resize")
    image_folder(str(root / "src"), N)
    classes, samples = scan_folder(str(root / "src"))
    write_split(samples, classes, str(root / "shards"), "train", seed=3, max_count=7, progress=False)
    write_split(samples[:5], classes, str(root / "shards"), "val", seed=3, max_count=7, progress=False)
    d = str(root / "shards")
    return lambda batch: data_cfg(os.path.join(d, "train-*.tar"), os.path.join(d, "val-*.tar"), batch_size=batch,
                                  augment=AugmentConfig(min_scale=0.3))


def world_loaders(cfg, world, **kw):
    info = prepare_dataset(cfg)
    return [build_train_loader(cfg, info, r, world, seed=SEED, device=CPU, **kw.get("per_rank", lambda r: {})(r))
            for r in range(world)]


def global_batches(loaders, n=None):
    """The ranks in lockstep: each global batch is the ranks' batches in rank order, as (views [G, 3, H, W],
    labels [G]); stops at the epoch's end or after ``n``."""
    out, its = [], [iter(t) for t in loaders]
    while n is None or len(out) < n:
        parts = [next(it, None) for it in its]
        if parts[0] is None:
            assert all(p is None for p in parts), "ranks disagree on the epoch's length"
            break
        out.append((torch.cat([p.views[0] for p in parts]), torch.cat([p.labels for p in parts])))
    return out


def stream(batches):
    return (torch.cat([v for v, _ in batches]), torch.cat([lab for _, lab in batches])) if batches else None


# (old world, old batch) -> (new world, new batch); old steps done before the resize
CASES = [((2, 4), (1, 8), 1),   # shrink, per-rank batch doubled: global batch 8 kept
         ((1, 8), (2, 4), 1),   # grow: global batch 8 kept
         ((2, 4), (1, 4), 2),   # shrink keeping the per-rank batch (accumulation would keep the global batch)
         ((2, 3), (3, 2), 1),   # 2 -> 3, global batch 6 kept
         ((2, 4), (3, 4), 1)]   # 2 -> 3 with global batch 8 -> 12: 16 samples left, one batch of 12, 4 skipped


@pytest.mark.parametrize("old,new,done", CASES, ids=[f"{o[0]}x{o[1]}-{n[0]}x{n[1]}" for o, n, _ in CASES])
def test_the_interrupted_epoch_is_finished_in_the_old_order_each_sample_once(setup, old, new, done):
    (w, b), (w2, b2) = old, new
    ref = world_loaders(setup(b), w)
    ref_epoch = global_batches(ref)                      # the uninterrupted run's epoch, for comparison
    ref_views, ref_labels = stream(ref_epoch)
    assert sorted(ids_of(ref_views, setup(b).augment)[0]) == list(range(N))

    first = world_loaders(setup(b), w)
    before = global_batches(first, done)
    states = [t.state() for t in first]
    resized = world_loaders(setup(b2), w2, per_rank=lambda r: {"resize_from": states})
    after = global_batches(resized)
    assert {t.epoch for t in resized} == {1} and {t.pos for t in resized} == {0}

    left = N - done * w * b
    skipped = left % (w2 * b2)
    assert skipped < w2 * b2 and len(after) == left // (w2 * b2)
    views, labels = stream(before + after)
    # the same images, augmentations and labels as the uninterrupted run, in its order, up to the skipped tail
    assert torch.equal(views, ref_views[:N - skipped]) and torch.equal(labels, ref_labels[:N - skipped])
    ids = ids_of(views, setup(b).augment)[0]
    counts = collections.Counter(ids)
    assert max(counts.values()) == 1, "a sample was seen twice in the epoch"
    assert len(counts) == N - skipped
    assert skipped == (4 if new == (3, 4) else 0)
    if skipped:
        assert f"the last {skipped} samples skipped" in resized[0].resize_note

    # the next epoch is the new world's own: every sample once
    nxt = global_batches(resized)
    assert collections.Counter(ids_of(stream(nxt)[0], setup(b).augment)[0]) == collections.Counter(range(N))


def test_a_checkpoint_taken_while_finishing_the_old_epoch_resumes_exactly(setup):
    """2 x 2 -> 1 x 2: 1 step of the old world (5 of its global batches left = 10 new steps), 5 steps of the
    replay, state, then a fresh loader from it gives the same 5 last batches."""
    first = world_loaders(setup(2), 2)
    global_batches(first, 1)
    states = [t.state() for t in first]
    (r,) = world_loaders(setup(2), 1, per_rank=lambda _: {"resize_from": states})
    it = iter(r)
    for _ in range(5):
        next(it)
    state = r.state()
    expected = list(it)
    (again,) = world_loaders(setup(2), 1, per_rank=lambda _: {"checkpoint": state})
    got = list(again)
    assert len(got) == len(expected) == 5 and again.epoch == r.epoch == 1
    for e, g in zip(expected, got, strict=True):
        assert torch.equal(e.views[0], g.views[0]) and torch.equal(e.labels, g.labels)


def test_states_of_another_data_set_up_or_of_inconsistent_ranks_are_refused(setup):
    first = world_loaders(setup(4), 2)
    global_batches(first, 1)
    states = [t.state() for t in first]
    info = prepare_dataset(setup(4))
    with pytest.raises(Exception, match="old rank 1"):
        build_train_loader(setup(4), info, 0, 1, seed=SEED, device=CPU, resize_from=[states[0], states[0]])
    with pytest.raises(Exception, match="num_views"):
        build_train_loader(setup(4), info, 0, 1, seed=SEED, num_views=2, device=CPU, resize_from=states)
