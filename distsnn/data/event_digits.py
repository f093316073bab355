"""The offline event demo: scikit-learn's digits "recorded" the way N-MNIST was (Orchard et al. 2015: a DVS on a
pan-tilt unit makes three saccades in front of each MNIST digit on a monitor), written through the event shard path.

Each digit (8x8, 0..16) is upscaled bilinearly to ``DIGIT`` px, centred on a ``SENSOR`` x ``SENSOR`` dark canvas,
and moved along N-MNIST's triangle of three saccades (vertices ``SACCADE``, in pixels) in ``STEPS`` sub-pixel steps
each (bilinear shift). A pixel emits an ON (OFF) event each time its log intensity ``log(I + EPS)`` has risen
(fallen) by ``THRESHOLD`` since its last event (the DVS pixel model; the reference level moves by the threshold per
event). Events are timed at ``STEP_US`` per step (3 x 100 ms, as N-MNIST). The recordings are binned by event
count into ``TIMESTEPS`` frames of 32 x 32 with the split of ``digits.py`` (20 % val per class, fixed).
"""
from __future__ import annotations

import io
import os

import numpy as np

from .events import EVENT_DTYPE, EventSpec

VERSION = "v1"
SENSOR = 32
DIGIT = 24
SACCADE = ((0.0, 0.0), (1.5, 2.0), (3.0, 0.0))  # (dy, dx) triangle vertices; the path returns to the start
STEPS = 20            # sub-pixel steps per saccade
STEP_US = 5000        # 20 steps x 5 ms = 100 ms per saccade
THRESHOLD = 0.25      # log-intensity contrast threshold
EPS = 0.05            # log(I + EPS): the dark background is finite
TIMESTEPS = 4         # TCL's default T


def spec() -> EventSpec:
    return EventSpec(timesteps=TIMESTEPS, height=SENSOR, width=SENSOR, sensor_height=SENSOR,
                     sensor_width=SENSOR, binning="count", format="npy")


def canvases() -> tuple[np.ndarray, np.ndarray]:
    """All 1,797 digits as [N, SENSOR, SENSOR] float intensities in 0..1, and labels [N]."""
    from PIL import Image
    from sklearn.datasets import load_digits

    d = load_digits()
    out = np.zeros((len(d.images), SENSOR, SENSOR), np.float64)
    o = (SENSOR - DIGIT) // 2
    for i, img in enumerate(d.images):
        g = Image.fromarray((img / 16.0).astype(np.float32), "F").resize((DIGIT, DIGIT), Image.BILINEAR)
        out[i, o:o + DIGIT, o:o + DIGIT] = np.clip(np.asarray(g, np.float64), 0.0, 1.0)
    return out, d.target.astype(np.int64)


def shift_bilinear(img: np.ndarray, dy: float, dx: float) -> np.ndarray:
    """[N, H, W] moved by (dy, dx) pixels (content goes down/right for positive shifts), bilinear, zero fill."""
    def whole(a, sy, sx):  # integer shift with zero fill
        out = np.zeros_like(a)
        H, W = a.shape[-2:]
        out[:, max(sy, 0):H + min(sy, 0), max(sx, 0):W + min(sx, 0)] = \
            a[:, max(-sy, 0):H + min(-sy, 0), max(-sx, 0):W + min(-sx, 0)]
        return out

    iy, ix = int(np.floor(dy)), int(np.floor(dx))
    fy, fx = dy - iy, dx - ix
    return ((1 - fy) * (1 - fx) * whole(img, iy, ix) + (1 - fy) * fx * whole(img, iy, ix + 1)
            + fy * (1 - fx) * whole(img, iy + 1, ix) + fy * fx * whole(img, iy + 1, ix + 1))


def saccade_path() -> list[tuple[float, float]]:
    """(dy, dx) of every step after the start: 3 saccades x STEPS, back to (0, 0)."""
    v = list(SACCADE) + [SACCADE[0]]
    path = []
    for a, b in zip(v[:-1], v[1:]):
        for s in range(1, STEPS + 1):
            f = s / STEPS
            path.append((a[0] + f * (b[0] - a[0]), a[1] + f * (b[1] - a[1])))
    return path


def record(images: np.ndarray) -> list[np.ndarray]:
    """The DVS events (``EVENT_DTYPE``, time-sorted) of each image [N, H, W] moved along ``saccade_path``."""
    ref = np.log(images + EPS)  # each pixel's log intensity at its last event
    chunks = []  # per step: (image index, event) pairs, k events for a change of k thresholds
    for step, (dy, dx) in enumerate(saccade_path(), start=1):
        diff = np.log(shift_bilinear(images, dy, dx) + EPS) - ref
        n = np.trunc(diff / THRESHOLD).astype(np.int64)  # events this step: + ON, - OFF
        ref += n * THRESHOLD
        i, y, x = np.nonzero(n)
        k = np.abs(n[i, y, x])
        e = np.empty(int(k.sum()), EVENT_DTYPE)
        e["t"], e["x"], e["y"] = step * STEP_US, np.repeat(x, k), np.repeat(y, k)
        e["p"] = np.repeat(n[i, y, x] > 0, k)
        chunks.append((np.repeat(i, k), e))
    owner = np.concatenate([c[0] for c in chunks])
    ev = np.concatenate([c[1] for c in chunks])
    order = np.argsort(owner, kind="stable")  # steps were appended in time order: stays time-sorted
    return np.split(ev[order], np.cumsum(np.bincount(owner, minlength=len(images)))[:-1])


def npy_bytes(ev: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, ev, allow_pickle=False)
    return buf.getvalue()


def event_digits_dir(cache_dir: str, train_fraction: float = 1.0) -> str:
    """Shards of the event digits (built if absent; concurrent ranks safe, as ``digits.digits_dir``)."""
    from .digits import SPLIT_SEED, build_once, split_indices
    from .shard_writer import write_split

    sp = spec()
    root = os.path.join(os.path.expanduser(cache_dir),
                        f"event-digits-{VERSION}-{SENSOR}px-T{sp.timesteps}-frac{train_fraction:g}")

    def build(tmp: str) -> None:
        images, labels = canvases()
        tr, va = split_indices(labels, train_fraction)
        recs = dict(zip(tr + va, (npy_bytes(e) for e in record(images[tr + va]))))  # only what is kept
        classes = [str(c) for c in range(10)]
        for split, idx in (("train", tr), ("val", va)):
            write_split([(recs[i], int(labels[i])) for i in idx], classes, tmp, split, seed=SPLIT_SEED,
                        max_count=512, progress=False, events=sp)

    return build_once(root, build)
