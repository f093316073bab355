"""Rank helpers, metric reductions and the cross-rank gather the contrastive losses need.

Every helper is a no-op (identity / rank 0 of 1) when ``torch.distributed`` is not initialised,
so the same code runs in one process, in tests and under DeepSpeed/torchrun (NCCL or gloo).
"""
from __future__ import annotations

import math

import torch
import torch.distributed as dist


def is_initialized() -> bool:
    """True when a default process group exists."""
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    """Global rank of this process (0 without a process group)."""
    return dist.get_rank() if is_initialized() else 0


def world_size() -> int:
    """Number of ranks W (1 without a process group)."""
    return dist.get_world_size() if is_initialized() else 1


def is_main() -> bool:
    """True on global rank 0: the rank that writes files and logs."""
    return rank() == 0


def reduce_sum(x: torch.Tensor) -> torch.Tensor:
    """Sum of ``x`` over ranks (a new tensor, no gradient). Crosses the process boundary."""
    out = x.detach().clone()
    if world_size() > 1:
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out


def reduce_mean(x: torch.Tensor) -> torch.Tensor:
    """Mean of ``x`` over ranks (a new tensor, no gradient); for metrics. Crosses the process boundary."""
    return reduce_sum(x) / world_size()


def all_reduce_max_flag(flag: bool, device: torch.device | str | None = None) -> bool:
    """True on every rank if ``flag`` is True on any rank (e.g. "stop now", "loss not finite").

    ``device``: where the one-element tensor lives; None = the current CUDA device under NCCL, else
    the CPU. Crosses the process boundary (and syncs with the host).
    """
    if world_size() == 1:
        return bool(flag)
    if device is None:
        device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else "cpu"
    t = torch.tensor([1 if flag else 0], dtype=torch.int32, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


_MAX_DIMS = 8


def check_same_shapes(tensors: list[torch.Tensor] | tuple[torch.Tensor, ...], what: str) -> None:
    """Raise ValueError naming the ranks whose tensor shapes differ (a mismatched gather would hang
    under NCCL or return garbage). One small collective for all ``tensors``; call it on every rank. No-op
    without a process group."""
    if world_size() == 1:
        return
    rows = []
    for x in tensors:
        if x.dim() > _MAX_DIMS:
            raise ValueError(f"{what}: tensors of more than {_MAX_DIMS} dims are not supported, got {list(x.shape)}")
        rows.append([x.dim(), *x.shape] + [-1] * (_MAX_DIMS - x.dim()))   # fixed length: cannot mismatch
    device = tensors[0].device
    local = torch.tensor(rows, dtype=torch.int64, device=device).flatten()
    shapes = torch.empty(world_size() * local.numel(), dtype=torch.int64, device=device)  # gloo: flat form only
    dist.all_gather_single(shapes, local)
    per_rank = [[tuple(t[1: 1 + t[0]]) for t in rank_rows.view(-1, _MAX_DIMS + 1).tolist()]
                for rank_rows in shapes.view(world_size(), -1)]
    if any(r != per_rank[0] for r in per_rank):
        detail = ", ".join(f"rank {i}: {[list(t) for t in r]}" for i, r in enumerate(per_rank))
        raise ValueError(f"{what}: tensors differ in shape across ranks ({detail}); every rank must hold "
                         "the same local batch size")


class _AllGatherWithGrad(torch.autograd.Function):
    """forward: concatenate every rank's ``x`` along dim 0; backward: reduce-scatter (SUM).

    Each rank's loss may use every gathered row, so the gradient of rank r's own rows is the sum
    over ranks of the gradients that reached those rows: a reduce-scatter of the full gradient.
    The incoming gradient is made contiguous first: a transposed use of the rows gives strided
    gradients, which ``torch.distributed.nn.functional.all_gather`` gets wrong on gloo.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        w = world_size()
        x = x.contiguous()
        out = x.new_empty((w * x.shape[0], *x.shape[1:]))
        dist.all_gather_single(out, x)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        w = world_size()
        grad = grad.contiguous()
        own = grad.new_empty((grad.shape[0] // w, *grad.shape[1:]))
        dist.reduce_scatter_single(own, grad, op=dist.ReduceOp.SUM)
        return own


def all_gather_with_grad(x: torch.Tensor, *, check_shapes: bool = True) -> torch.Tensor:
    """``[B, ...]`` on each of W ranks -> ``[W*B, ...]``, rank r's rows at ``[r*B:(r+1)*B]``.

    Gradients flow back to the rank that owns each row: rank r receives the SUM over ranks of the
    gradients of its rows. So if every rank's loss is its share of a global loss (its anchors
    against all gathered keys, scaled so the rank mean is the global loss), the rank-averaged
    parameter gradients (what DDP/DeepSpeed apply) equal those of one process holding the global
    batch. ``check_shapes`` first gathers the shapes (one tiny collective) and raises ValueError
    on a mismatch. Crosses the process boundary; identity without a process group.
    """
    if world_size() == 1:
        return x
    if check_shapes:
        check_same_shapes([x], "all_gather_with_grad")
    return _AllGatherWithGrad.apply(x)


def all_gather_no_grad(x: torch.Tensor, *, check_shapes: bool = True) -> torch.Tensor:
    """Like :func:`all_gather_with_grad` but detached: for labels, CKA features, statistics."""
    x = x.detach()
    if world_size() == 1:
        return x
    if check_shapes:
        check_same_shapes([x], "all_gather_no_grad")
    x = x.contiguous()
    out = x.new_empty((world_size() * x.shape[0], *x.shape[1:]))
    dist.all_gather_single(out, x)
    return out


def all_gather_columns(tensors: list[torch.Tensor], *, grad: bool) -> list[torch.Tensor]:
    """Several ``[B, d_i]`` tensors gathered in ONE collective: ``[W*B, d_i]`` each, rows as in
    :func:`all_gather_with_grad` (``grad=True``, gradients reduce-scattered back in one collective) or
    :func:`all_gather_no_grad`. They are joined along dim 1 in their promoted dtype and split again;
    the caller checks shapes (see :func:`check_same_shapes`). Identity without a process group.
    """
    if world_size() == 1:
        return list(tensors) if grad else [t.detach() for t in tensors]
    dtype = tensors[0].dtype
    for t in tensors[1:]:
        dtype = torch.promote_types(dtype, t.dtype)
    joined = torch.cat([t.reshape(t.shape[0], -1).to(dtype) for t in tensors], dim=1)
    gathered = all_gather_with_grad(joined, check_shapes=False) if grad else \
        all_gather_no_grad(joined, check_shapes=False)
    parts = gathered.split([math.prod(t.shape[1:]) for t in tensors], dim=1)
    return [p.reshape(p.shape[0], *t.shape[1:]) for p, t in zip(parts, tensors)]


def global_value(local: torch.Tensor) -> torch.Tensor:
    """``local`` with its value replaced by the rank mean, its gradient unchanged (elementwise, so a
    stacked vector of several losses costs one all-reduce).

    A loss whose rank-r share ``local`` averages over ranks to the global loss then reads the same
    (global) value on every rank while each rank still back-propagates only its share. One scalar
    all-reduce; identity without a process group.
    """
    if world_size() == 1:
        return local
    return local + (reduce_mean(local) - local.detach())
