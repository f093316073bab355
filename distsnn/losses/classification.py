"""Classification terms of a spiking student: mean-over-time CE (TCL Eq.4) and TET (TCL Eq.5)."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def _check(logits: torch.Tensor, labels: torch.Tensor, what: str) -> None:
    if logits.dim() != 3:
        raise ValueError(f"{what}: logits must be [T, B, K], got shape {list(logits.shape)}")
    if labels.shape != (logits.shape[1],):
        raise ValueError(f"{what}: labels must be [B] with B = {logits.shape[1]} (logits [T, B, K]), "
                         f"got shape {list(labels.shape)}")


def mean_ce_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """TCL Eq.4: L_BL = CE((1/T) sum_t O^t, Y), the usual SNN baseline.

    ``logits`` ``[T, B, K]`` (the O^t are taken as logits and averaged before the softmax, as the
    baseline and TET code do), ``labels`` ``[B]`` int64. Returns the batch mean (rank-local).
    """
    _check(logits, labels, "mean_ce_loss")
    return F.cross_entropy(logits.mean(dim=0), labels)


def tet_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """TCL Eq.5 (TET): L_TET = (1/T) sum_t CE(O^t, Y), every time step supervised separately.

    ``logits`` ``[T, B, K]``, ``labels`` ``[B]``. Returns the mean over t and the batch.
    """
    _check(logits, labels, "tet_loss")
    t, b, k = logits.shape
    # Mean over the T*B (t, i) terms equals (1/T) sum_t of the per-step batch means.
    return F.cross_entropy(logits.reshape(t * b, k), labels.repeat(t))
