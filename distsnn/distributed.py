"""Rank helpers, metric reductions and the cross-rank gather the contrastive losses need.

Every helper is a no-op (identity / rank 0 of 1) when ``torch.distributed`` is not initialised,
so the same code runs in one process, in tests and under DeepSpeed/torchrun (NCCL or gloo).
"""
from __future__ import annotations

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
    under NCCL or return garbage). One small all-reduce (MAX of every shape and of its negation: they agree on
    all ranks exactly when the shapes do) for all ``tensors``, a tree of 2 log2 W steps where a gather of the
    shapes would be a ring of W - 1; only on a mismatch a gather of the shapes for the message. Call it on every
    rank. No-op without a process group."""
    if world_size() == 1:
        return
    rows = []
    for x in tensors:
        if x.dim() > _MAX_DIMS:
            raise ValueError(f"{what}: tensors of more than {_MAX_DIMS} dims are not supported, got {list(x.shape)}")
        rows.append([x.dim(), *x.shape] + [-1] * (_MAX_DIMS - x.dim()))   # fixed length: cannot mismatch
    device = tensors[0].device
    local = torch.tensor(rows, dtype=torch.int64, device=device).flatten()
    bounds = torch.cat([local, -local])
    dist.all_reduce(bounds, op=dist.ReduceOp.MAX)
    if torch.equal(bounds[:local.numel()], -bounds[local.numel():]):   # max == min everywhere: all equal
        return
    shapes = torch.empty(world_size() * local.numel(), dtype=torch.int64, device=device)  # gloo: flat form only
    dist.all_gather_single(shapes, local)
    per_rank = [[tuple(t[1: 1 + t[0]]) for t in rank_rows.view(-1, _MAX_DIMS + 1).tolist()]
                for rank_rows in shapes.view(world_size(), -1)]
    detail = ", ".join(f"rank {i}: {[list(t) for t in r]}" for i, r in enumerate(per_rank))
    raise ValueError(f"{what}: tensors differ in shape across ranks ({detail}); every rank must hold "
                     "the same local batch size")


class _AllGatherWithGrad(torch.autograd.Function):
    """forward: concatenate every rank's ``x`` along dim 0; backward: reduce-scatter (SUM) of the gradient of the
    first ``grad_cols`` columns (all of them when None; the rest are gathered for their values only and get zero).

    Each rank's loss may use every gathered row, so the gradient of rank r's own rows is the sum
    over ranks of the gradients that reached those rows: a reduce-scatter of the full gradient.
    The incoming gradient is made contiguous first: a transposed use of the rows gives strided
    gradients, which ``torch.distributed.nn.functional.all_gather`` gets wrong on gloo.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, grad_cols: int | None = None) -> torch.Tensor:
        w = world_size()
        x = x.contiguous()
        ctx.grad_cols = grad_cols
        out = x.new_empty((w * x.shape[0], *x.shape[1:]))
        dist.all_gather_single(out, x)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        w = world_size()
        cols = ctx.grad_cols
        part = (grad if cols is None else grad[:, :cols]).contiguous()
        own = part.new_empty((part.shape[0] // w, *part.shape[1:]))
        dist.reduce_scatter_single(own, part, op=dist.ReduceOp.SUM)
        if cols is not None and cols < grad.shape[1]:
            own = torch.cat([own, own.new_zeros((own.shape[0], grad.shape[1] - cols))], dim=1)
        return own, None


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


def all_gather_columns(tensors: list[torch.Tensor], *, grad: bool | list[bool]) -> list[torch.Tensor]:
    """Several ``[B, ...]`` tensors gathered in ONE collective: ``[W*B, ...]`` each, rows as in
    :func:`all_gather_with_grad`. ``grad``: True (gradients of all reduce-scattered back in one collective),
    False (detached, as :func:`all_gather_no_grad`), or one flag per tensor: those flagged get their gradients
    back (one reduce-scatter over their columns only), the others are gathered detached. Floating tensors are
    flattened and joined along dim 1 in their promoted dtype; integer and bool tensors travel as int64 bits
    reinterpreted in that dtype (exact: a gather copies bits). Each is returned in its own dtype; the caller
    checks shapes (see :func:`check_same_shapes`). Identity (detached where not flagged) without a process group.
    """
    flags = [grad] * len(tensors) if isinstance(grad, bool) else list(grad)
    if len(flags) != len(tensors):
        raise ValueError(f"all_gather_columns: {len(tensors)} tensors but {len(flags)} grad flags")
    if world_size() == 1:
        return [t if g else t.detach() for t, g in zip(tensors, flags)]
    floats = [t.dtype for t in tensors if t.is_floating_point()]
    dtype = floats[0] if floats else torch.int64
    for d in floats[1:]:
        dtype = torch.promote_types(dtype, d)
    for t, g in zip(tensors, flags):
        if g and not t.is_floating_point():
            raise ValueError(f"all_gather_columns: a {t.dtype} tensor cannot carry a gradient")

    def columns(t: torch.Tensor) -> torch.Tensor:
        rows = t.reshape(t.shape[0], -1)
        if t.is_floating_point():
            return rows.to(dtype)
        return rows.to(torch.int64).view(dtype)          # bits, not values: exact for any int64

    order = [k for k, g in enumerate(flags) if g] + [k for k, g in enumerate(flags) if not g]  # grad columns first
    flat = [columns(tensors[k] if flags[k] else tensors[k].detach()) for k in order]
    joined = torch.cat(flat, dim=1)
    grad_cols = sum(f.shape[1] for f, k in zip(flat, order) if flags[k])
    if grad_cols == 0:
        gathered = all_gather_no_grad(joined, check_shapes=False)
    else:
        gathered = _AllGatherWithGrad.apply(joined, None if grad_cols == joined.shape[1] else grad_cols)
    out: list[torch.Tensor | None] = [None] * len(tensors)
    for k, part in zip(order, gathered.split([f.shape[1] for f in flat], dim=1)):
        t = tensors[k]
        if not t.is_floating_point():
            part = part.detach().contiguous().view(torch.int64)
        part = part.reshape(part.shape[0], *t.shape[1:]).to(t.dtype)
        out[k] = part if flags[k] else part.detach()
    return out


class _AllReduceSumWithGrad(torch.autograd.Function):
    """Sum over ranks; backward sums the incoming gradients over ranks (each rank's loss depends on every rank's
    input through the sum), so rank-averaged parameter gradients equal those of one process with the global batch."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        out = x.contiguous().clone()
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous().clone()          # gloo: never reduce a non-contiguous view in place
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad


def all_reduce_sum_with_grad(x: torch.Tensor) -> torch.Tensor:
    """The sum of ``x`` over ranks, differentiable (one all-reduce forward, one backward); identity without a
    process group."""
    if world_size() == 1:
        return x
    return _AllReduceSumWithGrad.apply(x)


def all_reduce_sums(tensors: list[torch.Tensor]) -> list[torch.Tensor]:
    """The sum over ranks of each tensor (detached, each in its own dtype), in ONE all-reduce: they are joined as
    float64. Detached copies without a process group."""
    if world_size() == 1:
        return [t.detach().clone() for t in tensors]
    joined = torch.cat([t.detach().reshape(-1).to(torch.float64) for t in tensors])
    dist.all_reduce(joined, op=dist.ReduceOp.SUM)
    return [part.reshape(t.shape).to(t.dtype) for part, t in zip(joined.split([t.numel() for t in tensors]), tensors)]


def global_value(local: torch.Tensor, total: torch.Tensor | None = None) -> torch.Tensor:
    """``local`` with its value replaced by the rank mean, its gradient unchanged (elementwise, so a
    stacked vector of several losses costs one all-reduce).

    A loss whose rank-r share ``local`` averages over ranks to the global loss then reads the same
    (global) value on every rank while each rank still back-propagates only its share. ``total``: the sum of
    ``local`` over ranks when the caller has already reduced it (e.g. in one :func:`all_reduce_sums` with other
    values); else one all-reduce here. Identity without a process group.
    """
    if world_size() == 1:
        return local
    if total is None:
        total = reduce_sum(local)
    return local + (total / world_size() - local.detach())
