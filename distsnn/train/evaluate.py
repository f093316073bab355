"""Anytime evaluation: top-1/top-5 at every inference step t = 1..T, exact over the whole val set across ranks."""
from __future__ import annotations

import contextlib

import torch
import torch.distributed as dist
from torch import nn

from .activity import ActivityRecorder


def anytime_correct(logits: torch.Tensor, labels: torch.Tensor, k: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    """``logits [T, B, K]`` -> (top-1 correct [T], top-k correct [T]) counts, where the prediction at step t is the
    mean of the logits over the first t steps."""
    T = logits.shape[0]
    steps = torch.arange(1, T + 1, device=logits.device, dtype=torch.float32).view(T, 1, 1)
    mean_t = logits.float().cumsum(0) / steps
    top = mean_t.topk(min(k, logits.shape[-1]), dim=-1).indices  # [T, B, k]
    hit = top == labels.view(1, -1, 1)
    return hit[..., 0].sum(1), hit.any(-1).sum(1)


@torch.no_grad()
def evaluate(model: nn.Module, loader, timesteps: int, autocast=contextlib.nullcontext, on_batch=None) -> dict:
    """Runs ``model`` (eval mode) over ``loader`` once. Returns sample count, top1/top5 (%) per t, firing rates
    and the energy estimate; every number is summed over all ranks, each val sample counted exactly once.
    ``on_batch`` (optional) is called after every batch, e.g. the telemetry heartbeat during a long pass."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    T = timesteps
    counts = torch.zeros(2, T, dtype=torch.float64, device=device)
    n = torch.zeros(1, dtype=torch.float64, device=device)
    with ActivityRecorder(model, T) as rec:
        for batch in loader:
            x, y = batch.views[0], batch.labels
            with autocast():
                logits = model(x)
            if logits.dim() == 2:  # an ANN: one "step"
                logits = logits.unsqueeze(0).expand(T, *logits.shape)
            top1, top5 = anytime_correct(logits, y)
            counts[0] += top1
            counts[1] += top5
            n += y.shape[0]
            rec.count_samples(y.shape[0])
            if on_batch is not None:
                on_batch()
        activity = rec.summary()
    if dist.is_initialized():
        flat = torch.cat([counts.flatten(), n])
        dist.all_reduce(flat)
        counts, n = flat[:-1].view(2, T), flat[-1:]
    model.train(was_training)
    total = int(n.item())
    acc = (counts * 100.0 / max(total, 1)).cpu()
    return {"num_samples": total, "top1": acc[0].tolist(), "top5": acc[1].tolist(), **activity}
