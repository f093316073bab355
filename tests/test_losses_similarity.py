"""unbiased_hsic (SSCL Eq.9) against the U-statistic over distinct index tuples; linear_cka's properties."""
import itertools

import numpy as np
import pytest
import torch

from distsnn.losses import linear_cka, unbiased_hsic


def hsic_u_statistic(k, l):
    """Song et al.'s unbiased HSIC written as averages over distinct index tuples (no matrix algebra)."""
    n = k.shape[0]
    pairs = list(itertools.permutations(range(n), 2))
    triples = list(itertools.permutations(range(n), 3))
    quads = list(itertools.permutations(range(n), 4))
    a = np.mean([k[i, j] * l[i, j] for i, j in pairs])
    b = np.mean([k[i, j] * l[q, r] for i, j, q, r in quads])
    c = np.mean([k[i, j] * l[i, q] for i, j, q in triples])
    return a + b - 2 * c


@pytest.mark.parametrize("n", [4, 7])
def test_unbiased_hsic_matches_expanded_formula(n):
    rng = np.random.default_rng(n)
    x, y = rng.normal(size=(n, 3)), rng.normal(size=(n, 5))
    k, l = x @ x.T, np.tanh(y @ y.T)
    got = unbiased_hsic(torch.from_numpy(k), torch.from_numpy(l)).item()
    assert got == pytest.approx(hsic_u_statistic(k, l), rel=1e-9, abs=1e-12)


def test_unbiased_hsic_rejects_small_or_mismatched():
    with pytest.raises(ValueError, match="n >= 4"):
        unbiased_hsic(torch.eye(3), torch.eye(3))
    with pytest.raises(ValueError, match=r"\[n, n\]"):
        unbiased_hsic(torch.eye(5), torch.eye(4))
    with pytest.raises(ValueError, match="n >= 4"):
        linear_cka(torch.randn(3, 2), torch.randn(3, 2))


def test_linear_cka_properties():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(40, 6, generator=g)
    y = x @ torch.randn(6, 9, generator=g) + 0.3 * torch.randn(40, 9, generator=g)
    q, _ = torch.linalg.qr(torch.randn(6, 6, generator=g, dtype=torch.float64))
    base = linear_cka(x, y).item()
    assert linear_cka(x, x).item() == pytest.approx(1.0, abs=1e-12)
    assert linear_cka(x.double() @ q, y).item() == pytest.approx(base, rel=1e-9)   # orthogonal
    assert linear_cka(7.5 * x, 0.01 * y).item() == pytest.approx(base, rel=1e-9)   # isotropic scale
    assert 0.3 < base < 1.0
    # Flattening: [n, C, H, W] is the same as its [n, C*H*W] view.
    f = torch.randn(40, 2, 3, 3, generator=g)
    assert linear_cka(f, y).item() == pytest.approx(linear_cka(f.reshape(40, -1), y).item(), rel=1e-12)


def test_linear_cka_near_zero_for_independent_features():
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(400, 8, generator=g), torch.randn(400, 8, generator=g)
    assert abs(linear_cka(x, y).item()) < 0.03


def test_linear_cka_of_a_silent_layer_is_zero_not_nan():
    y = torch.randn(10, 4)
    assert linear_cka(torch.zeros(10, 5), y).item() == 0.0
    assert linear_cka(torch.ones(10, 5), y).item() == 0.0   # constant across the batch: no variation


def test_linear_cka_mismatched_rows():
    with pytest.raises(ValueError, match="same number of rows"):
        linear_cka(torch.randn(6, 2), torch.randn(5, 2))
