"""BatchNorm over the GLOBAL batch for the contrastive projection heads (SyncBatchNorm semantics on any device)."""
from __future__ import annotations

import torch
from torch import nn

from distsnn.distributed import all_reduce_sum_with_grad


class GlobalBatchNorm(nn.Module):
    """``[..., C]`` -> ``[..., C]``: each feature standardised with the mean and (biased) variance of all rows of all
    ranks, then scaled and shifted (affine). The per-feature sums and sums of squares are all-reduced WITH gradient,
    so the loss does not depend on how the global batch is split over ranks and the rank-averaged gradients equal
    one process's. Why a BatchNorm at all: without one, TCL's heads collapsed on the demo (every SupCon term at
    log(SN - 1) from step 8: the common component of non-negative spike features dominates the embeddings); a
    rank-local BatchNorm removed the collapse, a LayerNorm did not (docs/RESULTS.md). Training-time heads only:
    no running statistics."""

    def __init__(self, num_features: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(-1, x.shape[-1]).double()
        count = torch.full((1,), float(rows.shape[0]), dtype=torch.float64, device=x.device)
        sums = all_reduce_sum_with_grad(torch.cat([rows.sum(0), (rows * rows).sum(0), count]))
        c = x.shape[-1]
        n = sums[-1].detach()
        mean = sums[:c] / n
        var = (sums[c:2 * c] / n - mean * mean).clamp(min=0.0)
        y = (rows - mean) * torch.rsqrt(var + self.eps)
        return (y.to(x.dtype) * self.weight + self.bias).reshape(x.shape)
