"""Shared set-up of the export tests: tiny registered students with real BatchNorm statistics, their spikes."""
from __future__ import annotations

import timm
import torch
from torch import nn

import distsnn.models  # noqa: F401  (registers the models with timm)
from distsnn.models import STUDENTS
from distsnn.models.registry import ARCHS
from distsnn.models.resnet import TimeAct

WIDTH = 0.0625  # every stage at the 4-channel floor or just above: the layout of the full net, few MACs
# Per stem: the smallest input that keeps every stage map >= 1x1 (ImageNet stem: /4, CIFAR stems: /1 or /2).
SIZE = {name: 16 if ARCHS[name.split("_", 1)[1]]["stem"] == "imagenet" else 8 for name in STUDENTS}
NEURON = {"spiking": dict(decay=0.25, threshold=0.5), "sew": dict(decay=0.5, threshold=1.0)}  # SSCL / TCL


def tiny_student(name: str, timesteps: int, seed: int = 0, **neuron) -> nn.Module:
    """``name`` at ``WIDTH``, eval mode, with BatchNorm running statistics from 3 train-mode batches (so the folded
    convolutions differ from the raw ones) and affine BN parameters drawn away from (1, 0)."""
    torch.manual_seed(seed)
    kind = name.split("_")[0]
    model = timm.create_model(name, num_classes=10, timesteps=timesteps, width_multiplier=WIDTH,
                              implementation="reference", **(NEURON[kind] | neuron))
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = 0.5
            nn.init.uniform_(m.weight, 0.6, 1.4)
            nn.init.normal_(m.bias, 0.3, 0.2)  # a positive shift keeps deep layers firing at this width
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(2.0 * torch.randn(4, 3, SIZE[name], SIZE[name]))
    return model.eval()


def images(name: str, n: int = 4, seed: int = 1, dtype=torch.float32) -> torch.Tensor:
    return 2.0 * torch.randn(n, 3, SIZE[name], SIZE[name], generator=torch.Generator().manual_seed(seed)).to(dtype)


def our_spikes(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """(logits ``[T, B, K]``, ``{module path: [T, B, C, H, W]}`` of every neuron and max-pool) of ``model(x)``."""
    T, rec = model.timesteps, {}
    hooks = [m.register_forward_hook(lambda _m, _i, o, n=n: rec.__setitem__(n, o.view(T, -1, *o.shape[1:]).clone()))
             for n, m in model.named_modules() if isinstance(m, (TimeAct, nn.MaxPool2d))]
    with torch.no_grad():
        logits = model(x)
    for h in hooks:
        h.remove()
    return logits, rec
