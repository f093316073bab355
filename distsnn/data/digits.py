"""The embedded demo dataset: scikit-learn's ``digits`` (1,797 real 8x8 handwritten digits, shipped
offline) as webdataset shards of small RGB JPEGs, built on first use under the cache directory.

Fixed split (independent of the run seed, so every run sees the same data): per class, 20 % of the
images (seeded permutation, seed 0) are val, the rest train. ``train_fraction`` < 1 keeps that
fraction of each class's train images (at least one; seeded, seed 0, a prefix of one permutation, so
a smaller fraction is a subset of a larger one); val is always whole.
"""
from __future__ import annotations

import io
import os
import shutil
import tempfile

import numpy as np

VERSION = "v1"
IMAGE_SIZE = 32
VAL_FRACTION = 0.2
SPLIT_SEED = 0


def digit_jpegs(size: int = IMAGE_SIZE) -> tuple[list[bytes], np.ndarray]:
    """All 1,797 digits as ``size``x``size`` RGB JPEG bytes (bilinear upscale of 0..16 to 0..255) and labels [N]."""
    from PIL import Image
    from sklearn.datasets import load_digits

    d = load_digits()
    out = []
    for img in d.images:  # [8, 8] float in 0..16
        g = Image.fromarray(np.clip(img * 255.0 / 16.0, 0, 255).astype(np.uint8), "L")
        g = g.resize((size, size), Image.BILINEAR).convert("RGB")
        buf = io.BytesIO()
        g.save(buf, "JPEG", quality=95)
        out.append(buf.getvalue())
    return out, d.target.astype(np.int64)


def split_indices(labels: np.ndarray, train_fraction: float = 1.0) -> tuple[list[int], list[int]]:
    """Train and val sample indices: the fixed per-class split, train subsampled per class."""
    rng = np.random.default_rng(SPLIT_SEED)
    train, val = [], []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        n_val = int(round(len(idx) * VAL_FRACTION))
        val += idx[:n_val].tolist()
        rest = idx[n_val:]
        keep = max(1, int(round(len(rest) * train_fraction)))
        train += rest[:keep].tolist()
    return sorted(train), sorted(val)


def build_once(root: str, build) -> str:
    """``root`` (a shard directory with a manifest.json), made by ``build(tmp_dir)`` if absent; safe when several
    ranks call it at once: built in a private temp dir and renamed into place. The rename is atomic, so a concurrent
    rank either wins or finds the finished directory; nobody ever sees half-written shards."""
    if os.path.exists(os.path.join(root, "manifest.json")):
        return root
    os.makedirs(os.path.dirname(root), exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(root)}-build-", dir=os.path.dirname(root))
    try:
        build(tmp)
        try:
            os.rename(tmp, root)
        except OSError:
            if not os.path.exists(os.path.join(root, "manifest.json")):
                raise
    finally:
        if os.path.exists(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
    return root


def digits_dir(cache_dir: str, train_fraction: float = 1.0) -> str:
    """Shards of the digits set (built if absent); safe when several ranks call it at once."""
    root = os.path.join(os.path.expanduser(cache_dir), f"digits-{VERSION}-{IMAGE_SIZE}px-frac{train_fraction:g}")

    def build(tmp: str) -> None:
        from .shard_writer import write_split

        jpegs, labels = digit_jpegs()
        tr, va = split_indices(labels, train_fraction)
        classes = [str(c) for c in range(10)]
        for split, idx in (("train", tr), ("val", va)):
            write_split([(jpegs[i], int(labels[i])) for i in idx], classes, tmp, split, seed=SPLIT_SEED,
                        max_count=512, progress=False)

    return build_once(root, build)
