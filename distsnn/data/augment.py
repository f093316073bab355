"""DALI augmentation graphs on decoded HWC uint8 RGB images (inside a pipeline definition).

Train view: random-resized crop (area in [min_scale, 1], aspect 3/4..4/3), random horizontal flip,
normalise to CHW float. The two views of STCL (TCL paper Sec. 4.3 and 5.1: "Color Jitter and Random Gray
Scale") add a brightness/contrast/saturation jitter of strength ``color_jitter`` and grayscale with
probability ``grayscale_p``; one-view runs have no colour step, so the loader refuses those two keys in a
one-view recipe (``distsnn/config/relevance.py``) rather than let them do nothing. Each call draws its own random
numbers, so calling it twice on one image gives two independent views (no explicit per-op seeds: equal seeds
would make the views identical).
"""
from __future__ import annotations

from nvidia.dali import fn, types


def normalise(images, aug, mirror=None, crop: int | None = None):
    """[B] HWC uint8 -> [B, 3, H, W] float32, ``(x/255 - mean)/std``; optional flip and centre crop."""
    kw = {"crop": (crop, crop), "crop_pos_x": 0.5, "crop_pos_y": 0.5} if crop else {}
    return fn.crop_mirror_normalize(
        images, dtype=types.FLOAT, output_layout="CHW", mirror=mirror if mirror is not None else 0,
        mean=[255.0 * m for m in aug.mean], std=[255.0 * s for s in aug.std], **kw)


def colour(images, aug):
    """Colour jitter + random grayscale (grayscale = saturation 0)."""
    j = aug.color_jitter
    sat = fn.random.uniform(range=(max(0.0, 1 - j), 1 + j)) if j > 0 else 1.0
    if aug.grayscale_p > 0:
        keep = 1.0 - fn.cast(fn.random.coin_flip(probability=aug.grayscale_p), dtype=types.FLOAT)
        sat = sat * keep
    if j <= 0 and aug.grayscale_p <= 0:
        return images
    kw = {}
    if j > 0:
        kw["brightness"] = fn.random.uniform(range=(max(0.0, 1 - j), 1 + j))
        kw["contrast"] = fn.random.uniform(range=(max(0.0, 1 - j), 1 + j))
    return fn.color_twist(images, saturation=sat, **kw)


def train_view(images, aug, size: int, with_colour: bool):
    """One augmented view: [B] decoded images -> [B, 3, size, size] float32."""
    x = fn.random_resized_crop(images, size=(size, size), random_area=(aug.min_scale, 1.0),
                               random_aspect_ratio=(3 / 4, 4 / 3))
    if with_colour:
        x = colour(x, aug)
    mirror = fn.random.coin_flip(probability=0.5) if aug.hflip else None
    return normalise(x, aug, mirror=mirror)


def val_view(images, aug, resize: int, size: int):
    """Deterministic: shorter side to ``resize`` (antialiased), centre crop ``size``, normalise."""
    x = fn.resize(images, resize_shorter=float(resize), antialias=True)
    return normalise(x, aug, crop=size)
