"""Surrogate gradients dO/dU of the Heaviside spike O = H(U - U_th).

All take ``v = U_pre - U_th`` and a ``width`` parameter:
- ``rect``: SSCL Eq.21, dO/dU = 1/w on |v| <= w/2 (w = 1 with U_th = 0.5 is exactly the window 0 <= U <= 1);
- ``sigmoid``: dO/dU = a * sigma(a v) (1 - sigma(a v)), a = width;
- ``atan``: dO/dU = (a / 2) / (1 + (pi/2 * a * v)^2), a = width.
"""
from __future__ import annotations

import math

import torch

SURROGATES = ("rect", "sigmoid", "atan")


def check_surrogate(name: str) -> str:
    if name not in SURROGATES:
        raise ValueError(f"surrogate: {name!r} is not one of {list(SURROGATES)}")
    return name


def surrogate_grad(v: torch.Tensor, name: str, width: float) -> torch.Tensor:
    """dO/dU at ``v = U_pre - U_th`` for surrogate ``name``; same shape and dtype as ``v``."""
    if name == "rect":
        return (v.abs() <= 0.5 * width).to(v.dtype) * (1.0 / width)
    if name == "sigmoid":
        sg = torch.sigmoid(width * v)
        return width * sg * (1.0 - sg)
    if name == "atan":
        return (0.5 * width) / (1.0 + (0.5 * math.pi * width * v) ** 2)
    raise ValueError(f"surrogate: {name!r} is not one of {list(SURROGATES)}")


class SpikeFunction(torch.autograd.Function):
    """Heaviside forward (fire at v >= 0), surrogate gradient backward. Used by the reference loop."""

    @staticmethod
    def forward(ctx, v: torch.Tensor, name: str, width: float) -> torch.Tensor:
        ctx.save_for_backward(v)
        ctx.name, ctx.width = name, width
        return (v >= 0).to(v.dtype)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        (v,) = ctx.saved_tensors
        return grad_out * surrogate_grad(v, ctx.name, ctx.width), None, None
