"""Resuming on another world size: which per-rank batch and gradient accumulation keep the global batch."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class BatchPlan:
    batch: int       # per-rank micro-batch
    grad_accum: int  # micro-batches per optimizer step
    kept: bool       # batch * grad_accum * world == the checkpoint's global batch
    note: str        # what changed, for the log


def keep_global_batch(global_batch: int, world: int, batch: int, grad_accum: int) -> BatchPlan:
    """The (per-rank batch, accumulation) on ``world`` ranks whose product with ``world`` is ``global_batch``.

    In this order: the per-rank batch as configured with another accumulation (same memory per rank, same
    BatchNorm batches); the accumulation as configured with another per-rank batch; else the largest per-rank
    batch not above the configured one that divides. If none divides (``global_batch`` not a multiple of
    ``world``), the configured pair is kept and the global batch changes: ``kept`` is False and ``note`` says so."""
    if batch * grad_accum * world == global_batch:
        return BatchPlan(batch, grad_accum, True, f"global batch {global_batch} kept as configured")
    if global_batch % (batch * world) == 0:
        accum = global_batch // (batch * world)
        return BatchPlan(batch, accum, True, f"global batch {global_batch} kept: gradient accumulation "
                                             f"{grad_accum} -> {accum}, per-rank batch {batch}")
    if global_batch % (grad_accum * world) == 0:
        b = global_batch // (grad_accum * world)
        return BatchPlan(b, grad_accum, True, f"global batch {global_batch} kept: per-rank batch {batch} -> {b}, "
                                              f"gradient accumulation {grad_accum}")
    for accum in range(1, global_batch + 1):
        if global_batch % (accum * world) == 0 and global_batch // (accum * world) <= batch:
            b = global_batch // (accum * world)
            return BatchPlan(b, accum, True, f"global batch {global_batch} kept: per-rank batch {batch} -> {b}, "
                                             f"gradient accumulation {grad_accum} -> {accum}")
    new = batch * grad_accum * world
    return BatchPlan(batch, grad_accum, False,
                     f"global batch NOT kept: {global_batch} is not a multiple of the {world} ranks; it becomes "
                     f"{new} (per-rank batch {batch}, gradient accumulation {grad_accum})")
