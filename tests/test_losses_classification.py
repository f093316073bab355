"""Mean-over-time CE (TCL Eq.4) and TET (Eq.5) against numpy with analytic gradients."""
import numpy as np
import pytest
import torch

from distsnn.losses import mean_ce_loss, tet_loss


def _softmax(v):
    e = np.exp(v - v.max())
    return e / e.sum()


def _problem(seed=0, t=3, b=5, k=4):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(t, b, k, generator=g, dtype=torch.float64, requires_grad=True)
    labels = torch.randint(0, k, (b,), generator=g)
    return logits, labels


def test_mean_ce_matches_numpy_value_and_gradient():
    logits, labels = _problem()
    t, b, k = logits.shape
    loss = mean_ce_loss(logits, labels)
    loss.backward()
    x, y = logits.detach().numpy(), labels.numpy()
    value, grad = 0.0, np.zeros_like(x)
    for i in range(b):
        mean = sum(x[s, i] for s in range(t)) / t
        p = _softmax(mean)
        value += -np.log(p[y[i]]) / b
        onehot = np.eye(k)[y[i]]
        for s in range(t):
            grad[s, i] = (p - onehot) / (b * t)
    assert loss.item() == pytest.approx(value, rel=1e-12)
    np.testing.assert_allclose(logits.grad.numpy(), grad, rtol=1e-10, atol=1e-12)


def test_tet_matches_numpy_value_and_gradient():
    logits, labels = _problem(seed=1)
    t, b, k = logits.shape
    loss = tet_loss(logits, labels)
    loss.backward()
    x, y = logits.detach().numpy(), labels.numpy()
    value, grad = 0.0, np.zeros_like(x)
    for s in range(t):
        for i in range(b):
            p = _softmax(x[s, i])
            value += -np.log(p[y[i]]) / (t * b)
            grad[s, i] = (p - np.eye(k)[y[i]]) / (t * b)
    assert loss.item() == pytest.approx(value, rel=1e-12)
    np.testing.assert_allclose(logits.grad.numpy(), grad, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("fn", [mean_ce_loss, tet_loss])
def test_bad_shapes_name_the_argument(fn):
    logits, labels = _problem()
    with pytest.raises(ValueError, match="logits must be"):
        fn(logits[0], labels)
    with pytest.raises(ValueError, match="labels must be"):
        fn(logits, labels[:-1])
