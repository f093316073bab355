"""DALI train/val loaders on real shards, real DALI on the CPU: sharding over ranks, labels, views,
determinism and exact resume."""
from __future__ import annotations

import collections
import os

import pytest
import torch
from data_helpers import data_cfg, ids_of, image_folder

from distsnn.config.schema import AugmentConfig
from distsnn.data import build_train_loader, build_val_loader, prepare_dataset
from distsnn.data.image_sources import image_folder as scan_folder
from distsnn.data.shard_writer import write_split

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    """24 train samples in 4 shards, 23 val samples in 3 (not divisible by ranks x batch)."""
    root = tmp_path_factory.mktemp("data")
    labels = {}
    for split, n in (("train", 24), ("val", 23)):
        labels[split] = image_folder(str(root / f"src_{split}"), n)
        classes, samples = scan_folder(str(root / f"src_{split}"))
        write_split(samples, classes, str(root / "shards"), split, seed=3, max_count=7, progress=False)
    return str(root / "shards"), labels


def cfg_for(shards, **kw):
    d = shards[0]
    return data_cfg(os.path.join(d, "train-*.tar"), os.path.join(d, "val-{000000..000003}.tar"), **kw)


def test_prepare_dataset_counts_and_classes(shards):
    info = prepare_dataset(cfg_for(shards))
    assert (info.num_train, info.num_val, info.num_classes) == (24, 23, 3)
    assert len(info.train_files) == 4 and len(info.val_index) == 4


@pytest.mark.parametrize("world", [1, 2, 3])
def test_train_epoch_covers_every_sample_once_with_source_labels(shards, world):
    cfg = cfg_for(shards)
    info = prepare_dataset(cfg)
    loaders = [build_train_loader(cfg, info, r, world, seed=5, device=CPU) for r in range(world)]
    assert {len(t) for t in loaders} == {24 // world // 4}
    for epoch in range(2):
        seen = collections.Counter()
        for t in loaders:
            for b in t:
                assert b.views[0].shape == (4, 3, 8, 8) and b.views[0].dtype == torch.float32
                assert b.labels.dtype == torch.int64
                ids, colour_cls = ids_of(b.views[0], cfg.augment)
                assert b.labels.tolist() == colour_cls == [shards[1]["train"][i] for i in ids]
                seen.update(ids)
        assert seen == collections.Counter(range(24)), f"epoch {epoch}"


def test_train_len_equal_on_ranks_when_shards_are_uneven(shards):
    cfg = cfg_for(shards, batch_size=3)
    info = prepare_dataset(cfg)
    # 24 over 5 ranks: rank shares 4/5/5/5/5 -> every rank yields floor(4/3) = 1 step
    loaders = [build_train_loader(cfg, info, r, 5, seed=0, device=CPU) for r in range(5)]
    for _ in range(3):
        per_rank = [[ids_of(b.views[0], cfg.augment)[0] for b in t] for t in loaders]
        assert [len(x) for x in per_rank] == [1] * 5
        ids = [i for x in per_rank for b in x for i in b]
        assert len(ids) == len(set(ids)) == 15


def test_shuffle_is_seeded(shards):
    cfg = cfg_for(shards)
    info = prepare_dataset(cfg)

    def order(seed):
        return [i for b in build_train_loader(cfg, info, 0, 1, seed=seed, device=CPU) for i in ids_of(b.views[0], cfg.augment)[0]]

    assert order(1) == order(1)
    assert order(1) != order(2)


def test_two_views_differ_and_share_the_label(shards):
    cfg = cfg_for(shards, augment=AugmentConfig(min_scale=0.3))  # STCL colour jitter + grayscale on
    info = prepare_dataset(cfg)
    b = next(iter(build_train_loader(cfg, info, 0, 1, seed=0, num_views=2, device=CPU)))
    assert len(b.views) == 2 and b.views[0].shape == b.views[1].shape == (4, 3, 8, 8)
    assert not torch.allclose(b.views[0], b.views[1])
    # without colour changes both views of a solid image decode to the same sample id and class colour
    cfg = cfg_for(shards)
    b = next(iter(build_train_loader(cfg, info, 0, 1, seed=0, num_views=2, device=CPU)))
    assert ids_of(b.views[0], cfg.augment) == ids_of(b.views[1], cfg.augment)
    assert ids_of(b.views[0], cfg.augment)[1] == b.labels.tolist()


def test_val_every_sample_exactly_once_and_deterministic(shards):
    cfg = cfg_for(shards)
    info = prepare_dataset(cfg)

    def one_pass(loaders):
        out = []
        for v in loaders:
            for b in v:
                assert 0 < len(b.labels) <= 4
                ids, cls = ids_of(b.views[0], cfg.augment)
                assert b.labels.tolist() == cls == [shards[1]["val"][i] for i in ids]
                out.append(b.views[0])
        return out

    vals = [build_val_loader(cfg, info, r, 2, CPU) for r in range(2)]
    assert [len(v) for v in vals] == [3, 3]  # 11 and 12 samples in batches of 4
    first, second = one_pass(vals), one_pass(vals)
    again = one_pass([build_val_loader(cfg, info, r, 2, CPU) for r in range(2)])
    ids = [i for x in first for i in ids_of(x, cfg.augment)[0]]
    assert sorted(ids) == list(range(23))
    for a, b, c in zip(first, second, again, strict=True):
        assert torch.equal(a, b) and torch.equal(a, c)


@pytest.mark.parametrize("stop_after", [2, 6])  # mid-epoch, and exactly at an epoch boundary
def test_resume_from_state_gives_the_same_next_batches(shards, stop_after):
    cfg = cfg_for(shards, augment=AugmentConfig(min_scale=0.3))
    info = prepare_dataset(cfg)

    def batches(loader, n):
        out = []
        while len(out) < n:
            for b in loader:
                out.append(b)
                if len(out) == n:
                    break
        return out

    ref = build_train_loader(cfg, info, 1, 2, seed=7, num_views=2, device=CPU)  # 3 steps per epoch
    batches(ref, stop_after)
    state = ref.state()
    expected = batches(ref, 5)
    resumed = build_train_loader(cfg, info, 1, 2, seed=7, num_views=2, device=CPU, checkpoint=state)
    got = batches(resumed, 5)
    for e, g in zip(expected, got, strict=True):
        assert torch.equal(e.labels, g.labels)
        assert all(torch.equal(a, b) for a, b in zip(e.views, g.views, strict=True))


def test_resume_refuses_a_state_of_another_set_up(shards):
    cfg = cfg_for(shards)
    info = prepare_dataset(cfg)
    state = build_train_loader(cfg, info, 0, 2, seed=0, device=CPU).state()
    with pytest.raises(Exception, match="world|rank"):
        build_train_loader(cfg, info, 1, 2, seed=0, device=CPU, checkpoint=state)
