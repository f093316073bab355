"""SSCL's NCE critic loss between student and teacher embeddings (SSCL Eq.16, 17, 19)."""
from __future__ import annotations

import math

import torch
import torch.distributed as dist

from distsnn.distributed import (all_gather_columns, all_gather_with_grad, check_same_shapes, global_value, rank,
                                 world_size)

from ._checks import check_normalized


def _check_pair(z_s: torch.Tensor, z_a: torch.Tensor, what: str) -> None:
    if z_s.dim() != 2 or z_s.shape != z_a.shape:
        raise ValueError(f"{what}: z_s and z_a must both be [B, D] of the same shape, got "
                         f"{list(z_s.shape)} and {list(z_a.shape)}")


def nce_critic_loss(z_s: torch.Tensor, z_a: torch.Tensor, temperature: float = 0.07, *, num_data: int,
                    log_z: float | torch.Tensor = 0.0, validate: bool = True) -> torch.Tensor:
    """-L_NCE of SSCL Eq.17 over all pairs of the global batch, with the critic h of Eq.19.

    ``z_s``, ``z_a`` ``[B, D]``: L2-normalised student g^S(S^l) and teacher g^A(A^l) embeddings of the
    rank-local batch (row i of both = sample i). With x_ij = e^{s_i.a_j/tau} / Z (Z = e^{log_z}),
    N = global batch - 1 negatives per anchor and M = ``num_data`` (the training-set size, as in the
    CRD critic that Eq.19 copies)::

        h(s, a) = x / (x + N/M)                                            (Eq.19)
        loss    = -mean_i [ log h(s_i, a_i) + sum_{j != i} log(1 - h(s_i, a_j)) ]   (Eq.17, negated)

    The logs are computed as log x - logaddexp(log x, log N/M) and log N/M - logaddexp(...), never as
    the log of a ratio. ``log_z = 0`` is the literal Eq.19; see :func:`estimate_log_z` for CRD's Z.

    Distributed: the teacher embeddings are gathered with gradient (g^A is trained); rank r's anchors
    are its own student rows, so the rank mean of the local losses is the global loss; the returned
    value is that global value on every rank and the rank-averaged gradients equal those of one
    process holding the global batch. Computed in at least float32.
    """
    _check_pair(z_s, z_a, "nce_critic_loss")
    if num_data < 1:
        raise ValueError(f"nce_critic_loss: num_data (M of Eq.19, the training-set size) must be >= 1, got {num_data}")
    if validate:
        check_normalized(z_s, "nce_critic_loss: z_s")
        check_normalized(z_a, "nce_critic_loss: z_a")
    dtype = torch.promote_types(z_s.dtype, torch.float32)                 # half/bf16 -> float32
    a_all = all_gather_with_grad(z_a.to(dtype))                            # [W*B, D]
    return global_value(nce_critic_local(z_s, a_all, temperature, num_data=num_data, log_z=log_z))


def nce_critic_local(z_s: torch.Tensor, a_all: torch.Tensor, temperature: float, *, num_data: int,
                     log_z: float | torch.Tensor = 0.0) -> torch.Tensor:
    """Rank r's share of :func:`nce_critic_loss` (Eq.17/19): its anchors ``z_s`` ``[B, D]`` against the
    gathered teacher embeddings ``a_all`` ``[W*B, D]`` (positive of row i: ``a_all[r*B + i]``). The rank
    mean of the shares is the global loss; no collective, no input checks (the caller's job)."""
    b = z_s.shape[0]
    dtype = torch.promote_types(z_s.dtype, torch.float32)
    n_neg = a_all.shape[0] - 1
    if n_neg < 1:
        raise ValueError("nce_critic_loss: the global batch must hold at least 2 samples (N = global batch - 1 "
                         f"negatives), got {a_all.shape[0]}")
    log_x = z_s.to(dtype) @ a_all.to(dtype).T / temperature - log_z        # [B, W*B]
    log_c = math.log(n_neg / num_data)
    log_denom = torch.logaddexp(log_x, torch.full_like(log_x, log_c))
    pos = torch.zeros_like(log_x, dtype=torch.bool)
    rows = torch.arange(b, device=z_s.device)
    pos[rows, rank() * b + rows] = True
    # log h on the positive pair, log(1 - h) on every other pair of the row.
    terms = torch.where(pos, log_x - log_denom, log_c - log_denom)
    return -terms.sum(dim=1).mean()


def estimate_log_z(z_s: torch.Tensor, z_a: torch.Tensor, temperature: float = 0.07, *, num_data: int) -> torch.Tensor:
    """CRD's normaliser: log Z = log(M * mean over all pairs (i, j) of the global batch of e^{s_i.a_j/tau}).

    Detached, computed stably (logsumexp), float64 scalar, identical on every rank (rank 0's value is
    broadcast). Without it e^{s.a/tau} dwarfs N/M in Eq.19, h ~ 1 for every pair and the negatives'
    log(1 - h) explodes.
    """
    _check_pair(z_s, z_a, "estimate_log_z")
    check_same_shapes([z_s, z_a], "estimate_log_z")
    s_all, a_all = (t.double() for t in all_gather_columns([z_s, z_a], grad=False))
    logits = s_all @ a_all.T / temperature
    log_z = math.log(num_data) + torch.logsumexp(logits.flatten(), dim=0) - math.log(logits.numel())
    if world_size() > 1:
        dist.broadcast(log_z, src=0)
    return log_z
