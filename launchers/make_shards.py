#!/usr/bin/env python
"""Write webdataset shards (+ DALI index files, manifest.json, classes.json) for distsnn.

  python launchers/make_shards.py folder   ROOT OUT [--split train]            # ROOT/<class>/<img>
  python launchers/make_shards.py imagenet ROOT OUT --split val --val-labels LOC_val_solution.csv
  python launchers/make_shards.py imagenet ROOT OUT --split val --val-labels ILSVRC2012_validation_ground_truth.txt --devkit-meta meta.mat
  python launchers/make_shards.py cifar    cifar-100-python.tar.gz OUT [--labels coarse]  # train + test, lossless PNG
  python launchers/make_shards.py cifar10dvs ROOT OUT --timesteps 4 --size 48  # ROOT/<class>/*.aedat -> train + val
  python launchers/make_shards.py dvsgesture ROOT OUT --timesteps 16 --size 128  # DvsGesture/: official train + test
  python launchers/make_shards.py index    SHARD.tar ...                      # DALI index files only

Shards are globally shuffled with --seed, about --shard-mb each, written by --workers processes;
re-running skips finished shards. Point data.train_shards at OUT/train-*.tar.
"""
from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from distsnn.data import cifar, image_sources  # noqa: E402
from distsnn.data.index_file import write_index  # noqa: E402
from distsnn.data.manifest import load_classes  # noqa: E402
from distsnn.data.shard_writer import write_split  # noqa: E402


def writer_args(p: argparse.ArgumentParser, max_count: int) -> None:
    """The shard writer's options shared by the archive and event modes."""
    p.add_argument("--seed", type=int, default=0, help="global shuffle seed")
    p.add_argument("--max-count", type=int, default=max_count, help="at most this many samples per shard")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    p.add_argument("--no-progress", action="store_true")


def event_args(p: argparse.ArgumentParser, timesteps: int, size: int, t_help: str, size_help: str) -> None:
    """ROOT, OUT and the binning of an event-recording mode."""
    p.add_argument("root")
    p.add_argument("out")
    p.add_argument("--timesteps", type=int, default=timesteps, help=t_help)
    p.add_argument("--size", type=int, default=size, help=size_help)
    p.add_argument("--binning", choices=("count", "time"), default="count",
                   help="T slices of equal event count (SpikingJelly split_by='number') or equal duration")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name in ("folder", "imagenet"):
        p = sub.add_parser(name)
        p.add_argument("root")
        p.add_argument("out")
        p.add_argument("--split", default="train", help="split name; shards are OUT/<split>-NNNNNN.tar")
        p.add_argument("--seed", type=int, default=0, help="global shuffle seed")
        p.add_argument("--shard-mb", type=float, default=256.0, help="target shard size in MB")
        p.add_argument("--max-count", type=int, default=0, help="at most this many samples per shard (0 = no limit)")
        p.add_argument("--workers", type=int, default=os.cpu_count() or 1)
        p.add_argument("--verify", action="store_true", help="decode every source image while writing")
        p.add_argument("--no-progress", action="store_true")
        if name == "imagenet":
            p.add_argument("--val-labels", help="flat val: LOC_val_solution.csv or the devkit ground-truth file")
            p.add_argument("--devkit-meta", help="devkit data/meta.mat (with the devkit ground truth)")
        else:
            p.add_argument("--classes-from", help="a classes.json fixing the label order (e.g. the train split's)")
    pc = sub.add_parser("cifar", help="CIFAR-10/100 python archive (.tar.gz or extracted folder) -> train + test shards")
    pc.add_argument("archive", help="cifar-10-python.tar.gz, cifar-100-python.tar.gz, or their extracted folder")
    pc.add_argument("out")
    pc.add_argument("--labels", choices=("fine", "coarse"), default="fine",
                    help="CIFAR-100: the 100 fine classes (default) or the 20 coarse superclasses")
    writer_args(pc, max_count=10000)
    pd = sub.add_parser("cifar10dvs", help="CIFAR10-DVS (ROOT/<class>/*.aedat, AEDAT 2.0) -> event frame shards, "
                        "train + val of a fixed seeded per-class split")
    event_args(pd, timesteps=4, size=48, t_help="T frames per recording (TCL: 4; SSCL: 10)",
               size_help="frame side: the 128 px sensor binned to this (TCL: 48)")
    pd.add_argument("--split-seed", type=int, default=0, help="seed of the per-class 9:1 split (keep it fixed)")
    pd.add_argument("--val-fraction", type=float, default=0.1)
    writer_args(pd, max_count=2000)
    pg = sub.add_parser("dvsgesture", help="DVS128 Gesture (ROOT = the DvsGesture folder: user*.aedat, AEDAT 3.1, "
                        "with *_labels.csv and trials_to_train/test.txt) -> event frame shards, official split")
    event_args(pg, timesteps=16, size=128, t_help="T frames per trial",
               size_help="frame side: the 128 px sensor binned to this")
    writer_args(pg, max_count=500)
    pi = sub.add_parser("index")
    pi.add_argument("tars", nargs="+")
    a = ap.parse_args(argv)

    if a.cmd == "index":
        for t in a.tars:
            print(f"{t}: {write_index(t)} samples indexed")
        return 0
    if a.cmd == "cifar":
        return _cifar(a)
    if a.cmd == "cifar10dvs":
        return _cifar10dvs(a)
    if a.cmd == "dvsgesture":
        return _dvsgesture(a)
    try:
        if a.cmd == "imagenet":
            classes, samples = image_sources.imagenet(a.root, a.split, a.val_labels, a.devkit_meta)
        else:
            fixed = load_classes(os.path.dirname(a.classes_from)) if a.classes_from else load_classes(a.out)
            classes, samples = image_sources.image_folder(a.root, fixed)
    except (ValueError, OSError) as e:
        print(f"make_shards: {e}", file=sys.stderr)
        return 2
    files = write_split(samples, classes, a.out, a.split, seed=a.seed, shard_bytes=int(a.shard_mb * 2**20),
                        max_count=a.max_count, workers=a.workers, verify=a.verify, progress=not a.no_progress)
    print(f"{len(samples)} samples, {len(classes)} classes -> {len(files)} shards "
          f"{os.path.join(a.out, a.split + '-*.tar')}")
    return 0


def _cifar(a) -> int:
    """Both splits of a CIFAR archive as PNG shards (lossless): OUT/train-*.tar and OUT/test-*.tar."""
    try:
        variant, classes, splits = cifar.load(a.archive, a.labels)
    except (ValueError, OSError) as e:
        print(f"make_shards: {e}", file=sys.stderr)
        return 2
    for split, (images, labels) in splits.items():
        files = write_split(cifar.samples(images, labels), classes, a.out, split, seed=a.seed, shard_bytes=1 << 40,
                            max_count=a.max_count, workers=a.workers, progress=not a.no_progress, keep_png=True)
        print(f"{variant} {split}: {len(labels)} samples, {len(classes)} classes ({a.labels}) -> {len(files)} "
              f"shards {os.path.join(a.out, split + '-*.tar')}")
    return 0


def _cifar10dvs(a) -> int:
    """CIFAR10-DVS recordings binned once into [T, 2, size, size] frames: OUT/train-*.tar and OUT/val-*.tar, the
    split's file lists and the binning in OUT/events.json."""
    from distsnn.data.dvs_sources import cifar10dvs_split
    from distsnn.data.events import EventSpec, write_event_info

    try:
        spec = EventSpec(timesteps=a.timesteps, height=a.size, width=a.size, sensor_height=128, sensor_width=128,
                         binning=a.binning, format="aedat2")
        classes, splits = cifar10dvs_split(a.root, a.split_seed, a.val_fraction)
        for split, samples in splits.items():
            files = write_split(samples, classes, a.out, split, seed=a.seed, shard_bytes=1 << 40,
                                max_count=a.max_count, workers=a.workers, progress=not a.no_progress, events=spec)
            print(f"CIFAR10-DVS {split}: {len(samples)} recordings -> {len(files)} shards "
                  f"{os.path.join(a.out, split + '-*.tar')} (T={a.timesteps}, {a.size}x{a.size}, by {a.binning})")
        rel = {s: [os.path.relpath(p, a.root) for p, _ in smp] for s, smp in splits.items()}
        write_event_info(a.out, spec, {"split": {"dataset": "CIFAR10-DVS", "seed": a.split_seed,
                                                 "val_fraction": a.val_fraction, **rel}})
    except (ValueError, OSError) as e:
        print(f"make_shards: {e}", file=sys.stderr)
        return 2
    return 0


def _dvsgesture(a) -> int:
    """DVS128 Gesture trials binned once into [T, 2, size, size] frames: OUT/train-*.tar and OUT/test-*.tar."""
    from distsnn.data.dvs_sources import dvs_gesture
    from distsnn.data.events import EventSpec

    try:
        spec = EventSpec(timesteps=a.timesteps, height=a.size, width=a.size, sensor_height=128, sensor_width=128,
                         binning=a.binning, format="aedat3")
        classes, splits = dvs_gesture(a.root)
        for split, samples in splits.items():
            files = write_split(samples, classes, a.out, split, seed=a.seed, shard_bytes=1 << 40,
                                max_count=a.max_count, workers=a.workers, progress=not a.no_progress, events=spec)
            print(f"DVS128 Gesture {split}: {len(samples)} trials -> {len(files)} shards "
                  f"{os.path.join(a.out, split + '-*.tar')} (T={a.timesteps}, {a.size}x{a.size}, by {a.binning})")
    except (ValueError, OSError) as e:
        print(f"make_shards: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
