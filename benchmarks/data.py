#!/usr/bin/env python
"""Images/s of the DALI CPU train pipeline vs webdataset + torchvision ``DataLoader`` (PIL), same
augmentation (decode, RandomResizedCrop 224, flip, normalise), same number of workers, on
ImageNet-sized JPEGs (500x375) the script makes. Goal: DALI >= 1.5x per core.

  OMP_NUM_THREADS=1 python benchmarks/data.py [--images 512] [--workers 2] [--batch 64] [--epochs 3]
"""
from __future__ import annotations

import argparse
import io
import os
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def make_jpegs(n: int, seed: int = 0) -> list[tuple[bytes, int]]:
    """Photo-like 500x375 JPEGs (smooth colour fields + noise, quality 90: ~110 KB like ImageNet's)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        low = rng.uniform(0, 255, (12, 16, 3)).astype(np.uint8)
        img = np.asarray(Image.fromarray(low).resize((500, 375), Image.BICUBIC), np.float32)
        img = np.clip(img + rng.normal(0, 18, img.shape), 0, 255).astype(np.uint8)
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, "JPEG", quality=90)
        out.append((buf.getvalue(), i % 1000))
    return out


def bench_dali(cfg, info, epochs: int) -> float:
    import torch

    from distsnn.data import build_train_loader

    loader = build_train_loader(cfg, info, 0, 1, seed=0, device=torch.device("cpu"))
    next(iter(loader))  # warm-up (thread pools, first allocation)
    n, t = 0, time.perf_counter()
    for _ in range(epochs):
        for b in loader:
            n += b.labels.numel()
    return n / (time.perf_counter() - t)


def bench_torchvision(files, batch: int, workers: int, epochs: int) -> float:
    import torch
    import webdataset as wds
    from torchvision import transforms as T

    tf = T.Compose([T.RandomResizedCrop(224, scale=(0.08, 1.0)), T.RandomHorizontalFlip(), T.ToTensor(),
                    T.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])
    ds = (wds.WebDataset(files, shardshuffle=False, empty_check=False).shuffle(256).decode("pil")
          .to_tuple("jpg", "cls").map_tuple(tf, lambda c: int(c)))
    loader = torch.utils.data.DataLoader(ds, batch_size=batch, num_workers=workers, drop_last=True,
                                         persistent_workers=True)
    next(iter(loader))
    n, t = 0, time.perf_counter()
    for _ in range(epochs):
        for _, y in loader:
            n += y.numel()
    return n / (time.perf_counter() - t)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=512)
    ap.add_argument("--workers", type=int, default=2, help="DALI threads = DataLoader workers")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=2)
    a = ap.parse_args(argv)
    import torch

    from distsnn.config.schema import DataConfig
    from distsnn.data import prepare_dataset
    from distsnn.data.shard_writer import write_split

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as d:
        t = time.perf_counter()
        samples = make_jpegs(a.images)
        # one shard per worker at least, so webdataset's worker split has work for every worker
        files = write_split(samples, [str(i) for i in range(1000)], d, "train", seed=0,
                            max_count=-(-a.images // (2 * a.workers)), progress=False)
        print(f"made {a.images} JPEGs ({np.mean([len(s) for s, _ in samples]) / 1e3:.0f} KB avg) in "
              f"{len(files)} shards, {time.perf_counter() - t:.1f} s")
        cfg = DataConfig(train_shards=os.path.join(d, "train-*.tar"), val_shards=os.path.join(d, "train-*.tar"),
                         image_size=224, batch_size=a.batch, num_threads=a.workers, prefetch=2,
                         shuffle_buffer=256, decode_device="cpu")
        info = prepare_dataset(cfg)
        dali, tv = [], []
        for _ in range(a.repeats):  # interleaved, so that machine noise hits both alike
            dali.append(bench_dali(cfg, info, a.epochs))
            tv.append(bench_torchvision(files, a.batch, a.workers, a.epochs))
    print(f"workers/threads: {a.workers}, batch {a.batch}, 224x224 RandomResizedCrop + flip + normalise")
    print(f"DALI CPU pipeline:                   {', '.join(f'{x:.0f}' for x in dali)} img/s")
    print(f"webdataset + torchvision DataLoader: {', '.join(f'{x:.0f}' for x in tv)} img/s")
    print(f"ratio (best of each): {max(dali) / max(tv):.2f}x per core (same cores for both)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
