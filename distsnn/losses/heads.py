"""Trainable maps from features to unit-norm embeddings; used in training only, dropped at inference."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ProjectionHead(nn.Module):
    """TCL's projection module: two non-linear layers, then L2 normalisation.

    ``[..., C]`` -> ``[..., D]`` (e.g. ``[T, B, C]`` -> ``[T, B, D]``: each time step projected
    separately). Linear-ReLU-Linear as in SimCLR; no BatchNorm, whose rank-local statistics would make
    the loss depend on how the global batch is split over ranks.
    """

    def __init__(self, in_dim: int, hidden_dim: int = 512, out_dim: int = 128):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(in_dim, hidden_dim), nn.ReLU(inplace=True), nn.Linear(hidden_dim, out_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Features may come in another dtype than the head (bf16 student, fp32 head or vice versa).
        return F.normalize(self.net(x.to(self.net[0].weight.dtype)), dim=-1)


class Embedder(nn.Module):
    """SSCL's g^S / g^A: a linear map to the common width D, then L2 normalisation. ``[B, C]`` -> ``[B, D]``."""

    def __init__(self, in_dim: int, out_dim: int = 128):
        super().__init__()
        self.linear = nn.Linear(in_dim, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.linear(x.to(self.linear.weight.dtype)), dim=-1)
