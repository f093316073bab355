"""Representation similarity: unbiased HSIC (SSCL Eq.9) and linear CKA (SSCL Eq.8, Kornblith et al.), from
``[n, n]`` Gram matrices or, with the same value, from feature-space sums that add up over ranks."""
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
    # 1'K~L~1 = (K~'1)'(L~1)
    return _hsic_from_sums((K * L.T).sum(), K.sum(), L.sum(), K.sum(dim=0) @ L.sum(dim=1), n)


_TINY = 1e-10  # "no variation" relative to the kernel's own scale: a constant kernel gives kk ~ 1e-16 * K^2


def _hsic_from_sums(trace_kl, sum_k, sum_l, cross, n):
    """Eq.9 from its four sums: tr(K~L~), 1'K~1, 1'L~1, 1'K~L~1."""
    return (trace_kl + sum_k * sum_l / ((n - 1) * (n - 2)) - 2.0 / (n - 2) * cross) / (n * (n - 3))


def cka_from_hsic_terms(terms: torch.Tensor) -> torch.Tensor:
    """Linear CKA (SSCL Eq.8, Kornblith form) from HSIC terms ``[..., 5]`` = (HSIC_1(K, L), HSIC_1(K, K),
    HSIC_1(L, L), mean K^2, mean L^2), as :func:`hsic_terms` returns them, or their mean over mini-batches
    (Nguyen et al. 2020). CKA = HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L)); SSCL Eq.8 prints the denominator
    without the square root, which is not scale-invariant (not 1 for X vs X), so we take Kornblith's form.
    A representation with no measurable variation (HSIC(K, K) below 1e-10 of the kernel's own scale mean K^2,
    e.g. a silent spiking layer) has no defined CKA: 0 (nothing shared), so 1/CKA takes its clamp, no NaN."""
    kl, kk, ll, k_scale, l_scale = terms.unbind(-1)
    ok = (kk > _TINY * k_scale) & (ll > _TINY * l_scale) & (k_scale > 0) & (l_scale > 0)
    denom = torch.sqrt(torch.where(ok, kk * ll, torch.ones_like(kk)))
    return torch.where(ok, kl / denom, torch.zeros_like(kl))


def hsic_terms(X: torch.Tensor, Y: torch.Tensor) -> torch.Tensor:
    """The five numbers linear CKA is made of, float64 ``[5]``, no gradient: HSIC_1(K, L), HSIC_1(K, K),
    HSIC_1(L, L) (Eq.9) and the kernels' scales mean K^2, mean L^2, with K = X X', L = Y Y' for ``X``
    ``[n, p...]``, ``Y`` ``[n, q...]`` flattened per sample. The HSIC terms are unbiased, so their mean over
    mini-batches estimates the population HSIC (Nguyen et al. 2020); see :func:`cka_from_hsic_terms`."""
    if X.shape[0] != Y.shape[0]:
        raise ValueError(f"linear_cka: X and Y must have the same number of rows n, got {X.shape[0]} and {Y.shape[0]}")
    with torch.no_grad():
        X = X.reshape(X.shape[0], -1).double()
        Y = Y.reshape(Y.shape[0], -1).double()
        K, L = X @ X.T, Y @ Y.T
        return torch.stack([unbiased_hsic(K, L), unbiased_hsic(K, K), unbiased_hsic(L, L),
                            (K * K).mean(), (L * L).mean()])


def linear_cka(X: torch.Tensor, Y: torch.Tensor) -> torch.Tensor:
    """Linear CKA of ``X`` ``[n, p...]`` and ``Y`` ``[n, q...]`` (flattened per sample), float64, no grad:
    :func:`cka_from_hsic_terms` of :func:`hsic_terms` (Eq.8 with the unbiased HSIC of Eq.9)."""
    return cka_from_hsic_terms(hsic_terms(X, Y))


def cka_moments(X: torch.Tensor, Y: torch.Tensor) -> torch.Tensor:
    """The feature-space sums from which :func:`linear_cka_from_moments` gets linear CKA: one float64
    vector of length p*q + p^2 + q^2 + 3(p + q) + 6 for ``X`` ``[b, p...]``, ``Y`` ``[b, q...]``.

    Every entry is a sum over samples, so the vectors of disjoint row blocks ADD UP to the vector of
    the whole batch: rank-local vectors summed with one all-reduce give the global batch's CKA, with
    memory and traffic independent of the batch size (the Gram form needs ``[n, n]``). Cost
    O(b (p + q)^2). No gradient.
    """
    if X.shape[0] != Y.shape[0]:
        raise ValueError(f"cka_moments: X and Y must have the same number of rows, got {X.shape[0]} and {Y.shape[0]}")
    with torch.no_grad():
        X = X.reshape(X.shape[0], -1).double()
        Y = Y.reshape(Y.shape[0], -1).double()
        a, c = (X * X).sum(1), (Y * Y).sum(1)                    # diagonals of K = XX' and L = YY'
        n = torch.tensor([float(X.shape[0])], dtype=torch.float64, device=X.device)
        scalars = torch.stack([a.sum(), c.sum(), a @ c, a @ a, c @ c])
        return torch.cat([(X.T @ Y).flatten(), (X.T @ X).flatten(), (Y.T @ Y).flatten(),
                          X.sum(0), Y.sum(0), X.T @ a, X.T @ c, Y.T @ a, Y.T @ c, scalars, n])


def hsic_terms_from_moments(m: torch.Tensor, p: int, q: int) -> torch.Tensor:
    """The :func:`hsic_terms` (same values) from the summed :func:`cka_moments` of features of
    widths ``p`` and ``q``. With K~ = XX' - diag(a), a_i = |x_i|^2 (L~, c likewise) and s_x = X'1::

        tr(K~L~)  = |X'Y|_F^2 - a.c          1'K~1 = |s_x|^2 - 1'a
        1'K~L~1   = s_x' X'Y s_y - s_y.(Y'a) - s_x.(X'c) + a.c

    and Eq.9 of those sums; likewise for (K, K) and (L, L). Needs n >= 4 (ValueError otherwise).
    """
    sizes = [p * q, p * p, q * q, p, q, p, p, q, q, 5, 1]
    if m.dim() != 1 or m.numel() != sum(sizes):
        raise ValueError(f"hsic_terms_from_moments: expected {sum(sizes)} sums for p={p}, q={q}, got {list(m.shape)}")
    xy, xx, yy, sx, sy, xa, xc, ya, yc, scalars, n = m.split(sizes)
    xy, xx, yy = xy.view(p, q), xx.view(p, p), yy.view(q, q)
    sum_a, sum_c, ac, aa, cc = scalars
    n = n[0]
    if n < 4:
        raise ValueError(f"hsic_terms_from_moments: the unbiased estimator (Eq.9) needs n >= 4 samples, got n = {int(n)}")
    sk, sl = sx @ sx - sum_a, sy @ sy - sum_c
    kl = _hsic_from_sums((xy * xy).sum() - ac, sk, sl, sx @ xy @ sy - sy @ ya - sx @ xc + ac, n)
    kk = _hsic_from_sums((xx * xx).sum() - aa, sk, sk, sx @ xx @ sx - 2 * (sx @ xa) + aa, n)
    ll = _hsic_from_sums((yy * yy).sum() - cc, sl, sl, sy @ yy @ sy - 2 * (sy @ yc) + cc, n)
    # mean of K*K over the n^2 entries = |X'X|_F^2 / n^2
    return torch.stack([kl, kk, ll, (xx * xx).sum() / n ** 2, (yy * yy).sum() / n ** 2])


def linear_cka_from_moments(m: torch.Tensor, p: int, q: int) -> torch.Tensor:
    """Linear CKA (as :func:`linear_cka`, same value) from the summed :func:`cka_moments`."""
    return cka_from_hsic_terms(hsic_terms_from_moments(m, p, q))
