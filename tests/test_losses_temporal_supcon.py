"""temporal_supcon_loss (TCL Eq.7/10) against a plain loop over anchors and pairs, values and gradients."""
import pytest
import torch
import torch.nn.functional as F

from distsnn.losses import temporal_supcon_loss


def reference(z, labels, tau):
    """Loop form of SupCon over (step, sample) anchors: z [S, B, D], labels [B] or None."""
    s_n, b_n, _ = z.shape
    ids = list(range(b_n)) if labels is None else labels.tolist()
    anchors = [(s, i) for s in range(s_n) for i in range(b_n)]
    losses = []
    for (s, i) in anchors:
        others = [(s2, j) for (s2, j) in anchors if (s2, j) != (s, i)]
        denom = sum(torch.exp(torch.dot(z[s, i], z[s2, j]) / tau) for (s2, j) in others)
        positives = [(s2, j) for (s2, j) in others if ids[j] == ids[i]]
        if not positives:
            continue
        total = 0.0
        for (s2, j) in positives:
            total = total + torch.log(torch.exp(torch.dot(z[s, i], z[s2, j]) / tau) / denom)
        losses.append(-total / len(positives))
    if not losses:
        return torch.zeros((), dtype=z.dtype)
    return sum(losses) / len(losses)


def _z(s, b, d, seed):
    g = torch.Generator().manual_seed(seed)
    raw = torch.randn(s, b, d, generator=g, dtype=torch.float64, requires_grad=True)
    return raw, F.normalize(raw, dim=-1)


@pytest.mark.parametrize("supervised", [True, False])
@pytest.mark.parametrize("s", [2, 4])
def test_matches_loop_reference(supervised, s):
    raw, z = _z(s, 6, 5, seed=s + 10 * supervised)
    labels = torch.tensor([0, 1, 0, 2, 1, 0]) if supervised else None
    tau = 0.3
    got = temporal_supcon_loss(z, labels, tau)
    (g_got,) = torch.autograd.grad(got, raw, retain_graph=True)
    want = reference(z, labels, tau)
    (g_want,) = torch.autograd.grad(want, raw)
    assert got.item() == pytest.approx(want.item(), rel=1e-10)
    torch.testing.assert_close(g_got, g_want, rtol=1e-9, atol=1e-12)


def test_anchor_without_positive_is_left_out():
    # S = 1: class 3 appears once, so its anchor has no positive; the others still count.
    raw, z = _z(1, 5, 4, seed=3)
    labels = torch.tensor([0, 0, 1, 1, 3])
    got = temporal_supcon_loss(z, labels, 0.5)
    want = reference(z, labels, 0.5)
    assert got.item() == pytest.approx(want.item(), rel=1e-10)
    (g,) = torch.autograd.grad(got, raw)
    assert torch.isfinite(g).all()


def test_no_positive_at_all_gives_zero_not_nan():
    raw, z = _z(1, 4, 4, seed=4)
    got = temporal_supcon_loss(z, torch.tensor([0, 1, 2, 3]), 0.1)
    assert got.item() == 0.0
    (g,) = torch.autograd.grad(got, raw)
    assert torch.equal(g, torch.zeros_like(g))


def test_float32_and_low_temperature_stay_finite():
    # tau = 0.01: logits up to 100, exp would overflow float32 without the log-sum-exp.
    raw, z = _z(4, 8, 16, seed=5)
    got = temporal_supcon_loss(z.float(), torch.arange(8) % 3, 0.01)
    assert torch.isfinite(got)


def test_bad_input():
    raw, z = _z(2, 4, 3, seed=6)
    with pytest.raises(ValueError, match="L2-normalised"):
        temporal_supcon_loss(raw.detach() * 2, torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="L2-normalised"):
        temporal_supcon_loss(torch.full((2, 4, 3), float("nan")), None)
    with pytest.raises(ValueError, match=r"\[S, B, D\]"):
        temporal_supcon_loss(z[0], None)
    with pytest.raises(ValueError, match="labels must be"):
        temporal_supcon_loss(z, torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="at least 2"):
        temporal_supcon_loss(z[:1, :1], torch.zeros(1, dtype=torch.long))
    with pytest.raises(ValueError, match="S >= 2"):
        temporal_supcon_loss(z[:1], None)


def _eq10_as_printed(z, labels, tau):
    """TCL Eq.10 (Eq.7 for labels=None) literally: -1/T sum_i 1/|P(i)| sum_t sum_t' sum_{p in P(i)} [i != p or
    t != t'] log(exp(z_i^t.z_p^t'/tau) / sum_{(k,t'') != (i,t)} exp(z_i^t.z_k^t''/tau)), P(i) the samples of i's
    class (i itself included); for Eq.7 P(i) = {i} and the 1/|P(i)| is 1."""
    t_n, b_n, _ = z.shape
    ids = list(range(b_n)) if labels is None else labels.tolist()
    total = 0.0
    for i in range(b_n):
        same = [p for p in range(b_n) if ids[p] == ids[i]]
        for t in range(t_n):
            denom = sum(torch.exp(z[t, i] @ z[t2, k] / tau) for t2 in range(t_n) for k in range(b_n) if (k, t2) != (i, t))
            for t2 in range(t_n):
                for p in same:
                    if p != i or t2 != t:
                        total = total + torch.log(torch.exp(z[t, i] @ z[t2, p] / tau) / denom) / len(same)
    return -total / t_n


def test_normalisation_is_one_over_n_t_of_eq10_and_eq7():
    # The docstring's normalisation: with c images per class, L = Eq.10 * c / (N (T c - 1)) ~ Eq.10 / (N T);
    # Eq.7: L = Eq.7 / (N (T - 1)). A 1/N-only normalisation (the old docstring) fails both.
    t_n, n, c = 3, 6, 2
    _, z = _z(t_n, n, 4, seed=21)
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    got = temporal_supcon_loss(z, labels, 0.5)
    assert got.item() == pytest.approx(_eq10_as_printed(z, labels, 0.5).item() * c / (n * (t_n * c - 1)), rel=1e-10)
    got7 = temporal_supcon_loss(z, None, 0.5)
    assert got7.item() == pytest.approx(_eq10_as_printed(z, None, 0.5).item() / (n * (t_n - 1)), rel=1e-10)
