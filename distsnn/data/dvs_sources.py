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


DVSGESTURE_CLASSES = ("hand_clapping", "right_hand_wave", "left_hand_wave", "right_arm_clockwise",
                      "right_arm_counter_clockwise", "left_arm_clockwise", "left_arm_counter_clockwise", "arm_roll",
                      "air_drums", "air_guitar", "other_gestures")


def _trial_list(path: str) -> list[str]:
    if not os.path.isfile(path):
        raise ValueError(f"{path}: missing (DVS128 Gesture's official split lists its recordings)")
    with open(path) as f:
        return [line.strip() for line in f if line.strip()]


def _labels(csv_path: str) -> list[tuple[int, int, int]]:
    """``user*_labels.csv``: ``class,startTime_usec,endTime_usec``, classes 1..11 -> (label 0..10, start, end)."""
    if not os.path.isfile(csv_path):
        raise ValueError(f"{csv_path}: missing label file of its recording")
    rows = []
    with open(csv_path) as f:
        lines = [line.strip() for line in f if line.strip()]
    if not lines or lines[0].replace(" ", "") != "class,startTime_usec,endTime_usec":
        raise ValueError(f"{csv_path}: not a DVS128 Gesture label file (header 'class,startTime_usec,endTime_usec')")
    for k, line in enumerate(lines[1:], start=2):
        try:
            c, a, b = (int(v) for v in line.split(","))
        except ValueError:
            raise ValueError(f"{csv_path}: line {k}: {line!r} is not three integers") from None
        if not 1 <= c <= len(DVSGESTURE_CLASSES) or b <= a:
            raise ValueError(f"{csv_path}: line {k}: class {c} outside 1..11 or an empty time window [{a}, {b})")
        rows.append((c - 1, a, b))
    if not rows:
        raise ValueError(f"{csv_path}: no labelled trials")
    return rows


def dvs_gesture(root: str) -> tuple[list[str], dict[str, list[tuple[str, int]]]]:
    """DVS128 Gesture's official per-user split: ``root/trials_to_{train,test}.txt`` list ``user*_<light>.aedat``
    files (AEDAT 3.1); each file's ``<stem>_labels.csv`` cuts it into trials. Samples are ``(window source, label)``
    (``events.window_source``: the file's events in the trial's time window)."""
    from .events import window_source

    out: dict[str, list[tuple[str, int]]] = {}
    for split in ("train", "test"):
        out[split] = []
        for name in _trial_list(os.path.join(root, f"trials_to_{split}.txt")):
            path = os.path.join(root, name)
            if not os.path.isfile(path):
                raise ValueError(f"{path}: listed in trials_to_{split}.txt but missing")
            for label, a, b in _labels(os.path.splitext(path)[0] + "_labels.csv"):
                out[split].append((window_source(path, a, b), label))
    return list(DVSGESTURE_CLASSES), out
