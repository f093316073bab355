"""``manifest.json`` beside the shards: sample count, size and SHA-256 of every shard, and the classes.

One manifest per output directory, shared by its splits: ``{"version": 1, "shards": {"train-000000.tar":
{"count": n, "bytes": b, "sha256": h, "split": "train"}, ...}}``. ``classes.json`` (list of class
names; the label of a sample is its position) sits next to it.
"""
from __future__ import annotations

import hashlib
import json
import os

MANIFEST = "manifest.json"
CLASSES = "classes.json"


def sha256_file(path: str, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def write_json_atomic(path: str, obj) -> None:
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=1, sort_keys=True)
        f.write("\n")
    os.replace(tmp, path)


def load_manifest(directory: str) -> dict[str, dict]:
    """Shard entries (file name -> entry) of ``directory/manifest.json``, ``{}`` if there is none."""
    path = os.path.join(directory, MANIFEST)
    if not os.path.exists(path):
        return {}
    with open(path) as f:
        data = json.load(f)
    if not isinstance(data, dict) or not isinstance(data.get("shards"), dict):
        raise ValueError(f"{path}: not a distsnn shard manifest (no 'shards' table)")
    return data["shards"]


def update_manifest(directory: str, entries: dict[str, dict]) -> None:
    """Merge shard entries into ``directory/manifest.json`` (other splits' entries are kept)."""
    shards = load_manifest(directory)
    shards.update(entries)
    write_json_atomic(os.path.join(directory, MANIFEST), {"version": 1, "shards": shards})


def load_classes(directory: str) -> list[str] | None:
    path = os.path.join(directory, CLASSES)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        classes = json.load(f)
    if not isinstance(classes, list):
        raise ValueError(f"{path}: expected a JSON list of class names")
    return classes
