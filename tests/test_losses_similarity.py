"""unbiased_hsic (SSCL Eq.9) against the U-statistic over distinct index tuples; linear_cka's properties; the
feature-space (moment) form of CKA against the same U-statistic, and the per-layer choice of form."""
import itertools

import numpy as np
import pytest
import torch

from distsnn.losses import linear_cka, unbiased_hsic
from distsnn.losses.global_cka import choose_estimator, global_linear_cka
from distsnn.losses.similarity import cka_moments, linear_cka_from_moments


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
    x = torch.randn(40, 6, generator=g, dtype=torch.float64)   # float64: 0.01 * y in float32 rounds (1e-9 in CKA)
    y = x @ torch.randn(6, 9, generator=g, dtype=torch.float64) + 0.3 * torch.randn(40, 9, generator=g, dtype=torch.float64)
    q, _ = torch.linalg.qr(torch.randn(6, 6, generator=g, dtype=torch.float64))
    base = linear_cka(x, y).item()
    assert linear_cka(x, x).item() == pytest.approx(1.0, abs=1e-12)
    assert linear_cka(x @ q, y).item() == pytest.approx(base, rel=1e-9)   # orthogonal
    assert linear_cka(7.5 * x, 0.01 * y).item() == pytest.approx(base, rel=1e-9)   # isotropic scale
    assert 0.3 < base < 1.0
    # Flattening: [n, C, H, W] is the same as its [n, C*H*W] view.
    f = torch.randn(40, 2, 3, 3, generator=g, dtype=torch.float64)
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


def cka_u_statistic(x, y):
    k, l = x @ x.T, y @ y.T
    return hsic_u_statistic(k, l) / np.sqrt(hsic_u_statistic(k, k) * hsic_u_statistic(l, l))


@pytest.mark.parametrize("n", [5, 8])
def test_cka_from_moments_matches_the_u_statistic(n):
    # Non-negative, uncentred features (firing rates, ReLU outputs) with a shared component.
    rng = np.random.default_rng(10 + n)
    x = rng.uniform(0.5, 2.0, size=(n, 3))
    y = np.abs(x[:, :1] @ rng.normal(size=(1, 4)) + rng.uniform(0, 1, size=(n, 4)))
    got = linear_cka_from_moments(cka_moments(torch.from_numpy(x), torch.from_numpy(y)), 3, 4).item()
    assert got == pytest.approx(cka_u_statistic(x, y), rel=1e-9)


def test_moments_of_row_blocks_add_up_to_the_whole_batch():
    g = torch.Generator().manual_seed(3)
    x = torch.rand(30, 2, 3, 3, generator=g) + 1.0          # [n, C, H, W] is flattened like linear_cka
    y = torch.rand(30, 7, generator=g) + x.flatten(1)[:, :7]
    blocks = sum(cka_moments(x[i:i + 10], y[i:i + 10]) for i in range(0, 30, 10))
    torch.testing.assert_close(blocks, cka_moments(x, y), rtol=1e-12, atol=1e-9)
    assert linear_cka_from_moments(blocks, 18, 7).item() == pytest.approx(linear_cka(x, y).item(), rel=1e-9)


def test_moments_form_edge_cases():
    y = torch.randn(10, 4)
    assert linear_cka_from_moments(cka_moments(torch.zeros(10, 5), y), 5, 4).item() == 0.0
    assert linear_cka_from_moments(cka_moments(torch.ones(10, 5), y), 5, 4).item() == 0.0
    with pytest.raises(ValueError, match="n >= 4"):
        linear_cka_from_moments(cka_moments(torch.randn(3, 2), torch.randn(3, 2)), 2, 2)
    with pytest.raises(ValueError, match="expected 22 sums for p=2, q=1"):
        linear_cka_from_moments(cka_moments(torch.randn(6, 2), torch.randn(6, 2)), 2, 1)
    with pytest.raises(ValueError, match="same number of rows"):
        cka_moments(torch.randn(6, 2), torch.randn(5, 2))


def test_choice_of_form_and_both_forms_agree():
    assert choose_estimator("auto", 16, 16, 64) == "moments"
    assert choose_estimator("auto", 512, 512, 512) == "gram"
    assert choose_estimator("auto", 512, 512, 513) == "moments"
    assert choose_estimator("gram", 4, 4, 1024) == "gram"
    with pytest.raises(ValueError, match="'svd'"):
        choose_estimator("svd", 4, 4, 8)
    g = torch.Generator().manual_seed(4)
    pairs = [(torch.rand(20, 3, generator=g), torch.rand(20, 2, 2, 2, generator=g)),   # p+q = 11 < 2n: moments
             (torch.rand(20, 12, generator=g), torch.rand(20, 30, generator=g))]       # 42 >= 2n = 40: gram
    auto = global_linear_cka(pairs, "auto")
    for form in ("gram", "moments"):
        for got, want in zip(global_linear_cka(pairs, form), auto):
            assert got.item() == pytest.approx(want.item(), rel=1e-9)
    assert [c.item() for c in auto] == [pytest.approx(linear_cka(x, y).item(), rel=1e-9) for x, y in pairs]
