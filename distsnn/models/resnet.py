"""Spiking ResNet, SEW-ResNet and their ANN counterparts, in one residual network with an injected activation.

Layout: inside the network a spiking tensor is kept flat as ``[T*B, C, H, W]`` so that convolutions and
BatchNorm run on all time steps at once without copies; the neuron views it as ``[T, B, C, H, W]`` (time-major)
to walk the time axis. BatchNorm statistics therefore run over time and batch. The ANN counterpart is the same
network with ReLU and T = 1.

Blocks (Fang et al. 2021, SEW-ResNet paper, Fig. 2):
- ``spiking``: out = SN(BN(conv(SN(BN(conv(x))))) + shortcut(x)), shortcut = BN(conv1x1) when shapes change.
  The neuron after the addition keeps every stage output binary (SSCL's "original spiking ResNet").
- ``sew``: out = SN(BN(conv(SN(BN(conv(x)))))) + shortcut(x) with ADD, shortcut = SN(BN(conv1x1)) when shapes
  change: stage outputs are non-negative integers (TCL/STCL use SEW-ResNet with ADD).
- ``ann``: the torchvision BasicBlock, ReLU after the addition.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from .output import ModelOutput
from .stage_checkpoint import checkpointed

ActFactory = Callable[[], nn.Module]


class TimeAct(nn.Module):
    """Applies a multi-step neuron to a flat ``[T*B, ...]`` tensor by viewing it as ``[T, B, ...]``."""

    def __init__(self, neuron: nn.Module, timesteps: int):
        super().__init__()
        self.neuron, self.timesteps = neuron, timesteps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.neuron(x.view(self.timesteps, -1, *x.shape[1:])).view(x.shape)


def conv_bn(cin: int, cout: int, k: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, stride, k // 2, bias=False), nn.BatchNorm2d(cout))


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, kind: str, act: ActFactory):
        super().__init__()
        self.kind = kind
        self.branch1, self.act1 = conv_bn(cin, cout, 3, stride), act()
        self.branch2 = conv_bn(cout, cout, 3, 1)
        self.shortcut = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = conv_bn(cin, cout, 1, stride)
            if kind == "sew":
                self.shortcut.append(act())
        self.act2 = act()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.branch2(self.act1(self.branch1(x)))
        if self.kind == "sew":
            return self.act2(out) + self.shortcut(x)  # SEW ADD: spikes + spikes
        return self.act2(out + self.shortcut(x))


class ResNet(nn.Module):
    """Residual network; ``timesteps=None`` builds the ANN, otherwise a spiking network with T = ``timesteps``.

    Args:
        layers: blocks per stage; widths: channels per stage; strides: stride of each stage's first block.
        stem: ``"imagenet"`` (7x7/2 conv + 3x3/2 max-pool), ``"cifar"`` (3x3/1 conv) or ``"cifar3"``
            (three 3x3 convs + 2x2 average pool, the ResNet-20 of Rathi & Roy 2020).
        kind: ``"spiking"`` | ``"sew"`` | ``"ann"``; neuron: factory of the multi-step neuron (spiking kinds).
        width_multiplier: scales every channel count (1.0 = the paper's net; small values for CPU demos).
    """

    def __init__(self, layers, widths, strides, stem: str, kind: str, num_classes: int = 1000,
                 in_chans: int = 3, timesteps: int | None = 4, neuron: ActFactory | None = None,
                 width_multiplier: float = 1.0):
        super().__init__()
        if width_multiplier <= 0:
            raise ValueError(f"width_multiplier: {width_multiplier} must be > 0")
        widths = [max(4, round(w * width_multiplier)) for w in widths]
        stem_width = max(4, round(64 * width_multiplier))
        if kind not in ("spiking", "sew", "ann"):
            raise ValueError(f"kind: {kind!r} is not one of ['spiking', 'sew', 'ann']")
        if num_classes < 1:
            raise ValueError(f"num_classes: {num_classes} must be >= 1")
        self.spiking = kind != "ann"
        self.grad_checkpointing = False
        if self.spiking:
            if timesteps is None or int(timesteps) < 1:
                raise ValueError(f"timesteps: {timesteps} must be >= 1 for a spiking network")
            if neuron is None:
                raise ValueError("neuron: a spiking network needs a neuron factory")
            self.timesteps = int(timesteps)
            act = lambda: TimeAct(neuron(), self.timesteps)  # noqa: E731
        else:
            self.timesteps = 1
            act = lambda: nn.ReLU(inplace=True)  # noqa: E731
        self.in_chans, self.num_classes = in_chans, num_classes
        self.stem_conv, self.stem_act, self.stem_pool = self._stem(stem, in_chans, widths[0], stem_width, act)
        self.stages = nn.ModuleList()
        cin = widths[0] if stem != "cifar3" else stem_width
        for n, cout, stride in zip(layers, widths, strides):
            blocks = [BasicBlock(cin if i == 0 else cout, cout, stride if i == 0 else 1, kind, act) for i in range(n)]
            self.stages.append(nn.Sequential(*blocks))
            cin = cout
        self.num_features = cin
        self.fc = nn.Linear(cin, num_classes)
        self.feature_channels = {f"stage{i + 1}": w for i, w in enumerate(widths)} | {"pooled": cin}
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    @staticmethod
    def _stem(stem: str, in_chans: int, width: int, stem_width: int, act: ActFactory):
        if stem == "imagenet":
            return conv_bn(in_chans, width, 7, 2), act(), nn.MaxPool2d(3, 2, 1)
        if stem == "cifar":
            return conv_bn(in_chans, width, 3, 1), act(), nn.Identity()
        if stem == "cifar3":  # conv-act-conv-act-conv, act, avgpool: the stem's first conv is computed once
            w = stem_width
            rest = nn.Sequential(act(), conv_bn(w, w, 3, 1), act(), conv_bn(w, w, 3, 1))
            return conv_bn(in_chans, w, 3, 1), nn.Sequential(*rest, act()), nn.AvgPool2d(2)
        raise ValueError(f"stem: {stem!r} is not one of ['imagenet', 'cifar', 'cifar3']")

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """timm's switch: recompute each stage's activations in backward (less memory, one more stage forward)."""
        self.grad_checkpointing = bool(enable)

    def _check_input(self, x: torch.Tensor) -> bool:
        """True when ``x`` is a sequence ``[T, B, C, H, W]``; raises on a wrong rank or channel count."""
        if x.dim() == 4:
            seq = False
        elif x.dim() == 5 and self.spiking:
            seq = True
            if x.shape[0] != self.timesteps:
                raise ValueError(f"x: sequence has T={x.shape[0]} but the model was built with timesteps={self.timesteps}")
        else:
            want = "[B, C, H, W] or [T, B, C, H, W]" if self.spiking else "[B, C, H, W]"
            raise ValueError(f"x: expected {want}, got shape {tuple(x.shape)}")
        if x.shape[-3] != self.in_chans:
            raise ValueError(f"x: expected {self.in_chans} input channels, got {x.shape[-3]} (shape {tuple(x.shape)})")
        return seq

    def forward(self, x: torch.Tensor, return_features: bool = False) -> torch.Tensor | ModelOutput:
        """``x``: a static image ``[B, 3, H, W]`` (direct encoding: the first conv+BN runs once and its output is
        repeated over T) or a sequence ``[T, B, 3, H, W]``. Returns logits ``[T, B, K]`` (ANN: ``[B, K]``), or a
        ``ModelOutput`` with the stage outputs and the pooled feature, time-major, when ``return_features``."""
        if x.dim() == 5 and not self.spiking:  # event frames [T, B, C, H, W]: an ANN sees their sum (the count image)
            x = x.sum(0)
        seq = self._check_input(x)
        T = self.timesteps
        if seq:
            h = self.stem_conv(x.flatten(0, 1))  # [T*B, C, H, W]
        else:
            h = self.stem_conv(x)  # [B, C, H, W]: identical at every step, so computed once
            if self.spiking:
                h = h.unsqueeze(0).expand(T, *h.shape).reshape(T * h.shape[0], *h.shape[1:])
        h = self.stem_pool(self.stem_act(h))
        feats = {}
        recompute = self.grad_checkpointing and self.training and torch.is_grad_enabled()
        for i, stage in enumerate(self.stages):
            h = checkpointed(stage, h) if recompute else stage(h)
            if return_features:
                feats[f"stage{i + 1}"] = self._unflatten(h)
        pooled = h.mean(dim=(2, 3))  # [T*B, C]
        logits = self._unflatten(self.fc(pooled))
        if not return_features:
            return logits
        feats["pooled"] = self._unflatten(pooled)
        return ModelOutput(logits, feats)

    def _unflatten(self, h: torch.Tensor) -> torch.Tensor:
        return h.view(self.timesteps, -1, *h.shape[1:]) if self.spiking else h
