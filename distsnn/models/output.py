"""What every model's ``forward(x, return_features=True)`` returns."""
from __future__ import annotations

from typing import NamedTuple

import torch


class ModelOutput(NamedTuple):
    """``logits``: ``[T, B, K]`` for a spiking student, ``[B, K]`` for an ANN.

    ``features``: ``{"stage1".."stage4": [T, B, C, H, W] (SNN) or [B, C, H, W] (ANN),
    "pooled": [T, B, C] or [B, C]}``; empty when features were not requested.
    """

    logits: torch.Tensor
    features: dict[str, torch.Tensor]
