"""How close an exported artefact is to the network it came from, on the same images: the one-line figures.

NIR: the graph run by ``nir_sim.simulate`` against the model's own forward, spikes of every spiking layer (each
LIF and the spike max-pool) and the logits of every step, twice: the graph built in float64 against the model in
float64 (is the mapping exact?) and the float32 file as written against the float32 model (what rounding does:
BN folded into float32 weights and NIR's Euler form round differently from ours, and a membrane within an ulp of
the threshold flips a spike, which later layers pass on). ONNX: ONNX Runtime's logits against the model's, per step.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import nir
import numpy as np
import torch
from torch import nn

from distsnn.models.resnet import TimeAct

from .nir_sim import simulate
from .onnx_export import run_onnx


def model_spikes(model: nn.Module, images: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """``images [B, C, H, W]`` -> (logits ``[T, B, K]``, ``{module path: [T, B, C, H, W]}`` of every neuron and
    max-pool), from one forward of ``model`` with hooks."""
    T = model.timesteps
    rec: dict[str, torch.Tensor] = {}
    def keep(name):
        return lambda _m, _i, out: rec.__setitem__(name, out.view(T, -1, *out.shape[1:]))

    hooks = [m.register_forward_hook(keep(name))
             for name, m in model.named_modules() if isinstance(m, (TimeAct, nn.MaxPool2d))]
    try:
        with torch.no_grad():
            logits = model(images)
    finally:
        for h in hooks:
            h.remove()
    return logits, rec


@dataclass
class NIREquivalence:
    layers: int            # spiking layers compared (graph nodes with a model counterpart)
    layers_identical: int
    spikes_differ: int     # spike values that differ, over all layers, steps and images
    spikes_total: int
    max_abs_logit: float   # max |logit_NIR - logit_model| over steps, images, classes
    images: int
    timesteps: int
    dtype: str

    def part(self) -> str:
        return (f"spikes identical in {self.layers_identical}/{self.layers} spiking layers ({self.spikes_differ} of "
                f"{self.spikes_total} spike values differ), max |logit_NIR - logit_model| = {self.max_abs_logit:.2e}")


def nir_figure(exact: NIREquivalence, written: NIREquivalence) -> str:
    """The one line: the float64 graph (the mapping) and the float32 file (the mapping plus rounding)."""
    return (f"equivalence ({written.images} random N(0,1) images, T={written.timesteps}): float64 graph: "
            f"{exact.part()}; float32 file: {written.part()}")


def nir_equivalence(model: nn.Module, graph: nir.NIRGraph, images: torch.Tensor) -> NIREquivalence:
    """Simulate ``graph`` on ``images`` and compare with ``model`` (same dtype as ``images``)."""
    logits, ours = model_spikes(model, images)
    out, theirs = simulate(graph, images, model.timesteps)
    names = [n for n in theirs if n in ours]
    differ = {n: int((theirs[n] != ours[n]).sum()) for n in names}
    return NIREquivalence(layers=len(names), layers_identical=sum(d == 0 for d in differ.values()),
                          spikes_differ=sum(differ.values()), spikes_total=sum(ours[n].numel() for n in names),
                          max_abs_logit=float((out - logits).abs().max()), images=images.shape[0],
                          timesteps=model.timesteps, dtype=str(images.dtype).replace("torch.", ""))


def onnx_equivalence(model: nn.Module, path: str | Path, images: torch.Tensor) -> tuple[np.ndarray, str]:
    """(max |logit_ONNX - logit_model| per step ``[T]`` (one value for an ANN), the one-line figure)."""
    with torch.no_grad():
        ours = model(images.float()).numpy()
    theirs = run_onnx(path, images.numpy())
    if theirs.shape != ours.shape:
        raise ValueError(f"{path}: ONNX logits have shape {theirs.shape}, the model's {ours.shape}")
    err = np.abs(theirs - ours)
    per_t = err.reshape(err.shape[0], -1).max(axis=1) if model.spiking else np.array([err.max()])
    steps = ", ".join(f"{e:.1e}" for e in per_t)
    line = (f"equivalence ({images.shape[0]} random N(0,1) images, ONNX Runtime CPU): max |logit_ONNX - logit_model| = "
            f"{per_t.max():.2e}" + (f" (per t = 1..{len(per_t)}: {steps})" if model.spiking else ""))
    return per_t, line
