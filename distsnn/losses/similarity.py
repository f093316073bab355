"""Representation similarity: unbiased HSIC (SSCL Eq.9) and linear CKA (SSCL Eq.8, Kornblith et al.)."""
from __future__ import annotations

import torch


def unbiased_hsic(K: torch.Tensor, L: torch.Tensor) -> torch.Tensor:
    """SSCL Eq.9 (Song et al. 2012), the unbiased HSIC_1 estimator on ``[n, n]`` Gram matrices::

        HSIC_1 = 1/(n(n-3)) [ tr(K~ L~) + (1'K~1)(1'L~1)/((n-1)(n-2)) - 2/(n-2) 1'K~L~1 ]

    K~, L~: K, L with zeroed diagonals. Needs n >= 4 (ValueError otherwise). Computed in the input
    dtype; pass float64 for large, uncentred features.
    """
    if K.dim() != 2 or K.shape[0] != K.shape[1] or K.shape != L.shape:
        raise ValueError(f"unbiased_hsic: K and L must be [n, n] of the same shape, got {list(K.shape)} "
                         f"and {list(L.shape)}")
    n = K.shape[0]
    if n < 4:
        raise ValueError(f"unbiased_hsic: the unbiased estimator (Eq.9) needs n >= 4 samples, got n = {n}")
    off = 1 - torch.eye(n, dtype=K.dtype, device=K.device)
    K, L = K * off, L * off
    trace_kl = (K * L.T).sum()
    sums = K.sum() * L.sum() / ((n - 1) * (n - 2))
    cross = 2.0 / (n - 2) * (K.sum(dim=0) @ L.sum(dim=1))              # 1'K~L~1 = (K~'1)'(L~1)
    return (trace_kl + sums - cross) / (n * (n - 3))


def linear_cka(X: torch.Tensor, Y: torch.Tensor) -> torch.Tensor:
    """Linear CKA of ``X`` ``[n, p...]`` and ``Y`` ``[n, q...]`` (flattened per sample), float64, no grad.

    CKA = HSIC_1(K, L) / sqrt(HSIC_1(K, K) HSIC_1(L, L)) with K = X X', L = Y Y' (Kornblith et al.
    2019 with the unbiased HSIC of Eq.9, as Nguyen et al. 2020). SSCL Eq.8 prints the denominator
    without the square root; that is not scale-invariant (it is not 1 for X vs X), so we take
    Kornblith's form. A representation with no measurable variation across the batch (e.g. a silent
    spiking layer: all-zero features) has no defined CKA; we return 0 for it (nothing shared), so the
    1/CKA weight takes its clamp and no NaN reaches a loss.
    """
    if X.shape[0] != Y.shape[0]:
        raise ValueError(f"linear_cka: X and Y must have the same number of rows n, got {X.shape[0]} and {Y.shape[0]}")
    with torch.no_grad():
        X = X.reshape(X.shape[0], -1).double()
        Y = Y.reshape(Y.shape[0], -1).double()
        K, L = X @ X.T, Y @ Y.T
        kl, kk, ll = unbiased_hsic(K, L), unbiased_hsic(K, K), unbiased_hsic(L, L)
        # "No variation" relative to the kernel's own scale: a constant kernel gives kk ~ 1e-16 * K^2.
        tiny = 1e-10
        ok = (kk > tiny * (K * K).mean()) & (ll > tiny * (L * L).mean())
        denom = torch.sqrt(torch.where(ok, kk * ll, torch.ones_like(kk)))
        return torch.where(ok, kl / denom, torch.zeros_like(kl))
