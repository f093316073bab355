"""Temporal supervised contrastive loss of TCL/STCL (TCL Eq.7 and Eq.10), global-batch negatives."""
from __future__ import annotations

import torch

from distsnn.distributed import all_gather_columns, check_same_shapes, global_value, rank, world_size

from ._checks import check_normalized


def temporal_supcon_loss(z: torch.Tensor, labels: torch.Tensor | None, temperature: float = 0.07, *,
                         validate: bool = True) -> torch.Tensor:
    """SupCon over time steps (and views): every (s, i) is an anchor against the GLOBAL batch.

    ``z`` ``[S, B, D]``: L2-normalised projections z_i^s of the rank-local batch (S = T for TCL;
    S = 2T for STCL Eq.9: the T steps of both views stacked). ``labels`` ``[B]`` int64, or None.

    For anchor a = (s, i): positives P(a) = {(s', j) != (s, i) : y_j = y_i} (the same image at the
    other steps/views and every same-class image at every step); the denominator runs over all
    (s', j) != (s, i) of the global batch (all ranks, gathered with gradient)::

        l_a = -1/|P(a)| sum_{p in P(a)} log( exp(z_a.z_p/tau) / sum_{k != a} exp(z_a.z_k/tau) )
        L   = mean over anchors a of l_a

    Normalisation 1/(N*S), not 1/N: L = -1/(N*S) sum_a 1/|P(a)| sum_{p in P(a)} log r_ap over the S*N anchors
    of the global batch (N samples), |P(a)| = S*|{j: y_j = y_i}| - 1 the anchor's positive pairs (SupCon's L_out).
    TCL Eq.10 (S = T) is the same log-ratio r_ap (its indicator "i != p or t != t'" is our p != a) weighted
    -1/T * 1/|P(i)| per anchor, |P(i)| = |{j: y_j = y_i}|: ours replaces 1/|P(i)| by 1/(N*|P(a)|) ~ 1/(N*T*|P(i)|),
    so L ~ Eq.10 / (N*T) (with c images per class exactly L = Eq.10 * c / (N*(T*c - 1))). Eq.7 (``labels=None``:
    positives are the same image at the other steps, |P(a)| = S - 1) has weight -1/T: L = Eq.7 / (N*(S - 1)).
    The mean keeps lambda independent of the batch size and of T.

    Anchors without any positive (S = 1 and a class seen once in the global batch) are left out of
    the mean; if no anchor has one the loss is 0 (with a graph, no NaN). ``labels=None`` with S < 2
    is an error (no anchor could ever have a positive).

    Distributed: rank r computes only its own S*B anchors against the S*W*B gathered keys, scaled so
    that the rank mean is the global loss; the returned value is that global value on every rank
    (one scalar all-reduce) and the rank-averaged gradients equal those of one process holding the
    global batch. Computed in at least float32.
    """
    check_supcon_inputs(z, labels, validate)
    s = z.shape[0]
    anchors = supcon_anchors(z)
    (keys,), ids_global = gather_supcon_keys([anchors], labels, s, "temporal_supcon_loss")
    return global_value(temporal_supcon_local(anchors, keys, ids_global, s, temperature))


def check_supcon_inputs(z: torch.Tensor, labels: torch.Tensor | None, validate: bool = True) -> None:
    """The argument checks of :func:`temporal_supcon_loss` (ValueError naming the argument); ``validate``
    adds the unit-norm check, which costs a host sync."""
    if z.dim() != 3:
        raise ValueError(f"temporal_supcon_loss: z must be [S, B, D], got shape {list(z.shape)}")
    s, b, _ = z.shape
    if labels is None and s < 2:
        raise ValueError("temporal_supcon_loss: labels=None (Eq.7, positives = the same image at other steps) "
                         f"needs S >= 2 time steps/views, got z of shape {list(z.shape)}")
    if labels is not None and labels.shape != (b,):
        raise ValueError(f"temporal_supcon_loss: labels must be [B] with B = {b}, got {list(labels.shape)}")
    if validate:
        check_normalized(z, "temporal_supcon_loss: z")
    w = world_size()
    if s * b * w < 2:
        raise ValueError(f"temporal_supcon_loss: needs at least 2 (step, sample) pairs in the global batch, got z of "
                         f"shape {list(z.shape)} on {w} rank(s)")


def supcon_anchors(z: torch.Tensor) -> torch.Tensor:
    """``[S, B, D]`` -> ``[B*S, D]`` sample-major (row i*S + s), at least float32: rank r's anchors are
    then a contiguous block of the gathered keys."""
    s, b, d = z.shape
    return z.to(torch.promote_types(z.dtype, torch.float32)).transpose(0, 1).reshape(b * s, d)


def gather_supcon_keys(anchors: list[torch.Tensor], labels: torch.Tensor | None, s: int,
                       what: str) -> tuple[list[torch.Tensor], torch.Tensor]:
    """The keys ``[W*B*S, D]`` of each rank-local anchor set ``[B*S, D]`` (see :func:`supcon_anchors`; with
    gradient) and the global sample ids ``[W*B]`` (the gathered ``labels``, or one id per sample for Eq.7), for
    any number of layers in one shape check and one gather: each sample's S rows of every layer travel as one
    row, with its label beside them."""
    b = anchors[0].shape[0] // s
    extra = [] if labels is None else [labels]
    check_same_shapes(anchors + extra, what)
    gathered = all_gather_columns([a.reshape(b, -1) for a in anchors] + extra,
                                  grad=[True] * len(anchors) + [False] * len(extra))
    keys = [g.reshape(-1, a.shape[1]) for g, a in zip(gathered, anchors)]   # row j*S + s' as in the anchors
    ids = gathered[-1] if extra else torch.arange(world_size() * b, device=anchors[0].device)
    return keys, ids


def temporal_supcon_local(anchors: torch.Tensor, keys: torch.Tensor, ids_global: torch.Tensor, s: int,
                          temperature: float) -> torch.Tensor:
    """Rank r's share of :func:`temporal_supcon_loss`: its anchors ``[B*S, D]`` (see
    :func:`supcon_anchors`) against the gathered ``keys`` ``[W*B*S, D]``; ``ids_global`` ``[W*B]``: the
    gathered labels, or one id per sample for Eq.7. The rank mean of the shares is the global loss; no
    collective, no input checks (the caller's job)."""
    w, r = world_size(), rank()
    b, d = anchors.shape[0] // s, anchors.shape[1]
    keys = keys.to(anchors.dtype)
    logits = anchors @ keys.T / temperature                              # [B*S, W*B*S]
    # The self pairs (a, a) sit on a diagonal of rank r's block; -inf drops them from the denominator.
    logits.diagonal(offset=r * b * s).fill_(float("-inf"))
    log_denom = torch.logsumexp(logits, dim=1)                           # [B*S]
    same = (ids_global[:, None] == ids_global[None, :]).to(anchors.dtype)  # [W*B, W*B] sample level
    # Sum over positives of z_a.z_p/tau without a [B*S, W*B*S] mask: z_a . (sum of every key of the
    # same id, self included) minus the self term. O(N^2 D / S^2) instead of O(N^2) elementwise passes.
    id_sums = same[r * b:(r + 1) * b] @ keys.view(w * b, s, d).sum(dim=1)   # [B, D]
    a3 = anchors.view(b, s, d)
    pos_logits = ((a3 * id_sums[:, None, :]).sum(-1) - (a3 * a3).sum(-1)).reshape(b * s) / temperature
    count = same.sum(dim=1)                                              # samples sharing the id
    n_pos = (s * count[r * b:(r + 1) * b] - 1).repeat_interleave(s)      # positives per local anchor
    # mean over positives of log_prob = (sum of positive logits)/|P| - log denominator.
    per_anchor = log_denom - pos_logits / n_pos.clamp(min=1)
    valid = n_pos > 0
    # Global number of anchors with a positive (identical on all ranks, from the gathered ids).
    n_valid = s * ((s * count - 1) > 0).sum()
    return torch.where(valid, per_anchor, 0.0).sum() * w / n_valid.clamp(min=1)
