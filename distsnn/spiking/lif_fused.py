"""The fast multi-step LIF: one custom autograd function, fused over T, that keeps only U_pre for backward.

Forward and backward are pure element-wise recurrences over ``[T, N]`` (N = all non-time elements), so
``torch.compile`` fuses each into one loop that reads the input once and writes the outputs once (the eager
loop makes ~4 memory passes per step). Saved for backward: U_pre ``[T, N]`` only (spikes are recomputed as
``U_pre >= U_th``), versus the reference autograd graph that keeps U_pre, O, U and the products of every step.
Reduced-precision inputs (bf16/fp16) keep the membrane in float32, as mixed precision keeps accumulators.
"""
from __future__ import annotations

import os
import warnings

import torch
import torch.fx.experimental._config as _fx_config

from .surrogate import surrogate_grad


def _forward_steps(x: torch.Tensor, decay: float, threshold: float):
    """``x [T, N]`` float32 -> (spikes [T, N], U_pre [T, N]) (SSCL Eq.2-3, hard reset)."""
    u = torch.zeros_like(x[0])
    spikes, u_pres = [], []
    for t in range(x.shape[0]):
        u_pre = decay * u + x[t]
        s = (u_pre >= threshold).to(x.dtype)
        u = u_pre * (1.0 - s)
        spikes.append(s)
        u_pres.append(u_pre)
    return torch.stack(spikes), torch.stack(u_pres)


def _backward_steps(grad_s: torch.Tensor, u_pre: torch.Tensor, decay: float, threshold: float,
                    surrogate: str, width: float) -> torch.Tensor:
    """BPTT through Eq.2-3: dL/dU_pre[t] = g_O[t] sg[t] + decay dL/dU_pre[t+1] ((1 - O[t]) - U_pre[t] sg[t])."""
    g_next = torch.zeros_like(u_pre[0])
    grads = []
    for t in range(u_pre.shape[0] - 1, -1, -1):
        v = u_pre[t] - threshold
        sg = surrogate_grad(v, surrogate, width)
        s = (v >= 0).to(u_pre.dtype)
        g = grad_s[t] * sg + (decay * g_next) * ((1.0 - s) - u_pre[t] * sg)
        grads.append(g)
        g_next = g
    grads.reverse()
    return torch.stack(grads)


_COMPILED: dict[str, object] = {}
_RAN_COMPILED: dict[str, bool] = {}  # kernel name -> did its last call run compiled (False: eager fallback)
# With symbolic N, Inductor's size hint for the backward loop is too small to pass its parallel-work threshold and
# the backward kernel came out single-threaded; dynamic_threads keeps it an OpenMP loop (median bwd 27 -> 24 ms
# on [4, 8, 64, 56, 56], 2 loaded cores: it is memory-bound, so the gain is small).
_INDUCTOR_OPTIONS = {"cpp.dynamic_threads": True}


def _kernel(name: str, fn):
    """The torch.compile'd kernel, or the eager one if compilation is disabled or fails (warned once)."""
    if os.environ.get("DISTSNN_LIF_COMPILE", "1") == "0":
        return fn
    if name not in _COMPILED:
        _COMPILED[name] = torch.compile(fn, dynamic=True, fullgraph=True, options=_INDUCTOR_OPTIONS)
    return _COMPILED[name]


def _run(name: str, fn, *args):
    kernel = _kernel(name, fn)
    if kernel is fn:
        _RAN_COMPILED[name] = False
        return fn(*args)
    try:
        # The flat [T, N] arguments are views of [T, B, C, H, W] tensors and Dynamo guards on their bases' sizes:
        # duck sizing would add guards like B == H that recompile for every new layer shape (and hit Dynamo's
        # recompile limit in deep nets). Without duck sizing one compile serves all shapes of a given rank.
        with _fx_config.patch(use_duck_shape=False):
            out = kernel(*args)
        _RAN_COMPILED[name] = True
        return out
    except Exception as e:  # a missing C++ toolchain must not stop training: fall back, loudly, once
        warnings.warn(f"LIF: torch.compile of {name} failed ({type(e).__name__}: {e}); using the eager kernel")
        _COMPILED[name] = fn
        _RAN_COMPILED[name] = False
        return fn(*args)


def compiled_state() -> bool | None:
    """Whether the fused LIF kernels that ran in this process ran compiled: True (all of them), False (some ran
    the eager loop: compilation failed or DISTSNN_LIF_COMPILE=0), None (no fused LIF kernel ran yet)."""
    return all(_RAN_COMPILED.values()) if _RAN_COMPILED else None


class FusedLIF(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, decay: float, threshold: float, surrogate: str, width: float):
        shape, dtype = x.shape, x.dtype
        # detach: whether x is a leaf changes the requires_grad of its views; Dynamo would compile a kernel for each
        x32 = x.detach().reshape(shape[0], -1).float()
        spikes, u_pre = _run("lif_forward", _forward_steps, x32, decay, threshold)
        ctx.save_for_backward(u_pre)
        ctx.params = (decay, threshold, surrogate, width)
        ctx.shape, ctx.dtype = shape, dtype
        return spikes.to(dtype).reshape(shape)

    @staticmethod
    def backward(ctx, grad_out):
        (u_pre,) = ctx.saved_tensors
        g = grad_out.reshape(u_pre.shape).float().contiguous()
        grad_x = _run("lif_backward", _backward_steps, g, u_pre, *ctx.params)
        return grad_x.to(ctx.dtype).reshape(ctx.shape), None, None, None, None


def lif_fused(x: torch.Tensor, decay: float, threshold: float, surrogate: str, width: float) -> torch.Tensor:
    """``x [T, ...]`` -> spikes ``[T, ...]``; same dynamics and gradients as ``lif_reference``."""
    return FusedLIF.apply(x, decay, threshold, surrogate, width)
