"""The embedded digits data set: real sklearn digits turned into shards, built once, concurrently safe."""
from __future__ import annotations

import collections
import os
import subprocess
import sys

import torch
from data_helpers import data_cfg
from sklearn.datasets import load_digits

from distsnn.data import build_train_loader, build_val_loader, prepare_dataset
from distsnn.data.digits import split_indices


def test_digits_split_is_fixed_stratified_and_fraction_is_a_subset():
    y = load_digits().target
    tr, va = split_indices(y)
    assert len(tr) + len(va) == 1797 and not set(tr) & set(va)
    for c in range(10):  # about 20 % of every class is val
        assert abs((y[va] == c).sum() - 0.2 * (y == c).sum()) <= 1
    tr_half, va_half = split_indices(y, 0.5)
    assert va_half == va and set(tr_half) < set(tr)
    assert abs(len(tr_half) - len(tr) / 2) <= 10
    assert split_indices(y) == (tr, va)


def test_digits_shards_built_once_by_concurrent_ranks_and_loadable(tmp_path):
    cache = str(tmp_path / "cache")
    code = f"from distsnn.data.digits import digits_dir; print(digits_dir({cache!r}))"
    procs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate()[0].strip() for p in procs]
    assert [p.returncode for p in procs] == [0, 0] and outs[0] == outs[1]
    assert not [p for p in os.listdir(cache) if p.startswith(".digits-build-")]
    cfg = data_cfg(source="digits", cache_dir=cache, image_size=16, val_resize=16, batch_size=64)
    info = prepare_dataset(cfg)
    assert (info.num_train + info.num_val, info.num_classes) == (1797, 10)
    val_labels = collections.Counter()
    for r in range(2):
        for b in build_val_loader(cfg, info, r, 2, torch.device("cpu")):
            val_labels.update(b.labels.tolist())
    y = load_digits().target
    _, va = split_indices(y)
    assert val_labels == collections.Counter(y[va].tolist())
    b = next(iter(build_train_loader(cfg, info, 0, 1, seed=0, device=torch.device("cpu"))))
    assert b.views[0].shape == (64, 3, 16, 16) and b.labels.max() < 10
