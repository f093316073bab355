#!/usr/bin/env python
"""Write webdataset shards (+ DALI index files, manifest.json, classes.json) for distsnn.

  python launchers/make_shards.py folder   ROOT OUT [--split train]            # ROOT/<class>/<img>
  python launchers/make_shards.py imagenet ROOT OUT --split val --val-labels LOC_val_solution.csv
  python launchers/make_shards.py imagenet ROOT OUT --split val --val-labels ILSVRC2012_validation_ground_truth.txt --devkit-meta meta.mat
  python launchers/make_shards.py index    SHARD.tar ...                      # DALI index files only

Shards are globally shuffled with --seed, about --shard-mb each, written by --workers processes;
re-running skips finished shards. Point data.train_shards at OUT/train-*.tar.
"""
from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from distsnn.data import image_sources  # noqa: E402
from distsnn.data.index_file import write_index  # noqa: E402
from distsnn.data.manifest import load_classes  # noqa: E402
from distsnn.data.shard_writer import write_split  # noqa: E402


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
    pi = sub.add_parser("index")
    pi.add_argument("tars", nargs="+")
    a = ap.parse_args(argv)

    if a.cmd == "index":
        for t in a.tars:
            print(f"{t}: {write_index(t)} samples indexed")
        return 0
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


if __name__ == "__main__":
    sys.exit(main())
