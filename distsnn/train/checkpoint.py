"""Checkpoints that are complete or ignored: DeepSpeed state + one file per rank + a manifest written last.

Layout under ``<run>/checkpoints/``::

    step_00001200/            DeepSpeed tag directory (model, optimizer, scheduler, client state)
        rank_00000.pt         per-rank state: RNG streams (torch, numpy, python) and the data reader position
        COMPLETE.json         written by rank 0 after every rank returned from saving (atomic rename):
                              step, epoch, world size, config hash, size and sha256 of every file

DeepSpeed writes its own ``latest`` before the other ranks finish (DEPENDENCY-FACTS.md), so it is never read:
a checkpoint counts only once ``COMPLETE.json`` exists and every file it lists matches its size and hash.
Only checkpoints this run wrote are resumed (DeepSpeed's loader unpickles); weights handed in by users are
safetensors (``distsnn.models.weights``).
"""
from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

MANIFEST = "COMPLETE.json"


def tag_for(step: int) -> str:
    return f"step_{step:08d}"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def _bytes_tensor(b: bytes) -> torch.Tensor:
    return torch.frombuffer(bytearray(b), dtype=torch.uint8) if b else torch.empty(0, dtype=torch.uint8)


def capture_rank_state(data_state: bytes) -> dict:
    """This rank's RNG streams and data position, as tensors/ints so ``torch.load(weights_only=True)`` reads it."""
    np_state = np.random.get_state()
    return {
        "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state() if torch.cuda.is_available() else torch.empty(0, dtype=torch.uint8),
        "numpy_rng": (np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), int(np_state[2]),
                      int(np_state[3]), float(np_state[4])),
        "python_rng": random.getstate(),
        "data_state": _bytes_tensor(data_state),
    }


def restore_rank_state(state: dict) -> bytes:
    """Restore the RNG streams; return the data reader position."""
    torch.set_rng_state(state["torch_rng"])
    if torch.cuda.is_available() and state["cuda_rng"].numel():
        torch.cuda.set_rng_state(state["cuda_rng"])
    name, keys, pos, has_gauss, gauss = state["numpy_rng"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    random.setstate(state["python_rng"])
    return state["data_state"].numpy().tobytes()


def _barrier():
    if dist.is_initialized():
        dist.barrier()


def save(engine, root: Path, *, step: int, epoch: int, config_hash: str, client_state: dict,
         data_state: bytes, keep_last: int) -> tuple[Path, float]:
    """Collective: every rank calls it. Returns (tag directory, seconds taken)."""
    t0 = time.time()
    rank = dist.get_rank() if dist.is_initialized() else 0
    world = dist.get_world_size() if dist.is_initialized() else 1
    tag = tag_for(step)
    tag_dir = root / tag
    if rank == 0 and tag_dir.exists():  # a half-written leftover of a crash at this very step
        shutil.rmtree(tag_dir)
    _barrier()
    engine.save_checkpoint(str(root), tag=tag, client_state=dict(client_state, step=step, epoch=epoch,
                                                                  config_hash=config_hash), save_latest=False)
    tmp = tag_dir / f".rank_{rank:05d}.pt.tmp"
    torch.save(capture_rank_state(data_state), tmp)
    os.replace(tmp, tag_dir / f"rank_{rank:05d}.pt")
    _barrier()  # every rank's files are on disk before the manifest exists
    if rank == 0:
        files = {p.name: {"size": p.stat().st_size, "sha256": _sha256(p)}
                 for p in sorted(tag_dir.iterdir()) if p.is_file() and p.name != MANIFEST}
        manifest = {"step": step, "epoch": epoch, "world_size": world, "config_hash": config_hash,
                    "time": time.time(), "files": files}
        tmp_m = tag_dir / f".{MANIFEST}.tmp"
        tmp_m.write_text(json.dumps(manifest, indent=1))
        os.replace(tmp_m, tag_dir / MANIFEST)
        for old in complete_tags(root)[:-keep_last]:
            shutil.rmtree(root / old, ignore_errors=True)
    _barrier()
    return tag_dir, time.time() - t0


def complete_tags(root: Path) -> list[str]:
    """Tags that have a manifest, oldest first (not yet verified)."""
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if p.is_dir() and (p / MANIFEST).is_file())


def verify(tag_dir: Path, world_size: int) -> str | None:
    """None if the checkpoint is whole; otherwise why it is refused."""
    try:
        manifest = json.loads((tag_dir / MANIFEST).read_text())
    except (OSError, ValueError) as e:
        return f"unreadable {MANIFEST} ({e})"
    if manifest.get("world_size") != world_size:
        return f"written by {manifest.get('world_size')} ranks, this run has {world_size} (resume with the same world size)"
    expected = {f"rank_{r:05d}.pt" for r in range(world_size)}
    missing = expected - set(manifest.get("files", {}))
    if missing:
        return f"manifest lacks {sorted(missing)}"
    for name, meta in manifest["files"].items():
        p = tag_dir / name
        if not p.is_file():
            return f"{name} is missing"
        if p.stat().st_size != meta["size"]:
            return f"{name} is truncated or altered ({p.stat().st_size} bytes, manifest says {meta['size']})"
        if _sha256(p) != meta["sha256"]:
            return f"{name} is corrupt (sha256 differs from the manifest)"
    return None


def find_resumable(root: Path, world_size: int, log=print) -> str | None:
    """The newest verified tag (decided on rank 0 and broadcast, so all ranks agree); refusals are logged."""
    choice = [None]
    if not dist.is_initialized() or dist.get_rank() == 0:
        for tag in reversed(complete_tags(root)):
            why = verify(root / tag, world_size)
            if why is None:
                choice[0] = tag
                break
            log(f"checkpoint {root / tag} refused: {why}; trying the previous one")
    if dist.is_initialized():
        dist.broadcast_object_list(choice, src=0)
    return choice[0]


def load(engine, root: Path, tag: str) -> tuple[dict, bytes]:
    """Collective. Restores engine, optimizer, scheduler, RNG; returns (client state, data reader position)."""
    rank = dist.get_rank() if dist.is_initialized() else 0
    _, client = engine.load_checkpoint(str(root), tag=tag, load_optimizer_states=True, load_lr_scheduler_states=True)
    if client is None:
        raise RuntimeError(f"checkpoint {root / tag}: DeepSpeed could not load it")
    state = torch.load(root / tag / f"rank_{rank:05d}.pt", weights_only=True)
    return client, restore_rank_state(state)
