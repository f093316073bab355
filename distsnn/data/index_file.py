"""DALI webdataset index files (``<shard>.idx``), the format of DALI's ``wds2idx`` (v1.2):

``v1.2 <num_samples>`` then one line per sample: ``<ext> <data offset> <size> <member name>`` for each
of its members. Written here in-process from the tar headers (no ``tar`` subprocess per shard);
``tests/test_data_shards.py`` checks the output equals ``wds2idx``'s byte for byte.
"""
from __future__ import annotations

import os
import tarfile

INDEX_VERSION = "v1.2"


def index_path_for(tar_path: str) -> str:
    """``/d/train-000001.tar`` -> ``/d/train-000001.idx``."""
    base, _ = os.path.splitext(tar_path)
    return base + ".idx"


def split_member(name: str) -> tuple[str, str]:
    """``dir/abc.seg.jpg`` -> (``dir/abc``, ``seg.jpg``): webdataset keys end at the first dot of the basename."""
    dot = name.find(".", name.rfind("/") + 1)
    return (name, "") if dot < 0 else (name[:dot], name[dot + 1:])


def tar_samples(tar_path: str) -> list[tuple[str, list[tuple[str, int, int, str]]]]:
    """Samples of a tar in file order: ``(key, [(ext, data offset, size, member name), ...])``.

    Raises ``tarfile.ReadError`` (or ``EOFError``) on a damaged archive."""
    samples: list[tuple[str, list]] = []
    with tarfile.open(tar_path, "r:") as tf:
        for m in tf:
            if not m.isreg():
                continue
            key, ext = split_member(m.name)
            if not key or key.endswith("/"):
                continue  # hidden files, as wds2idx does
            if not samples or samples[-1][0] != key:
                samples.append((key, []))
            samples[-1][1].append((ext, m.offset_data, m.size, m.name))
    return samples


def write_index(tar_path: str, idx_path: str | None = None) -> int:
    """Write the DALI index of ``tar_path`` (atomically: temp file + rename); returns the sample count."""
    idx_path = idx_path or index_path_for(tar_path)
    samples = tar_samples(tar_path)
    if not samples:
        raise ValueError(f"{tar_path}: no samples, cannot index an empty shard")
    lines = [f"{INDEX_VERSION} {len(samples)}"]
    lines += [" ".join(f"{e} {o} {s} {n}" for e, o, s, n in comps) for _, comps in samples]
    tmp = f"{idx_path}.tmp-{os.getpid()}"
    with open(tmp, "w") as f:
        f.write("\n".join(lines) + "\n")
    os.replace(tmp, idx_path)
    return len(samples)


def read_index(idx_path: str) -> list[tuple[str, dict[str, tuple[int, int]]]]:
    """Samples of an index file: ``(key, {ext: (offset, size)})``; ``ValueError`` naming the file if malformed."""
    with open(idx_path) as f:
        head = f.readline().split()
        if len(head) != 2 or head[0] != INDEX_VERSION or not head[1].isdigit():
            raise ValueError(f"{idx_path}: not a {INDEX_VERSION} DALI index (header {' '.join(head)!r})")
        out = []
        for line in f:
            parts = line.split()
            if len(parts) % 4 or not parts:
                raise ValueError(f"{idx_path}: malformed line {line.strip()!r}")
            comps = {}
            for i in range(0, len(parts), 4):
                ext, off, size, name = parts[i:i + 4]
                comps[ext] = (int(off), int(size))
            out.append((split_member(parts[3])[0], comps))
    if len(out) != int(head[1]):
        raise ValueError(f"{idx_path}: header says {head[1]} samples, file lists {len(out)}")
    return out


def index_count(idx_path: str) -> int:
    """Sample count from an index file's header line (cheap)."""
    with open(idx_path) as f:
        head = f.readline().split()
    if len(head) != 2 or not head[1].isdigit():
        raise ValueError(f"{idx_path}: not a DALI index (header {' '.join(head)!r})")
    return int(head[1])
