"""nce_critic_loss (SSCL Eq.17, 19) and the CRD normaliser against plain loops, values and gradients."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from distsnn.losses import estimate_log_z, nce_critic_loss


def reference(zs, za, tau, m, log_z):
    """Loop form: h = x / (x + N/M), x = exp(s.a/tau) / Z; -mean_i [log h_ii + sum_{j!=i} log(1 - h_ij)]."""
    b = zs.shape[0]
    n = b - 1
    total = 0.0
    for i in range(b):
        for j in range(b):
            x = torch.exp(torch.dot(zs[i], za[j]) / tau) / math.exp(log_z)
            h = x / (x + n / m)
            total = total + (torch.log(h) if i == j else torch.log(1 - h))
    return -total / b


def _pair(b, d, seed):
    g = torch.Generator().manual_seed(seed)
    rs = torch.randn(b, d, generator=g, dtype=torch.float64, requires_grad=True)
    ra = torch.randn(b, d, generator=g, dtype=torch.float64, requires_grad=True)
    return rs, ra, F.normalize(rs, dim=-1), F.normalize(ra, dim=-1)


@pytest.mark.parametrize("log_z", [0.0, 3.7])
def test_matches_loop_reference(log_z):
    rs, ra, zs, za = _pair(6, 5, seed=1)
    got = nce_critic_loss(zs, za, 0.5, num_data=50, log_z=log_z)
    g_got = torch.autograd.grad(got, (rs, ra), retain_graph=True)
    want = reference(zs, za, 0.5, 50, log_z)
    g_want = torch.autograd.grad(want, (rs, ra))
    assert got.item() == pytest.approx(want.item(), rel=1e-10)
    for a, b in zip(g_got, g_want):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


def test_literal_eq19_is_finite_where_the_naive_ratio_is_not():
    # tau 0.07 and M = 1.2M images: N/M ~ 1e-5 while e^{s.a/tau} reaches e^14; 1 - h rounds to 0 in
    # float32 for aligned pairs, so log(1 - h) computed as a ratio would be -inf.
    rs, ra, zs, za = _pair(8, 4, seed=2)
    za_aligned = zs.detach().float().clone()  # every a_j close to s_j, negatives included via j != i
    za_aligned[1] = za_aligned[0]             # a negative pair (0, 1) that is perfectly aligned
    got = nce_critic_loss(zs.detach().float(), za_aligned, 0.07, num_data=1_281_167, log_z=0.0)
    assert torch.isfinite(got)
    x = torch.exp(zs.detach().float()[0] @ za_aligned[1] / 0.07)
    naive = torch.log(1 - x / (x + 7 / 1_281_167))
    assert not torch.isfinite(naive)          # the case the stable form is for


def test_estimate_log_z_matches_numpy():
    _, _, zs, za = _pair(7, 3, seed=3)
    got = estimate_log_z(zs, za, 0.2, num_data=1000)
    s, a = zs.detach().numpy(), za.detach().numpy()
    mean = np.mean([np.exp(s[i] @ a[j] / 0.2) for i in range(7) for j in range(7)])
    assert got.item() == pytest.approx(math.log(1000 * mean), rel=1e-12)
    assert not got.requires_grad


def test_with_estimated_z_the_critic_is_informative():
    # With Z the positives' h is no longer ~1 for every pair: the loss is moderate, unlike literal Eq.19.
    _, _, zs, za = _pair(16, 8, seed=4)
    zs, za = zs.detach(), za.detach()
    log_z = estimate_log_z(zs, za, 0.07, num_data=100_000)
    with_z = nce_critic_loss(zs, za, 0.07, num_data=100_000, log_z=log_z)
    literal = nce_critic_loss(zs, za, 0.07, num_data=100_000, log_z=0.0)
    assert with_z.item() < literal.item() / 10


def test_bad_input():
    rs, ra, zs, za = _pair(4, 3, seed=5)
    with pytest.raises(ValueError, match="z_s must be L2-normalised"):
        nce_critic_loss(rs, za, num_data=10)
    with pytest.raises(ValueError, match="z_a must be L2-normalised"):
        nce_critic_loss(zs, ra, num_data=10)
    with pytest.raises(ValueError, match="same shape"):
        nce_critic_loss(zs, za[:3], num_data=10)
    with pytest.raises(ValueError, match="num_data"):
        nce_critic_loss(zs, za, num_data=0)
    with pytest.raises(ValueError, match="at least 2 samples"):
        nce_critic_loss(zs[:1], za[:1], num_data=10)
