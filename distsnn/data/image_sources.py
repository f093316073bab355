"""Where labelled images come from: an ImageFolder tree or the ImageNet (ILSVRC-2012) layout.

Every function returns ``(classes, samples)``: sorted class names (label = position) and
``[(path, label), ...]`` in a deterministic (sorted) order; the shard writer shuffles them.
"""
from __future__ import annotations

import csv
import os

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp", ".gif")


def _images(folder: str) -> list[str]:
    return sorted(
        os.path.join(folder, f) for f in os.listdir(folder)
        if f.lower().endswith(IMAGE_EXTS) and os.path.isfile(os.path.join(folder, f)))


def image_folder(root: str, classes: list[str] | None = None) -> tuple[list[str], list[tuple[str, int]]]:
    """``<root>/<class>/<img>``; ``classes`` fixes the label order (e.g. the train split's for val)."""
    found = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))
    if not found:
        raise ValueError(f"{root}: no class folders (expected <root>/<class>/<image>)")
    classes = list(classes) if classes is not None else found
    index = {c: i for i, c in enumerate(classes)}
    unknown = [d for d in found if d not in index]
    if unknown:
        raise ValueError(f"{root}: class folders not among the {len(classes)} known classes: {unknown[:5]}")
    samples = [(p, index[c]) for c in found for p in _images(os.path.join(root, c))]
    if not samples:
        raise ValueError(f"{root}: class folders hold no images ({', '.join(IMAGE_EXTS)})")
    return classes, samples


def _val_labels_kaggle(csv_path: str) -> dict[str, str]:
    """``LOC_val_solution.csv`` (Kaggle): ``ImageId,PredictionString`` whose first token is the WNID."""
    out = {}
    with open(csv_path, newline="") as f:
        for row in csv.DictReader(f):
            out[row["ImageId"]] = row["PredictionString"].split()[0]
    return out


def _val_labels_devkit(gt_path: str, meta_path: str) -> list[str]:
    """Devkit ``ILSVRC2012_validation_ground_truth.txt`` (ILSVRC IDs, one per image in file-name order)
    mapped to WNIDs with the devkit's ``meta.mat`` (IDs are not in WNID order)."""
    from scipy.io import loadmat  # scipy comes with scikit-learn

    synsets = loadmat(meta_path, squeeze_me=True)["synsets"]
    id_to_wnid = {int(s["ILSVRC2012_ID"]): str(s["WNID"]) for s in synsets}
    with open(gt_path) as f:
        ids = [int(line) for line in f if line.strip()]
    missing = sorted({i for i in ids if i not in id_to_wnid})
    if missing:
        raise ValueError(f"{gt_path}: ILSVRC2012 IDs {missing[:5]} not in {meta_path}")
    return [id_to_wnid[i] for i in ids]


def imagenet(root: str, split: str, val_labels: str | None = None, devkit_meta: str | None = None
             ) -> tuple[list[str], list[tuple[str, int]]]:
    """ILSVRC-2012 under ``root``: ``train/<wnid>/*.JPEG``; ``val/`` either in class folders or flat
    (``ILSVRC2012_val_%08d.JPEG``) with ``val_labels`` = Kaggle ``LOC_val_solution.csv`` or the devkit
    ground-truth file (+ ``devkit_meta`` = its ``meta.mat``). Classes are the sorted train WNIDs."""
    train_dir = os.path.join(root, "train")
    classes = sorted(d for d in os.listdir(train_dir) if os.path.isdir(os.path.join(train_dir, d)))
    if split == "train":
        return image_folder(train_dir)
    if split != "val":
        raise ValueError(f"split: {split!r} is not 'train' or 'val'")
    val_dir = os.path.join(root, "val")
    if any(os.path.isdir(os.path.join(val_dir, d)) for d in os.listdir(val_dir)):
        return image_folder(val_dir, classes)
    if not val_labels:
        raise ValueError(f"{val_dir}: flat val folder needs --val-labels (LOC_val_solution.csv or the devkit ground truth)")
    index = {c: i for i, c in enumerate(classes)}
    files = _images(val_dir)
    if val_labels.endswith(".csv"):
        table = _val_labels_kaggle(val_labels)
        stems = [os.path.splitext(os.path.basename(p))[0] for p in files]
        lost = [s for s in stems if s not in table]
        if lost:
            raise ValueError(f"{val_labels}: no label for {len(lost)} val images, e.g. {lost[:3]}")
        wnids = [table[s] for s in stems]
    else:
        if not devkit_meta:
            raise ValueError(f"{val_labels}: the devkit ground truth needs --devkit-meta (data/meta.mat)")
        wnids = _val_labels_devkit(val_labels, devkit_meta)
        if len(wnids) != len(files):
            raise ValueError(f"{val_labels}: {len(wnids)} labels for {len(files)} images in {val_dir}")
    bad = sorted({w for w in wnids if w not in index})
    if bad:
        raise ValueError(f"{val_labels}: WNIDs {bad[:5]} have no train class folder in {train_dir}")
    return classes, [(p, index[w]) for p, w in zip(files, wnids)]
