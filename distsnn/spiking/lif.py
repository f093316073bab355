"""``LIF``: the stateless multi-step leaky integrate-and-fire neuron module (SSCL Eq.2-3, TCL Eq.1-3)."""
from __future__ import annotations

import torch
from torch import nn

from .lif_fused import lif_fused
from .lif_reference import lif_reference
from .surrogate import check_surrogate

IMPLEMENTATIONS = {"fast": lif_fused, "reference": lif_reference}


class LIF(nn.Module):
    """Multi-step LIF with hard reset to 0: ``x [T, ...]`` -> binary spikes ``[T, ...]``.

    ``decay`` is SSCL's tau (0.25; TCL's alpha is 0.5), a spike fires when U_pre >= ``threshold``. The membrane
    potential lives only inside one call: there is no state on the module and nothing to reset.
    ``implementation="fast"`` (default) is the fused, memory-lean kernel; ``"reference"`` the plain loop.
    """

    def __init__(self, decay: float = 0.25, threshold: float = 0.5, surrogate: str = "rect",
                 width: float = 1.0, implementation: str = "fast"):
        super().__init__()
        if not 0.0 <= decay <= 1.0:
            raise ValueError(f"decay: {decay} must be in [0, 1]")
        if threshold <= 0:
            raise ValueError(f"threshold: {threshold} must be > 0")
        if width <= 0:
            raise ValueError(f"width: {width} must be > 0")
        if implementation not in IMPLEMENTATIONS:
            raise ValueError(f"implementation: {implementation!r} is not one of {list(IMPLEMENTATIONS)}")
        self.decay, self.threshold, self.width = float(decay), float(threshold), float(width)
        self.surrogate = check_surrogate(surrogate)
        self.implementation = implementation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() < 2:
            raise ValueError(f"x: expected [T, ...] with at least 2 dims, got shape {tuple(x.shape)}")
        if x.shape[0] < 1:
            raise ValueError("x: T (dim 0) must be >= 1")
        fn = IMPLEMENTATIONS[self.implementation]
        return fn(x, self.decay, self.threshold, self.surrogate, self.width)

    def extra_repr(self) -> str:
        return (f"decay={self.decay}, threshold={self.threshold}, surrogate={self.surrogate!r}, "
                f"width={self.width}, implementation={self.implementation!r}")
