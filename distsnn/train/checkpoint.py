"""Checkpoints that are complete or ignored: DeepSpeed state + one file per rank + a manifest written last.

Layout under ``<run>/checkpoints/``::

    step_00001200/            DeepSpeed tag directory (model, optimizer, scheduler, client state)
        rank_00000.pt         per-rank state: RNG streams (torch, numpy, python) and the data reader position
        COMPLETE.json         written by rank 0 after every rank returned from saving (atomic rename):
                              step, epoch, world size, per-rank batch, accumulation, ZeRO stage, config hash,
                              size and sha256 of every file

DeepSpeed writes its own ``latest`` before the other ranks finish (DEPENDENCY-FACTS.md), so it is never read:
a checkpoint counts only once ``COMPLETE.json`` exists and every file it lists matches its size and hash.
Only checkpoints this run wrote are resumed (DeepSpeed's loader unpickles); weights handed in by users are
safetensors (``distsnn.models.weights``).

A checkpoint written by W ranks resumes on W' ranks (``load`` with the manifest's world): the module, scheduler
and client state are world-independent; ZeRO 0 keeps the whole optimizer in DeepSpeed's model file; at ZeRO 1/2
SGD's momentum is partitioned over the W ``zero_pp_rank_*`` files, and ``repartition_momentum`` re-cuts it for
W' (DeepSpeed 0.19.8 refuses a ZeRO optimizer state of another DP size, and its universal-checkpoint conversion
keeps only Adam's ``exp_avg``/``exp_avg_sq``: it would drop SGD's momentum). Every rank's data state is returned
so that the loader can finish the interrupted epoch in the old ranks' order (``distsnn.data.loader``).
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
         data_state: bytes, keep_last: int, layout: dict | None = None) -> tuple[Path, float]:
    """Collective: every rank calls it. Returns (tag directory, seconds taken). ``layout`` (per-rank ``batch``,
    ``grad_accum``, ``zero_stage``) goes into the manifest: what a resume on another world size needs."""
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
        manifest = {"step": step, "epoch": epoch, "world_size": world, **(layout or {}),
                    "config_hash": config_hash, "time": time.time(), "files": files}
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


def read_manifest(tag_dir: Path) -> dict:
    return json.loads((tag_dir / MANIFEST).read_text())


def verify(tag_dir: Path) -> str | None:
    """None if the checkpoint is whole (every file its manifest lists, one rank file per rank that wrote it,
    sizes and hashes); otherwise why it is refused. The world size of the resuming run does not matter."""
    try:
        manifest = read_manifest(tag_dir)
    except (OSError, ValueError) as e:
        return f"unreadable {MANIFEST} ({e})"
    world_size = manifest.get("world_size")
    if not isinstance(world_size, int) or world_size < 1:
        return f"{MANIFEST} has no valid world_size ({world_size!r})"
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


def find_resumable(root: Path, log=print) -> tuple[str, dict] | None:
    """The newest verified tag and its manifest (decided on rank 0 and broadcast, so all ranks agree); refusals
    are logged."""
    choice = [None]
    if not dist.is_initialized() or dist.get_rank() == 0:
        for tag in reversed(complete_tags(root)):
            why = verify(root / tag)
            if why is None:
                choice[0] = (tag, read_manifest(root / tag))
                break
            log(f"checkpoint {root / tag} refused: {why}; trying the previous one")
    if dist.is_initialized():
        dist.broadcast_object_list(choice, src=0)
    return choice[0]


def load(engine, root: Path, tag: str, saved_world: int) -> tuple[dict, list[bytes]]:
    """Collective. Restores engine, optimizer, scheduler and this rank's RNG streams; returns (client state, the
    data state of every rank that wrote the checkpoint, in rank order).

    On another world size (``saved_world`` != this world): the RNG streams of rank r are those of old rank r
    (a rank the old world did not have keeps its seeded streams); at ZeRO 1/2 the optimizer state is re-cut
    (``repartition_momentum``) after the fp32 partitions were rebuilt from the saved (fp32) module weights."""
    rank = dist.get_rank() if dist.is_initialized() else 0
    world = dist.get_world_size() if dist.is_initialized() else 1
    zero = engine.zero_optimization_stage()
    resized = saved_world != world
    _, client = engine.load_checkpoint(str(root), tag=tag, load_optimizer_states=not (resized and zero > 0),
                                       load_lr_scheduler_states=True)
    if client is None:
        raise RuntimeError(f"checkpoint {root / tag}: DeepSpeed could not load it")
    if resized and zero > 0:
        repartition_momentum(engine.optimizer, root / tag, saved_world)
        # the groups' learning rate came with the optimizer state that was not loaded: the restored scheduler's
        # last value (else the first step after the resume would use the rate of step 0)
        if engine.lr_scheduler is not None:
            for group, lr in zip(engine.optimizer.param_groups, engine.lr_scheduler.get_last_lr(), strict=True):
                group["lr"] = lr
    states = [torch.load(root / tag / f"rank_{r:05d}.pt", weights_only=True) for r in range(saved_world)]
    if rank < saved_world:
        restore_rank_state(states[rank])
    return client, [s["data_state"].numpy().tobytes() for s in states]


def _zero_file(tag_dir: Path, rank: int) -> Path:
    return tag_dir / f"zero_pp_rank_{rank}_mp_rank_00_optim_states.pt"


def repartition_momentum(zero_optimizer, tag_dir: Path, saved_world: int) -> None:
    """ZeRO 1/2 on a world of another size: SGD's momentum of each parameter group, cut into ``saved_world``
    partitions by the run that saved it, re-cut into this world's partitions.

    Each old rank r holds a slice of the group's flat buffer (parameters in order, ``parameter_alignment`` gaps
    included) with ``group_paddings[r]`` zeros of data-parallel padding at its end: the old slices without their
    padding, concatenated, are the flat buffer, which is the same for every world; this rank's new partition is
    cut from it at the offsets of ``parallel_partitioned_bit16_groups``. Our own files (DeepSpeed's loader
    unpickles them too)."""
    import torch.distributed as tdist

    saved = []
    for r in range(saved_world):
        sd = torch.load(_zero_file(tag_dir, r), map_location="cpu", weights_only=False)["optimizer_state_dict"]
        base = sd["base_optimizer_state"]
        if not isinstance(base, dict) or "state" not in base:
            raise RuntimeError(f"{_zero_file(tag_dir, r)}: an optimizer state layout this resize does not know")
        saved.append((base["state"], sd["group_paddings"]))
    rank = tdist.get_rank(group=zero_optimizer.dp_process_group) if tdist.is_initialized() else 0
    inner = zero_optimizer.optimizer  # the torch SGD over this rank's fp32 partitions
    for i, group in enumerate(inner.param_groups):
        flat_param = group["params"][0]
        pieces = []
        for r, (state, paddings) in enumerate(saved):
            if i not in state or "momentum_buffer" not in state[i]:
                pieces = None  # the saving run had not stepped yet: no momentum to carry
                break
            buf = state[i]["momentum_buffer"].reshape(-1)
            pieces.append(buf[:buf.numel() - paddings[i]])
        if pieces is None:
            continue
        flat = torch.cat(pieces)
        partitions = zero_optimizer.parallel_partitioned_bit16_groups[i]
        left = sum(p.numel() for p in partitions[:rank])
        total = sum(p.numel() for p in partitions)
        params = sum(p.numel() for p in zero_optimizer.bit16_groups[i])
        if not params <= flat.numel() <= total:
            raise RuntimeError(f"{tag_dir}: parameter group {i} holds {flat.numel()} momentum values; this model's "
                               f"group has {params} parameters in {total} partitioned slots: not the same model")
        need = flat_param.numel()
        mine = torch.zeros(need, dtype=flat_param.dtype, device=flat_param.device)
        piece = flat[left:left + need]
        mine[:piece.numel()] = piece.to(mine)
        inner.state[flat_param]["momentum_buffer"] = mine
    zero_optimizer._link_all_hp_params()  # DeepSpeed's per-parameter views (safe_get_full_optimizer_state) see it
