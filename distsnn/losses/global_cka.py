"""Linear CKA (and its HSIC terms) of several layers on the GLOBAL batch, with at most one collective per form (SSCL Eq.8, 9)."""
from __future__ import annotations

import math

import torch

from distsnn.distributed import all_gather_columns, all_reduce_sums, world_size

from .similarity import cka_from_hsic_terms, cka_moments, hsic_terms, hsic_terms_from_moments

ESTIMATORS = ("auto", "gram", "moments", "local")
MAX_MOMENT_VALUES = 1 << 26   # (p + q)^2 float64 values: 512 MiB; full ImageNet stage maps would need terabytes


def choose_estimator(estimator: str, p: int, q: int, n: int) -> str:
    """"gram" (gather the features, ``[n, n]`` Gram matrices: O(n^2 (p+q)) work, n (p+q) values moved) or
    "moments" (sum feature-space moments: O(b (p+q)^2) work, ~(p+q)^2 values all-reduced); "auto" takes
    the moments once twice the global batch ``n`` exceeds the feature widths ``p + q`` (the crossover measured
    on CPU, benchmarks/RESULTS.md; past it the Gram form's [n, n] work and memory grow as n^2), never when
    (p + q)^2 exceeds :data:`MAX_MOMENT_VALUES`. "local": each rank's own mini-batch (Nguyen et al. 2020's
    mini-batch estimator with the rank's batch as the mini-batch): HSIC terms from the rank's ``[b, b]`` Grams,
    averaged over ranks with 5 numbers all-reduced; not the global batch's value, for worlds where gathering
    full maps is too large (docs/PERFORMANCE.md)."""
    if estimator not in ESTIMATORS:
        raise ValueError(f"method.sscl.cka_estimator must be one of {ESTIMATORS}, got {estimator!r}")
    too_wide = (p + q) ** 2 > MAX_MOMENT_VALUES
    if estimator == "moments" and too_wide:
        raise ValueError(f"method.sscl.cka_estimator: 'moments' needs a ({p}+{q})^2 matrix for features of widths "
                         f"{p} and {q}; use 'gram', 'local' or 'auto'")
    if estimator != "auto":
        return estimator
    return "moments" if 2 * n > p + q and not too_wide else "gram"


class GlobalCKA:
    """Linear CKA of several layers on the global batch, split around its collectives so a caller can fold them
    into its own: gather :attr:`to_gather` (detached rows of the Gram-form pairs), sum :attr:`to_sum` over ranks
    (the moment-form pairs' moments), then :meth:`finish` (the HSIC terms of each pair). :func:`global_linear_cka` does all three itself.

    ``pairs``: rank-local features ``X`` ``[b, p...]``, ``Y`` ``[b, q...]`` per layer, the same shapes on every
    rank (the caller checks; see ``distsnn.distributed.check_same_shapes``)."""

    def __init__(self, pairs: list[tuple[torch.Tensor, torch.Tensor]], estimator: str = "auto"):
        w = world_size()
        self.widths = [(math.prod(X.shape[1:]), math.prod(Y.shape[1:])) for X, Y in pairs]
        forms = [choose_estimator(estimator, p, q, X.shape[0] * w) for (p, q), (X, _) in zip(self.widths, pairs)]
        self.gram = [k for k, f in enumerate(forms) if f == "gram"]
        self.moments = [k for k, f in enumerate(forms) if f == "moments"]
        self.local = [k for k, f in enumerate(forms) if f == "local"]
        self.world = w
        self.to_gather = [t.detach().reshape(t.shape[0], -1) for k in self.gram for t in pairs[k]]
        self.to_sum = [cka_moments(*pairs[k]) for k in self.moments] + [hsic_terms(*pairs[k]) for k in self.local]

    def finish(self, gathered: list[torch.Tensor], summed: list[torch.Tensor]) -> list[torch.Tensor]:
        """The :func:`~distsnn.losses.similarity.hsic_terms` of each pair on the global batch (float64 ``[5]``,
        no gradient, identical on every rank) from the gathered rows of :attr:`to_gather` and the rank sums of
        :attr:`to_sum`."""
        out: list[torch.Tensor | None] = [None] * len(self.widths)
        for j, k in enumerate(self.gram):
            out[k] = hsic_terms(gathered[2 * j], gathered[2 * j + 1])
        for k, m in zip(self.moments, summed):
            out[k] = hsic_terms_from_moments(m, *self.widths[k])
        for k, t in zip(self.local, summed[len(self.moments):]):
            out[k] = t / self.world
        return out


def global_linear_cka(pairs: list[tuple[torch.Tensor, torch.Tensor]], estimator: str = "auto") -> list[torch.Tensor]:
    """Linear CKA (float64 scalars, no gradient, identical on every rank) of each pair of rank-local features
    ``X`` ``[b, p...]``, ``Y`` ``[b, q...]`` over the rows of ALL ranks. The pairs that use the Gram form share
    one all-gather, those that use the moment form one all-reduce, whatever the number of layers. Every rank
    must hold the same shapes (the caller checks; see ``distsnn.distributed.check_same_shapes``)."""
    cka = GlobalCKA(pairs, estimator)
    gathered = all_gather_columns(cka.to_gather, grad=False) if cka.to_gather else []
    summed = all_reduce_sums(cka.to_sum) if cka.to_sum else []
    return [cka_from_hsic_terms(t) for t in cka.finish(gathered, summed)]
