"""Shard file patterns: globs (``/d/train-*.tar``) and brace ranges (``/d/train-{000000..001023}.tar``)."""
from __future__ import annotations

import glob
import os
import re

from distsnn.config import ConfigError

_BRACE = re.compile(r"\{([^{}]*)\}")


def expand_braces(pattern: str) -> list[str]:
    """All strings a brace pattern stands for: ``{a,b}`` lists and zero-padded ``{000..123}`` ranges.

    Expanded left to right, nesting not supported (webdataset's ``braceexpand`` subset)."""
    m = _BRACE.search(pattern)
    if m is None:
        return [pattern]
    body = m.group(1)
    rng = re.fullmatch(r"(\d+)\.\.(\d+)", body)
    if rng:
        lo, hi = rng.group(1), rng.group(2)
        width = len(lo) if lo.startswith("0") and len(lo) > 1 else 0
        items = [str(i).zfill(width) for i in range(int(lo), int(hi) + 1)]
    else:
        items = body.split(",")
    head, tail = pattern[: m.start()], pattern[m.end():]
    return [s for item in items for s in expand_braces(head + item + tail)]


def resolve_shards(pattern: str, key: str) -> list[str]:
    """Sorted existing files matching a glob or brace pattern; ``ConfigError`` naming ``key`` if none.

    A brace pattern is expanded first and every expansion globbed, so ``{a,b}/*.tar`` works. A brace
    expansion naming a file that does not exist is an error too: a silently missing shard would
    shrink the epoch."""
    if not pattern:
        raise ConfigError(f"{key}: no shard pattern given (set {key})")
    files: set[str] = set()
    for part in expand_braces(os.path.expanduser(pattern)):
        if glob.has_magic(part):
            files.update(glob.glob(part))
        elif os.path.isfile(part):
            files.add(part)
        elif "{" in pattern:
            raise ConfigError(f"{key}: pattern '{pattern}' names '{part}', which does not exist")
    files = {f for f in files if os.path.isfile(f)}
    if not files:
        raise ConfigError(f"{key}: pattern '{pattern}' matches no file")
    # a loose glob such as train-* also meets the .idx / .json beside each tar: shards are the tars
    tars = {f for f in files if f.endswith(".tar")}
    if not tars:
        raise ConfigError(f"{key}: pattern '{pattern}' matches no .tar file (found e.g. {sorted(files)[0]})")
    return sorted(tars)
