"""Feature pooling in front of the heads: spatial mean per time step (TCL); SSCL's per-sample rows."""
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


def _rows(feature: torch.Tensor, time_major: bool, fn: str) -> torch.Tensor:
    """Student ``[T, B, ...]`` -> ``[B, T, ...]``; teacher ``[B, ...]`` as is; checks the rank."""
    if time_major:
        if feature.dim() not in (3, 5):
            raise ValueError(f"{fn}: a student feature must be [T, B, C, H, W] or [T, B, C], got {list(feature.shape)}")
        return feature.transpose(0, 1)
    if feature.dim() not in (2, 4):
        raise ValueError(f"{fn}: a teacher feature must be [B, C, H, W] or [B, C], got {list(feature.shape)}")
    return feature


def representation_rows(feature: torch.Tensor, time_major: bool) -> torch.Tensor:
    """SSCL's layer representation as one row per sample, the whole map (what CKA Eq.8-9 is taken on):
    student S^l ``[T, B, C, H, W]`` -> ``[B, T*C*H*W]`` (time kept, S^l in R^{n x T x p}); teacher A^l
    ``[B, C, H, W]`` -> ``[B, C*H*W]``; pooled ``[T, B, C]`` / ``[B, C]`` likewise."""
    return _rows(feature, time_major, "representation_rows").flatten(1)


def grid_flatten(feature: torch.Tensor, grid: int, time_major: bool, keep_time: bool = True) -> torch.Tensor:
    """The input of SSCL's embedders g^S / g^A: each map average-pooled to ``grid x grid`` cells, flattened
    with time kept: student ``[T, B, C, H, W]`` -> ``[B, T*C*grid*grid]``, teacher ``[B, C, H, W]`` ->
    ``[B, C*grid*grid]``; pooled features ``[T, B, C]`` -> ``[B, T*C]``, ``[B, C]`` as is.

    Why a grid: a stage map flattened whole would make g^S a huge matrix (ImageNet stage 1: T*64*56*56 = 0.8 M
    inputs per output); its channel means (grid 1) make the last stage the pooled feature again (SSCL counts
    both). A grid of >= 2 x 2 keeps coarse spatial layout in a fixed width independent of the input size (a
    map smaller than the grid is repeated into it: a linear map learns the same from repeated inputs). Time is
    kept, as in S^l in R^{n x T x p}: g^S is a linear map of the whole spike train, which includes its mean.
    ``keep_time=False``: the student's firing rate (mean over T) instead, ``[B, C*grid*grid]``."""
    if time_major and not keep_time:
        if feature.dim() not in (3, 5):
            raise ValueError(f"grid_flatten: a student feature must be [T, B, C, H, W] or [T, B, C], got {list(feature.shape)}")
        return grid_flatten(feature.mean(dim=0), grid, time_major=False)
    rows = _rows(feature, time_major, "grid_flatten")
    if rows.dim() == (3 if time_major else 2):
        return rows.flatten(1)
    lead = rows.shape[:-3]
    pooled = F.adaptive_avg_pool2d(rows.reshape(-1, *rows.shape[-3:]), grid)
    return pooled.reshape(*lead, -1).flatten(1)
