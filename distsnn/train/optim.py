"""SGD with weight decay on weights only, and the per-step warm-up + cosine learning-rate schedule."""
from __future__ import annotations

import math

import torch
from torch import nn


def param_groups(modules: list[nn.Module], weight_decay: float) -> list[dict]:
    """Two groups: conv/linear weights (decayed) and norms + biases (not decayed, as is usual for ResNets)."""
    decay, no_decay, seen = [], [], set()
    for module in modules:
        for m in module.modules():
            for name, p in m.named_parameters(recurse=False):
                if not p.requires_grad or id(p) in seen:
                    continue
                seen.add(id(p))
                norm = isinstance(m, (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm))
                (no_decay if norm or name == "bias" else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def build_optimizer(modules: list[nn.Module], optim_cfg, lr: float) -> torch.optim.SGD:
    return torch.optim.SGD(param_groups(modules, optim_cfg.weight_decay), lr=lr, momentum=optim_cfg.momentum,
                           nesterov=optim_cfg.nesterov and optim_cfg.momentum > 0)


def lr_at(step: int, total_steps: int, warmup_steps: int, peak: float, floor: float) -> float:
    """Linear warm-up from peak/warmup to ``peak`` over ``warmup_steps``, then cosine down to ``floor``."""
    if step < warmup_steps:
        return peak * (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return floor + 0.5 * (peak - floor) * (1.0 + math.cos(math.pi * min(1.0, progress)))


def build_scheduler(optimizer, total_steps: int, warmup_steps: int, peak: float, floor: float):
    """A ``LambdaLR`` stepping once per optimizer step (its state is saved with the DeepSpeed checkpoint)."""
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_at(s, total_steps, warmup_steps, peak, floor) / peak)
