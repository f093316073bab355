"""Trainable maps from features to unit-norm embeddings; used in training only, dropped at inference."""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .global_batch_norm import GlobalBatchNorm
from .pooling import spatial_mean


class SepConvDown(nn.Module):
    """One downsampling block of Contrastive Deep Supervision's auxiliary heads (Zhang et al. 2022, their
    ``SepConv``): depthwise 3x3 stride 2 + pointwise 1x1, norm, ReLU, depthwise 3x3 + pointwise 1x1, norm, ReLU.
    ``[N, C_in, H, W]`` -> ``[N, C_out, ceil(H/2), ceil(W/2)]``.

    GroupNorm(1, C) where the paper has BatchNorm: it normalises each sample (and time step) on its own, so the
    loss does not depend on how the global batch is split over ranks (see :class:`ProjectionHead`).
    """

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.op = nn.Sequential(
            nn.Conv2d(c_in, c_in, 3, stride=2, padding=1, groups=c_in, bias=False),
            nn.Conv2d(c_in, c_in, 1, bias=False), nn.GroupNorm(1, c_in), nn.ReLU(inplace=True),
            nn.Conv2d(c_in, c_in, 3, stride=1, padding=1, groups=c_in, bias=False),
            nn.Conv2d(c_in, c_out, 1, bias=False), nn.GroupNorm(1, c_out), nn.ReLU(inplace=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


class ProjectionHead(nn.Module):
    """TCL's projection module: [conv blocks], global average pool, two non-linear layers, L2 normalisation.

    ``[T, B, C, H, W]`` -> ``[T, B, D]``, or ``[..., C]`` -> ``[..., D]`` (e.g. the pooled ``[T, B, C]``);
    every time step is projected separately. ``down`` lists the output widths of the
    :class:`SepConvDown` blocks applied to a spatial feature first, per time step on ``[T*B, C, H, W]``:
    Contrastive Deep Supervision (cited by TCL Sec. 4.4 for the intermediate layers) gives stage k of n
    the n - k blocks (widths of stages k+1..n) that bring it to the last stage's resolution and width. Empty
    ``down``: global average pool only. The MLP is Linear-BN-ReLU-Linear as in SimCLR, its BatchNorm over the
    GLOBAL batch (:class:`GlobalBatchNorm`; without it the heads collapsed); no rank-local BatchNorm anywhere, whose
    statistics would make the loss depend on how the global batch is split over ranks.
    """

    def __init__(self, in_dim: int, hidden_dim: int = 512, out_dim: int = 128, down: Sequence[int] = ()):
        super().__init__()
        widths = [in_dim, *down]
        self.down = nn.Sequential(*(SepConvDown(a, b) for a, b in zip(widths[:-1], widths[1:])))
        self.net = nn.Sequential(nn.Linear(widths[-1], hidden_dim), GlobalBatchNorm(hidden_dim),
                                 nn.ReLU(inplace=True), nn.Linear(hidden_dim, out_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Features may come in another dtype than the head (bf16 student, fp32 head or vice versa).
        x = x.to(self.net[0].weight.dtype)
        if len(self.down):
            if x.dim() != 5:
                raise ValueError(f"ProjectionHead with conv blocks: expected a [T, B, C, H, W] feature, got "
                                 f"{list(x.shape)}")
            t, b = x.shape[:2]
            x = self.down(x.flatten(0, 1))                               # [T*B, C', H', W']
            x = x.unflatten(0, (t, b))
        if x.dim() == 5:
            x = spatial_mean(x)                                           # [T, B, C']
        return F.normalize(self.net(x), dim=-1)


class Embedder(nn.Module):
    """SSCL's g^S / g^A: a linear map to the common width D, then L2 normalisation. ``[B, C]`` -> ``[B, D]``."""

    def __init__(self, in_dim: int, out_dim: int = 128):
        super().__init__()
        self.linear = nn.Linear(in_dim, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.linear(x.to(self.linear.weight.dtype)), dim=-1)


def tcl_head_widths(layers: Sequence[str], channels: dict[str, int], head: str) -> dict[str, list[int]]:
    """``{layer: down}`` for the :class:`ProjectionHead` of each layer in ``method.tcl.layers``.

    ``channels``: the student's ``{"stage1": C_1, ..., "stage<n>": C_n, "pooled": C_n}``. With ``head="conv"``,
    stage k gets the widths of stages k+1..n (n - k conv blocks, Contrastive Deep Supervision); the last stage and
    ``pooled`` get none (global average pool + MLP). ``pooled`` is the global average of the last stage, so the two
    together would put two heads on one vector and double its weight: refused (ValueError naming the key).
    """
    if head not in ("conv", "gap"):
        raise ValueError(f"method.tcl.head: {head!r} is not one of ['conv', 'gap']")
    stages = sorted((k for k in channels if k.startswith("stage") and k[5:].isdigit()), key=lambda k: int(k[5:]))
    if stages and stages[-1] in layers and "pooled" in layers and channels[stages[-1]] == channels.get("pooled"):
        raise ValueError(f"method.tcl.layers: {stages[-1]} and pooled are the same vector once {stages[-1]} is "
                         f"globally average-pooled (pooled = its global average); list one of them")
    out = {}
    for layer in layers:
        later = stages[stages.index(layer) + 1:] if (head == "conv" and layer in stages) else []
        out[layer] = [channels[k] for k in later]
    return out
