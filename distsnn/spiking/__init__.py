"""Spiking core: the stateless multi-step LIF neuron and its surrogate gradients."""
from .lif import LIF
from .lif_fused import lif_fused
from .lif_reference import lif_reference
from .surrogate import SURROGATES, surrogate_grad

__all__ = ["LIF", "SURROGATES", "lif_fused", "lif_reference", "surrogate_grad"]
