"""Where labelled event recordings come from: the released CIFAR10-DVS tree, with its fixed seeded split.

CIFAR10-DVS (Li et al. 2017) ships ``<class>/cifar10_<class>_<i>.aedat`` (jAER AEDAT 2.0, 1,000 per class) and no
train/test split. ``cifar10dvs_split`` draws one: per class (sorted names), the sorted file names permuted with
NumPy's PCG64 seeded by ``seed``, the first ``round(n * val_fraction)`` are val. PCG64 and the sort are the same on
every machine, so the split is too; the file lists go into ``events.json``.
"""
from __future__ import annotations

import os

import numpy as np

CIFAR10DVS_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def cifar10dvs_split(root: str, seed: int = 0, val_fraction: float = 0.1
                     ) -> tuple[list[str], dict[str, list[tuple[str, int]]]]:
    """``(classes, {"train": [(path, label)], "val": [...]})`` of a CIFAR10-DVS tree ``root/<class>/*.aedat``."""
    found = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))
    unknown = [d for d in found if d not in CIFAR10DVS_CLASSES]
    missing = [c for c in CIFAR10DVS_CLASSES if c not in found]
    if unknown or missing:
        raise ValueError(f"{root}: expected the 10 CIFAR10-DVS class folders {list(CIFAR10DVS_CLASSES)}; "
                         f"missing {missing}, unexpected {unknown}")
    rng = np.random.default_rng(seed)
    out: dict[str, list[tuple[str, int]]] = {"train": [], "val": []}
    for label, c in enumerate(CIFAR10DVS_CLASSES):
        files = sorted(f for f in os.listdir(os.path.join(root, c)) if f.endswith(".aedat"))
        if not files:
            raise ValueError(f"{os.path.join(root, c)}: no .aedat recordings")
        order = rng.permutation(len(files))
        n_val = int(round(len(files) * val_fraction))
        for k, i in enumerate(order):
            out["val" if k < n_val else "train"].append((os.path.join(root, c, files[i]), label))
    for split in out:
        out[split].sort()
    return list(CIFAR10DVS_CLASSES), out
