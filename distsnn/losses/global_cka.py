"""Linear CKA of several layers on the GLOBAL batch, with at most one collective per form (SSCL Eq.8, 9)."""
from __future__ import annotations

import math

import torch

from distsnn.distributed import all_gather_columns, all_reduce_sums, world_size

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


class GlobalCKA:
    """Linear CKA of several layers on the global batch, split around its collectives so a caller can fold them
    into its own: gather :attr:`to_gather` (detached rows of the Gram-form pairs), sum :attr:`to_sum` over ranks
    (the moment-form pairs' moments), then :meth:`finish`. :func:`global_linear_cka` does all three itself.

    ``pairs``: rank-local features ``X`` ``[b, p...]``, ``Y`` ``[b, q...]`` per layer, the same shapes on every
    rank (the caller checks; see ``distsnn.distributed.check_same_shapes``)."""

    def __init__(self, pairs: list[tuple[torch.Tensor, torch.Tensor]], estimator: str = "auto"):
        w = world_size()
        self.widths = [(math.prod(X.shape[1:]), math.prod(Y.shape[1:])) for X, Y in pairs]
        forms = [choose_estimator(estimator, p, q, X.shape[0] * w) for (p, q), (X, _) in zip(self.widths, pairs)]
        self.gram = [k for k, f in enumerate(forms) if f == "gram"]
        self.moments = [k for k, f in enumerate(forms) if f == "moments"]
        self.to_gather = [t.detach().reshape(t.shape[0], -1) for k in self.gram for t in pairs[k]]
        self.to_sum = [cka_moments(*pairs[k]) for k in self.moments]

    def finish(self, gathered: list[torch.Tensor], summed: list[torch.Tensor]) -> list[torch.Tensor]:
        """CKA per pair (float64 scalars, no gradient, identical on every rank) from the gathered rows of
        :attr:`to_gather` and the rank sums of :attr:`to_sum`."""
        out: list[torch.Tensor | None] = [None] * len(self.widths)
        for j, k in enumerate(self.gram):
            out[k] = linear_cka(gathered[2 * j], gathered[2 * j + 1])
        for k, m in zip(self.moments, summed):
            out[k] = linear_cka_from_moments(m, *self.widths[k])
        return out


def global_linear_cka(pairs: list[tuple[torch.Tensor, torch.Tensor]], estimator: str = "auto") -> list[torch.Tensor]:
    """Linear CKA (float64 scalars, no gradient, identical on every rank) of each pair of rank-local features
    ``X`` ``[b, p...]``, ``Y`` ``[b, q...]`` over the rows of ALL ranks. The pairs that use the Gram form share
    one all-gather, those that use the moment form one all-reduce, whatever the number of layers. Every rank
    must hold the same shapes (the caller checks; see ``distsnn.distributed.check_same_shapes``)."""
    cka = GlobalCKA(pairs, estimator)
    gathered = all_gather_columns(cka.to_gather, grad=False) if cka.to_gather else []
    summed = all_reduce_sums(cka.to_sum) if cka.to_sum else []
    return cka.finish(gathered, summed)
