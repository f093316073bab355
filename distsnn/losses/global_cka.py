"""Linear CKA of several layers on the GLOBAL batch, with at most one collective per form (SSCL Eq.8, 9)."""
from __future__ import annotations

import math

import torch
import torch.distributed as dist

from distsnn.distributed import all_gather_columns, world_size

from .similarity import cka_moments, linear_cka, linear_cka_from_moments

ESTIMATORS = ("auto", "gram", "moments")


def choose_estimator(estimator: str, p: int, q: int, n: int) -> str:
    """"gram" (gather the features, ``[n, n]`` Gram matrices: O(n^2 (p+q)) work, n (p+q) values moved) or
    "moments" (sum feature-space moments: O(b (p+q)^2) work, ~(p+q)^2 values all-reduced); "auto" takes
    the moments once twice the global batch ``n`` exceeds the feature widths ``p + q`` (the crossover measured
    on CPU, benchmarks/RESULTS.md; past it the Gram form's [n, n] work and memory grow as n^2)."""
    if estimator not in ESTIMATORS:
        raise ValueError(f"CKA estimator must be one of {ESTIMATORS}, got {estimator!r}")
    if estimator != "auto":
        return estimator
    return "moments" if 2 * n > p + q else "gram"


def global_linear_cka(pairs: list[tuple[torch.Tensor, torch.Tensor]], estimator: str = "auto") -> list[torch.Tensor]:
    """Linear CKA (float64 scalars, no gradient, identical on every rank) of each pair of rank-local features
    ``X`` ``[b, p...]``, ``Y`` ``[b, q...]`` over the rows of ALL ranks. The pairs that use the Gram form share
    one all-gather, those that use the moment form one all-reduce, whatever the number of layers. Every rank
    must hold the same shapes (the caller checks; see ``distsnn.distributed.check_same_shapes``)."""
    w = world_size()
    widths = [(math.prod(X.shape[1:]), math.prod(Y.shape[1:])) for X, Y in pairs]
    forms = [choose_estimator(estimator, p, q, X.shape[0] * w) for (p, q), (X, _) in zip(widths, pairs)]
    out: list[torch.Tensor | None] = [None] * len(pairs)

    gram = [k for k, f in enumerate(forms) if f == "gram"]
    if gram:
        flat = [t.detach().reshape(t.shape[0], -1) for k in gram for t in pairs[k]]
        gathered = all_gather_columns(flat, grad=False)
        for j, k in enumerate(gram):
            out[k] = linear_cka(gathered[2 * j], gathered[2 * j + 1])

    moments = [k for k, f in enumerate(forms) if f == "moments"]
    if moments:
        local = [cka_moments(*pairs[k]) for k in moments]
        summed = torch.cat(local)
        if w > 1:
            dist.all_reduce(summed, op=dist.ReduceOp.SUM)
        for k, m in zip(moments, summed.split([v.numel() for v in local])):
            out[k] = linear_cka_from_moments(m, *widths[k])
    return out
