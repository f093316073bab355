#!/usr/bin/env python
"""Integrity scan of webdataset shards: prints every problem as ``shard:key: problem``, exits 1 if any.

  python launchers/check_shards.py '/data/imagenet/train-{000000..001023}.tar' [--num-classes 1000] [--workers 8]

Checks: truncated or damaged tars, undecodable images, event frames (.evt) of the wrong size for events.json, missing or non-integer .cls, labels out of
range (--num-classes, else classes.json beside the shards), duplicate keys, index files that
disagree with their tar, counts and checksums that differ from manifest.json.
"""
from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from distsnn.config import ConfigError  # noqa: E402
from distsnn.data.integrity import scan_shards  # noqa: E402
from distsnn.data.shard_patterns import resolve_shards  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("patterns", nargs="+", help="shard files, globs or brace patterns")
    ap.add_argument("--num-classes", type=int, default=None)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--no-decode", action="store_true", help="skip decoding the images (faster)")
    ap.add_argument("--no-sha", action="store_true", help="skip the manifest checksum comparison")
    a = ap.parse_args(argv)
    try:
        files = sorted({f for p in a.patterns for f in resolve_shards(p, "patterns")})
    except ConfigError as e:
        print(f"check_shards: {e}", file=sys.stderr)
        return 2
    problems = scan_shards(files, a.num_classes, decode=not a.no_decode, workers=a.workers, check_sha=not a.no_sha)
    for p in problems:
        print(p)
    print(f"{len(files)} shards scanned, {len(problems)} problems", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
