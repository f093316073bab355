"""Write webdataset shards: ``<key>.jpg`` (or ``<key>.png``) + ``<key>.cls`` (ASCII class index) per sample.

The sample list is shuffled globally with a seed before it is cut into shards (DALI only shuffles
inside a buffer, so neighbours in a tar stay neighbours in a batch). Original JPEG bytes are kept,
anything else is re-encoded as JPEG, except PNG sources under ``keep_png`` (lossless data such as CIFAR), which
are stored as given in ``<key>.png``. Event recordings (``events``: an ``EventSpec``) are read, checked and binned
in the worker and stored as ``<key>.evt`` frames (``events.py``); a bad recording fails naming its file. Each shard is written by one task (``workers`` processes):
tar to a temp file + rename, then its DALI index, then a ``<shard>.json`` receipt (count, bytes,
SHA-256, digest of its planned keys) written last; a re-run skips shards whose receipt matches the
plan. Finally ``manifest.json`` and ``classes.json``.
"""
from __future__ import annotations

import hashlib
import io
import json
import multiprocessing as mp
import os
import re
from dataclasses import dataclass

import numpy as np

from .index_file import index_path_for, write_index
from .manifest import CLASSES, sha256_file, update_manifest, write_json_atomic

TAR_OVERHEAD = 2048  # two 512-byte headers + padding per sample, for the size plan
JPEG_MAGIC = b"\xff\xd8\xff"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@dataclass
class ShardJob:
    """One shard to write: its final path and ``(source, label, key)`` items; source = path or bytes."""
    path: str
    items: list
    split: str
    verify: bool = False
    keep_png: bool = False
    events: object = None  # an EventSpec: items are event recordings, stored as .evt frames

    def digest(self) -> str:
        h = hashlib.sha256()
        if self.keep_png:
            h.update(b"keep_png\n")
        if self.events is not None:
            h.update(f"events {self.events}\n".encode())
        for src, label, key in self.items:
            h.update(f"{key}\t{label}\t{src if isinstance(src, str) else len(src)}\n".encode())
        return h.hexdigest()


def sample_key(split: str, position: int, source) -> str:
    """Unique key: split + global (shuffled) position + the source file stem, dots removed
    (webdataset splits a member name at the first dot)."""
    stem = os.path.splitext(os.path.basename(source))[0] if isinstance(source, str) else ""
    stem = re.sub(r"[^A-Za-z0-9_-]", "_", stem)
    return f"{split}_{position:08d}" + (f"_{stem}" if stem else "")


def plan_shards(samples: list, out_dir: str, split: str, seed: int, shard_bytes: int,
                max_count: int = 0) -> list[ShardJob]:
    """Shuffle ``samples`` (``[(source, label)]``) with ``seed`` and cut them into shards of about
    ``shard_bytes`` (and at most ``max_count`` samples when > 0)."""
    order = np.random.default_rng(seed).permutation(len(samples))
    jobs: list[ShardJob] = []
    items: list = []
    size = 0

    def flush():
        nonlocal items, size
        if items:
            jobs.append(ShardJob(os.path.join(out_dir, f"{split}-{len(jobs):06d}.tar"), items, split))
            items, size = [], 0

    for pos, i in enumerate(order):
        src, label = samples[i]
        items.append((src, int(label), sample_key(split, pos, src)))
        size += (os.path.getsize(src.split("#t=")[0]) if isinstance(src, str) else len(src)) + TAR_OVERHEAD
        if size >= shard_bytes or (max_count and len(items) >= max_count):
            flush()
    flush()
    return jobs


def jpeg_bytes(src, verify: bool = False) -> bytes:
    """Original bytes of a JPEG source; any other image re-encoded as RGB JPEG (quality 95)."""
    data = open(src, "rb").read() if isinstance(src, str) else bytes(src)
    if data[:3] == JPEG_MAGIC and not verify:
        return data
    from PIL import Image

    name = src if isinstance(src, str) else "<bytes>"
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            if data[:3] == JPEG_MAGIC:
                return data
            out = io.BytesIO()
            im.convert("RGB").save(out, "JPEG", quality=95)
            return out.getvalue()
    except Exception as e:  # PIL raises many types; name the file
        raise ValueError(f"{name}: not a decodable image ({e})") from e


def image_member(src, verify: bool = False, keep_png: bool = False) -> tuple[str, bytes]:
    """``("png", bytes)`` for a PNG source under ``keep_png`` (checked to decode when ``verify``), else
    ``("jpg", jpeg_bytes(src, verify))``."""
    if keep_png:
        data = open(src, "rb").read() if isinstance(src, str) else bytes(src)
        if data[:8] == PNG_MAGIC:
            if verify:
                jpeg_bytes(data, verify=True)  # decodes it; names nothing better than "<bytes>" for bytes
            return "png", data
    return "jpg", jpeg_bytes(src, verify)


def receipt_path(tar_path: str) -> str:
    return os.path.splitext(tar_path)[0] + ".json"


def _finished(job: ShardJob, digest: str) -> dict | None:
    rp = receipt_path(job.path)
    if not (os.path.exists(rp) and os.path.exists(job.path) and os.path.exists(index_path_for(job.path))):
        return None
    with open(rp) as f:
        entry = json.load(f)
    return entry if entry.get("digest") == digest else None


def write_shard(job: ShardJob) -> dict:
    """Write one shard (or reuse a finished one); returns its manifest entry."""
    import webdataset as wds

    digest = job.digest()
    done = _finished(job, digest)
    if done is not None:
        return done
    tmp = f"{job.path}.tmp-{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            # mtime=0 and fixed owner: identical inputs give byte-identical shards (checksums comparable)
            with wds.TarWriter(f, encoder=False, mtime=0.0) as tw:
                for src, label, key in job.items:
                    if job.events is not None:
                        from .events import EVENT_EXT, encode_recording

                        ext, data = EVENT_EXT, encode_recording(src, job.events)
                    else:
                        ext, data = image_member(src, job.verify, job.keep_png)
                    tw.write({"__key__": key, ext: data, "cls": str(label).encode()})
        os.replace(tmp, job.path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    count = write_index(job.path)
    entry = {"count": count, "bytes": os.path.getsize(job.path), "sha256": sha256_file(job.path),
             "split": job.split, "digest": digest}
    write_json_atomic(receipt_path(job.path), entry)
    return entry


def write_split(samples: list, classes: list[str], out_dir: str, split: str, seed: int = 0,
                shard_bytes: int = 256 << 20, max_count: int = 0, workers: int = 1,
                verify: bool = False, progress: bool = True, keep_png: bool = False, events=None) -> list[str]:
    """Write ``samples`` (``[(source, label)]``) as shards ``<out_dir>/<split>-NNNNNN.tar``; returns their paths.
    ``keep_png``: store PNG sources losslessly as ``.png`` instead of re-encoding them as JPEG. ``events``: an
    ``EventSpec``; the sources are event recordings, binned to ``.evt`` frames, the spec goes to ``events.json``."""
    os.makedirs(out_dir, exist_ok=True)
    if events is not None:
        from .events import write_event_info

        write_event_info(out_dir, events)  # first: refuses a directory made with another spec
    jobs = plan_shards(samples, out_dir, split, seed, shard_bytes, max_count)
    for j in jobs:
        j.verify, j.keep_png, j.events = verify, keep_png, events
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(samples), unit="img", desc=f"{split} shards", dynamic_ncols=True)
    entries = {}
    try:
        if workers > 1 and len(jobs) > 1:
            with mp.get_context("spawn").Pool(min(workers, len(jobs))) as pool:
                for job, entry in zip(jobs, pool.imap(write_shard, jobs)):
                    entries[os.path.basename(job.path)] = entry
                    bar and bar.update(entry["count"])
        else:
            for job in jobs:
                entries[os.path.basename(job.path)] = write_shard(job)
                bar and bar.update(entries[os.path.basename(job.path)]["count"])
    finally:
        bar and bar.close()
    write_json_atomic(os.path.join(out_dir, CLASSES), list(classes))
    update_manifest(out_dir, {k: {f: v for f, v in e.items() if f != "digest"} for k, e in entries.items()})
    return [j.path for j in jobs]
