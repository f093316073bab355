"""DALI augmentation graphs on decoded HWC uint8 RGB images (inside a pipeline definition).

Train view: random-resized crop (area in [min_scale, 1], aspect 3/4..4/3) or, with ``pad_crop`` > 0, the
CIFAR crop (pad with black, random ``size`` window), random horizontal flip, normalise to CHW float, then
Cutout when ``cutout`` > 0 (DeVries & Taylor 2017: a square at a uniform centre, clipped at the border, set to
0 after normalisation, i.e. the mean colour, as in their code; STCL uses it on CIFAR).

The two views of STCL (TCL paper Sec. 4.3 and 5.1: "Color Jitter and Random Gray Scale") add a brightness/contrast/saturation jitter of strength ``color_jitter`` and grayscale with
probability ``grayscale_p``; one-view runs have no colour step, so the loader refuses those two keys in a
one-view recipe (``distsnn/config/relevance.py``) rather than let them do nothing. Each call draws its own random
numbers, so calling it twice on one image gives two independent views (no explicit per-op seeds: equal seeds
would make the views identical).
"""
from __future__ import annotations

import nvidia.dali.math as dmath
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


def pad_crop(images, size: int, pad: int):
    """CIFAR random crop: a ``size`` x ``size`` window at a uniform integer offset in [-pad, H - size + pad] (and
    likewise in W); pixels outside the image are black (torchvision ``RandomCrop(size, padding=pad)``)."""
    hw = fn.cast(images.shape()[0:2], dtype=types.FLOAT)  # HWC: (H, W)
    u = fn.random.uniform(range=[0.0, 1.0], shape=[2])
    start = fn.cast(dmath.floor(u * (hw - size + 2 * pad + 1)) - pad, dtype=types.INT32)
    return fn.slice(images, start=start, shape=[size, size], axes=[0, 1], out_of_bounds_policy="pad", fill_values=0)


def cutout(x, size: int, length: int):
    """Cutout on [B, 3, size, size]: centre (cy, cx) uniform over the pixels, rows/cols [c - length//2,
    c + length - length//2) clipped to the image, set to 0 (DeVries & Taylor's ``Cutout``, one hole)."""
    c = dmath.floor(fn.random.uniform(range=[0.0, 1.0], shape=[2]) * size)
    lo = dmath.clamp(c - length // 2, 0.0, float(size))
    hi = dmath.clamp(c + (length - length // 2), 0.0, float(size))
    return fn.erase(x, anchor=lo, shape=hi - lo, axis_names="HW", fill_value=0.0)


def train_view(images, aug, size: int, with_colour: bool):
    """One augmented view: [B] decoded images -> [B, 3, size, size] float32."""
    if aug.pad_crop > 0:
        x = pad_crop(images, size, aug.pad_crop)
    else:
        x = fn.random_resized_crop(images, size=(size, size), random_area=(aug.min_scale, 1.0),
                                   random_aspect_ratio=(3 / 4, 4 / 3))
    if with_colour:
        x = colour(x, aug)
    mirror = fn.random.coin_flip(probability=0.5) if aug.hflip else None
    x = normalise(x, aug, mirror=mirror)
    return cutout(x, size, aug.cutout) if aug.cutout > 0 else x


def val_view(images, aug, resize: int, size: int):
    """Deterministic: shorter side to ``resize`` (antialiased), centre crop ``size``, normalise."""
    x = fn.resize(images, resize_shorter=float(resize), antialias=True)
    return normalise(x, aug, crop=size)


def event_frames(raw, shape):
    """``.evt`` bytes -> [T, 2, H, W] float32 event counts (layout FCHW: frames, polarity, rows, columns)."""
    return fn.cast(fn.reshape(raw, shape=list(shape), layout="FCHW"), dtype=types.FLOAT)


def event_train_view(frames, aug, size: int):
    """Event augmentation of the DVS papers (TCL Sec. 5.1: random crop; TET/SpikingJelly: + horizontal flip):
    the same ``size`` window at a uniform offset in [-pad_crop, H - size + pad_crop] for all T frames (zeros
    outside), flipped left-right with p = 0.5 under ``hflip``. Counts stay raw (no normalisation, no colour)."""
    hw = fn.cast(frames.shape()[2:4], dtype=types.FLOAT)  # FCHW: (H, W)
    u = fn.random.uniform(range=[0.0, 1.0], shape=[2])
    pad = aug.pad_crop
    start = fn.cast(dmath.floor(u * (hw - size + 2 * pad + 1)) - pad, dtype=types.INT32)
    x = fn.slice(frames, start=start, shape=[size, size], axes=[2, 3], out_of_bounds_policy="pad", fill_values=0)
    if aug.hflip:
        x = fn.flip(x, horizontal=fn.random.coin_flip(probability=0.5))
    return x


def event_val_view(frames, shape, size: int):
    """Deterministic: the centre ``size`` x ``size`` window of every frame (all of it when size = H = W)."""
    _, _, h, w = shape
    return fn.slice(frames, start=[(h - size) // 2, (w - size) // 2], shape=[size, size], axes=[2, 3],
                    out_of_bounds_policy="pad", fill_values=0)
