"""Input checks shared by the contrastive losses (errors name the argument)."""
from __future__ import annotations

import torch


def check_normalized(z: torch.Tensor, name: str, atol: float = 1e-3) -> None:
    """Raise ValueError unless every row of ``z`` (last axis) has unit L2 norm and is finite.

    Costs one device-to-host sync; callers that normalise themselves pass ``validate=False``.
    """
    norms = z.detach().float().norm(dim=-1)
    if norms.numel() and not bool(((norms - 1).abs() <= atol).all()):
        raise ValueError(f"{name} must be L2-normalised along its last axis (and finite); row norms lie in "
                         f"[{norms.min().item():.4g}, {norms.max().item():.4g}]")
