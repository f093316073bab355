"""Activation checkpointing of one residual stage: its activations are recomputed in backward instead of kept.

A spiking stage keeps T times the activations of its ANN counterpart, so for large T the stage outputs are the
memory that limits the batch. ``torch.utils.checkpoint`` (non-reentrant) recomputes the stage's forward during
backward; the one thing that recomputation would change is BatchNorm's running statistics (updated a second
time with the same batch), so they are put back after the recomputation.
"""
from __future__ import annotations

import contextlib

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

_BN_BUFFERS = ("running_mean", "running_var", "num_batches_tracked")


class _KeepBatchNormStats:
    """Context of the recomputation: BatchNorm buffers of ``module`` are restored on exit."""

    def __init__(self, module: nn.Module):
        self.norms = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]

    def __enter__(self):
        self.saved = [[getattr(m, b).clone() if getattr(m, b) is not None else None for b in _BN_BUFFERS]
                      for m in self.norms]
        return self

    def __exit__(self, *exc):
        with torch.no_grad():
            for m, values in zip(self.norms, self.saved):
                for name, value in zip(_BN_BUFFERS, values):
                    if value is not None:
                        getattr(m, name).copy_(value)
        return False


def checkpointed(stage: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``stage(x)``, keeping only ``x`` for backward and recomputing the rest there (same values, same
    gradients, BatchNorm statistics updated once)."""
    return checkpoint(stage, x, use_reentrant=False,
                      context_fn=lambda: (contextlib.nullcontext(), _KeepBatchNormStats(stage)))
