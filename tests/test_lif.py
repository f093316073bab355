"""LIF: fast kernel == reference loop, hand-computed dynamics, surrogate formulas, statelessness."""
import math

import pytest
import torch

from distsnn.spiking import LIF, lif_fused, lif_reference, surrogate_grad

CASES = [("rect", 1.0, 0.25, 0.5), ("rect", 0.5, 0.5, 1.0), ("sigmoid", 4.0, 0.25, 0.5),
         ("atan", 2.0, 0.5, 0.3), ("atan", 1.0, 0.0, 0.5), ("sigmoid", 2.0, 1.0, 0.7)]


@pytest.mark.parametrize("surrogate,width,decay,threshold", CASES)
def test_fast_equals_reference_float32(surrogate, width, decay, threshold):
    g = torch.Generator().manual_seed(hash((surrogate, width, decay)) % 2**31)
    x = (torch.randn(5, 3, 4, 6, generator=g) * 0.8 + 0.3).requires_grad_()
    w = torch.randn(5, 3, 4, 6, generator=g)
    ref = lif_reference(x, decay, threshold, surrogate, width)
    (g_ref,) = torch.autograd.grad((ref * w).sum(), x)
    fast = lif_fused(x, decay, threshold, surrogate, width)
    (g_fast,) = torch.autograd.grad((fast * w).sum(), x)
    assert torch.equal(fast, ref)
    assert 0 < ref.mean() < 1  # the inputs exercise both firing and silence
    torch.testing.assert_close(g_fast, g_ref, atol=1e-5, rtol=1e-5)


def test_fast_bfloat16_keeps_membrane_in_float32():
    """bf16 in -> bf16 spikes; the fused kernel integrates in float32 (like a mixed-precision accumulator)."""
    x = (torch.randn(4, 2, 3, 5) * 0.8 + 0.3).bfloat16().requires_grad_()
    w = torch.randn(4, 2, 3, 5).bfloat16()
    fast = lif_fused(x, 0.25, 0.5, "rect", 1.0)
    assert fast.dtype == torch.bfloat16
    x32 = x.detach().float().requires_grad_()
    ref = lif_reference(x32, 0.25, 0.5, "rect", 1.0)
    assert torch.equal(fast.float(), ref)
    (g_fast,) = torch.autograd.grad((fast * w).sum(), x)
    (g_ref,) = torch.autograd.grad((ref * w.float()).sum(), x32)
    assert g_fast.dtype == torch.bfloat16
    torch.testing.assert_close(g_fast.float(), g_ref.bfloat16().float(), atol=1e-2, rtol=1e-2)


@pytest.mark.parametrize("implementation", ["fast", "reference"])
def test_hand_computed_three_steps(implementation):
    # decay 0.25, threshold 0.5, rect surrogate on [0, 1] (SSCL Eq.21)
    # column 0: U_pre = 0.3, 0.375, 0.69375 -> spikes 0, 0, 1
    # column 1: U_pre = 0.6 (fire, reset), 0.1, 0.475 -> spikes 1, 0, 0
    # column 2: U_pre = 1.2 (fire), -0.2, -0.05 + 0.5 = 0.45 -> spikes 1, 0, 0
    x = torch.tensor([[0.3, 0.6, 1.2], [0.3, 0.1, -0.2], [0.6, 0.45, 0.5]], requires_grad=True)
    s = LIF(0.25, 0.5, "rect", implementation=implementation)(x)
    assert s.tolist() == [[0, 1, 1], [0, 0, 0], [1, 0, 0]]
    s.sum().backward()
    # Column 0, by hand: g_pre[2] = sg(0.69375) = 1; g_pre[1] = 1 + 0.25*1*((1-0) - 0.375*1) = 1.15625;
    # g_pre[0] = 1 + 0.25*1.15625*((1-0) - 0.3*1) = 1.20234375.
    # Column 2: U_pre[0] = 1.2 is outside [0, 1] so sg = 0 there: g_pre[2] = 1, g_pre[1] (U_pre -0.2, sg 0) =
    # 0.25*1*(1 - 0) = 0.25, g_pre[0] = 0 + 0.25*0.25*((1-1) - 1.2*0) = 0.
    expected_col0 = [1.20234375, 1.15625, 1.0]
    expected_col2 = [0.0, 0.25, 1.0]
    torch.testing.assert_close(x.grad[:, 0], torch.tensor(expected_col0))
    torch.testing.assert_close(x.grad[:, 2], torch.tensor(expected_col2))


def test_surrogates_match_their_formulas():
    v = torch.linspace(-2, 2, 401, dtype=torch.float64)
    rect = surrogate_grad(v, "rect", 1.0)
    assert torch.equal(rect, ((v >= -0.5) & (v <= 0.5)).double())  # U in [0, 1] for U_th = 0.5
    for name, a, primitive in [("sigmoid", 4.0, lambda t: torch.sigmoid(4.0 * t)),
                               ("atan", 2.0, lambda t: torch.atan(math.pi / 2 * 2.0 * t) / math.pi + 0.5)]:
        vv = v.clone().requires_grad_()
        (expected,) = torch.autograd.grad(primitive(vv).sum(), vv)
        torch.testing.assert_close(surrogate_grad(v, name, a), expected)


def test_no_state_survives_between_calls():
    lif = LIF()
    assert list(lif.buffers()) == [] and list(lif.parameters()) == []
    x = torch.rand(4, 2, 8) + 0.2
    first = lif(x)
    lif(torch.rand(3, 5, 7) * 3)  # a different batch in between
    assert torch.equal(lif(x), first)
    # splitting T: the second half alone starts from U = 0, not from the first half's membrane
    assert torch.equal(lif(x[2:]), LIF()(x[2:].clone()))


@pytest.mark.parametrize("kwargs,culprit", [(dict(threshold=0.0), "threshold"), (dict(threshold=-1.0), "threshold"),
                                            (dict(surrogate="relu"), "surrogate"), (dict(decay=1.5), "decay"),
                                            (dict(implementation="cuda"), "implementation"), (dict(width=0), "width")])
def test_bad_arguments_name_the_culprit(kwargs, culprit):
    with pytest.raises(ValueError, match=culprit):
        LIF(**kwargs)


def test_bad_input_rank():
    with pytest.raises(ValueError, match="x"):
        LIF()(torch.rand(5))
