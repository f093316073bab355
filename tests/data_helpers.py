"""Small real data for the data tests: solid-colour JPEGs whose colour encodes the sample id.

Sample ``i`` of class ``c`` is coloured (10*i + 5, 40*c + 20, 128): random-resized crops and flips
keep a solid image solid, so the id can be read back from a normalised view ([B, 3, H, W])."""
from __future__ import annotations

import io
import os

import numpy as np
import torch
from PIL import Image

from distsnn.config.schema import AugmentConfig, DataConfig


def solid_jpeg(i: int, label: int, size: int = 16) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (size, size), (10 * i + 5, 40 * label + 20, 128)).save(buf, "JPEG", quality=95)
    return buf.getvalue()


def image_folder(root: str, n: int, num_classes: int = 3, png_every: int = 0) -> dict[int, int]:
    """Write ``n`` (<= 24) images as ``root/class_<c>/img_<i>.jpg`` (every ``png_every``-th as PNG); ``{id: label}``."""
    labels = {}
    for i in range(n):
        c = i % num_classes
        d = os.path.join(root, f"class_{c}")
        os.makedirs(d, exist_ok=True)
        if png_every and i % png_every == 0:
            Image.open(io.BytesIO(solid_jpeg(i, c))).save(os.path.join(d, f"img_{i:03d}.png"))
        else:
            with open(os.path.join(d, f"img_{i:03d}.jpg"), "wb") as f:
                f.write(solid_jpeg(i, c))
        labels[i] = c
    return labels


def data_cfg(train: str = "", val: str = "", **kw) -> DataConfig:
    base = dict(source="shards", train_shards=train, val_shards=val, image_size=8, val_resize=10, batch_size=4,
                num_threads=1, prefetch=2, shuffle_buffer=8, decode_device="cpu",
                augment=AugmentConfig(min_scale=0.3, color_jitter=0.0, grayscale_p=0.0))
    base.update(kw)
    return DataConfig(**base)


def ids_of(view: torch.Tensor, aug: AugmentConfig) -> tuple[list[int], list[int]]:
    """Sample ids and the class colour (label) of solid-colour images in a normalised view [B, 3, H, W]."""
    mean = torch.tensor(aug.mean).view(1, 3)
    std = torch.tensor(aug.std).view(1, 3)
    rgb = (view.mean(dim=(2, 3)) * std + mean) * 255.0
    ids = np.rint((rgb[:, 0].numpy() - 5) / 10).astype(int).tolist()
    cls = np.rint((rgb[:, 1].numpy() - 20) / 40).astype(int).tolist()
    return ids, cls
