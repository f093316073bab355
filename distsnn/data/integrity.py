"""Offline integrity scan of webdataset shards; every problem as ``shard:key: problem``.

Finds what DALI reports badly or not at all (DEPENDENCY-FACTS.md): truncated tars (``wds2idx`` indexes
them happily), undecodable images, missing or non-integer ``.cls``, labels out of range, duplicate
keys (within and across shards), index files that disagree with their tar, and shards whose count
or checksum differ from ``manifest.json``; in event shards (``events.json`` beside them) a missing ``.evt`` or one
whose size is not the ``[T, 2, H, W]`` of ``events.json``. Shard-level problems use ``-`` as the key.
"""
from __future__ import annotations

import io
import multiprocessing as mp
import os
import tarfile

from .index_file import index_path_for, read_index, split_member
from .manifest import load_classes, load_manifest, sha256_file


def _check_image(data: bytes) -> str | None:
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
    except Exception as e:  # PIL raises many types
        return f"undecodable image ({type(e).__name__}: {e})"
    return None


def _check_label(data: bytes, num_classes: int | None) -> str | None:
    try:
        label = int(data.decode("ascii").strip())
    except (UnicodeDecodeError, ValueError):
        return f".cls is not an integer ({data[:20]!r})"
    if num_classes is not None and not 0 <= label < num_classes:
        return f"label {label} out of range [0, {num_classes})"
    return None


def _event_spec(path: str, say):
    """The ``EventSpec`` of ``events.json`` beside the shard (``None``: image shards); a bad one is a problem."""
    from .events import load_event_spec

    try:
        return load_event_spec(os.path.dirname(path))
    except ValueError as e:
        say("-", str(e))
        return None


def scan_shard(args) -> tuple[str, list[str], list[str]]:
    """``(shard, keys in order, problems)`` for one tar. ``args = (path, num_classes, decode)``."""
    path, num_classes, decode = args
    problems: list[str] = []
    say = lambda key, what: problems.append(f"{path}:{key}: {what}")  # noqa: E731
    size = os.path.getsize(path)
    samples: dict[str, dict[str, bytes]] = {}
    order: list[str] = []
    end = 0
    try:
        with tarfile.open(path, "r:") as tf:
            for m in tf:
                if not m.isreg():
                    continue
                key, ext = split_member(m.name)
                if m.offset_data + m.size > size:
                    say(key, f"truncated tar: {m.name} needs {m.offset_data + m.size} bytes, file has {size}")
                    break
                end = m.offset_data + -(-m.size // 512) * 512
                if key not in samples:
                    samples[key] = {}
                    order.append(key)
                elif order[-1] != key or ext in samples[key]:
                    say(key, "duplicate key in this shard")
                samples[key][ext] = tf.extractfile(m).read()
    except (tarfile.TarError, EOFError, OSError) as e:
        say("-", f"truncated or damaged tar ({e})")
    else:
        with open(path, "rb") as f:
            f.seek(end)
            tail = f.read(1024)
        if len(tail) < 1024 or tail.strip(b"\0"):
            say("-", f"truncated tar: no end-of-archive marker after byte {end} (file has {size} bytes)")
    spec = _event_spec(path, say)
    for key in order:
        comp = samples[key]
        if spec is not None:  # event shards: .evt frames of exactly the size events.json gives
            if "evt" not in comp:
                say(key, "missing .evt (event shards: events.json beside them)")
            elif len(comp["evt"]) != spec.nbytes:
                say(key, f".evt holds {len(comp['evt'])} bytes, events.json's [T, 2, H, W] = {list(spec.shape)} "
                         f"needs {spec.nbytes}")
        elif (image := comp.get("jpg", comp.get("png"))) is None:  # the image member: .jpg or (lossless) .png
            say(key, "missing .jpg / .png")
        elif decode and (err := _check_image(image)):
            say(key, err)
        if "cls" not in comp:
            say(key, "missing .cls")
        elif err := _check_label(comp["cls"], num_classes):
            say(key, err)
    idx = index_path_for(path)
    if os.path.exists(idx):
        try:
            listed = [k for k, _ in read_index(idx)]
            if listed != order:
                say("-", f"index {idx} lists {len(listed)} samples, the tar holds {len(order)} (or another order)")
        except ValueError as e:
            say("-", str(e))
    return path, order, problems


def scan_shards(files: list[str], num_classes: int | None = None, decode: bool = True,
                workers: int = 1, check_sha: bool = True) -> list[str]:
    """All problems of ``files`` (shard-level, per sample, duplicates across shards, manifest mismatches).

    ``num_classes`` defaults to the length of ``classes.json`` beside the first shard."""
    if num_classes is None and files:
        classes = load_classes(os.path.dirname(files[0]))
        num_classes = len(classes) if classes else None
    jobs = [(f, num_classes, decode) for f in files]
    if workers > 1 and len(files) > 1:
        with mp.get_context("spawn").Pool(min(workers, len(files))) as pool:
            results = pool.map(scan_shard, jobs)
    else:
        results = [scan_shard(j) for j in jobs]
    problems: list[str] = []
    first_seen: dict[str, str] = {}
    manifests: dict[str, dict] = {}
    for path, keys, found in results:
        problems += found
        for k in dict.fromkeys(keys):
            if k in first_seen:
                problems.append(f"{path}:{k}: duplicate key, also in {first_seen[k]}")
            else:
                first_seen[k] = path
        d, name = os.path.split(path)
        if d not in manifests:
            try:
                manifests[d] = load_manifest(d)
            except (ValueError, OSError) as e:
                manifests[d] = {}
                problems.append(f"{path}:-: {e}")
        entry = manifests[d].get(name)
        if entry is None:
            continue
        if int(entry["count"]) != len(keys):
            problems.append(f"{path}:-: manifest says {entry['count']} samples, the shard holds {len(keys)}")
        if check_sha and entry.get("sha256") and sha256_file(path) != entry["sha256"]:
            problems.append(f"{path}:-: SHA-256 differs from manifest.json")
    return problems
