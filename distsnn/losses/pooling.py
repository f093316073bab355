"""Feature pooling in front of the heads: spatial mean per time step, or a g x g grid flattened."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def spatial_mean(feature: torch.Tensor) -> torch.Tensor:
    """TCL: ``[T, B, C, H, W]`` -> ``[T, B, C]`` (global average pool of each step); ``[T, B, C]`` as is."""
    if feature.dim() == 5:
        return feature.mean(dim=(3, 4))
    if feature.dim() == 3:
        return feature
    raise ValueError(f"spatial_mean: expected a [T, B, C, H, W] or [T, B, C] feature, got {list(feature.shape)}")


def grid_flatten(feature: torch.Tensor, grid: int, time_major: bool) -> torch.Tensor:
    """SSCL: a feature -> ``[B, C*grid*grid]`` (``[B, C]`` for an already pooled one).

    ``time_major``: the student's ``[T, B, C, H, W]`` / ``[T, B, C]`` (mean over T first); otherwise
    the teacher's ``[B, C, H, W]`` / ``[B, C]``. Spatial maps are adaptive-average-pooled to grid x grid.
    """
    if time_major:
        if feature.dim() not in (3, 5):
            raise ValueError(f"grid_flatten: a student feature must be [T, B, C, H, W] or [T, B, C], got {list(feature.shape)}")
        feature = feature.mean(dim=0)
    if feature.dim() == 2:
        return feature
    if feature.dim() != 4:
        raise ValueError(f"grid_flatten: expected [B, C, H, W] or [B, C] after the time mean, got {list(feature.shape)}")
    return F.adaptive_avg_pool2d(feature, grid).flatten(1)
