"""The reference multi-step LIF: a plain Python loop over T with autograd (SSCL Eq.2-3)."""
from __future__ import annotations

import torch

from .surrogate import SpikeFunction


def lif_reference(x: torch.Tensor, decay: float, threshold: float, surrogate: str, width: float) -> torch.Tensor:
    """``x [T, ...]`` -> spikes ``[T, ...]``.

    U_pre[t] = decay * U[t-1] + x[t] (Eq.2), O[t] = H(U_pre[t] - U_th), U[t] = U_pre[t] (1 - O[t]) (Eq.3, hard
    reset to 0). U[-1] = 0: the membrane lives only inside this call. Gradients flow through the reset too.
    """
    u = torch.zeros_like(x[0])
    spikes = []
    for t in range(x.shape[0]):
        u_pre = decay * u + x[t]
        o = SpikeFunction.apply(u_pre - threshold, surrogate, width)
        u = u_pre * (1.0 - o)
        spikes.append(o)
    return torch.stack(spikes)
