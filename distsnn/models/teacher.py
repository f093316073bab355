"""The frozen ANN teacher: a distsnn ``ann_*`` net or any timm ResNet, loaded from a local safetensors file."""
from __future__ import annotations

import timm
import torch
from torch import nn

from .output import ModelOutput
from .registry import ANNS, ann_counterpart
from .weights import load_weights


class TimmResNetFeatures(nn.Module):
    """Exposes a timm ``ResNet``'s stage outputs and pooled feature as a ``ModelOutput``."""

    def __init__(self, net: nn.Module):
        super().__init__()
        for attr in ("conv1", "bn1", "act1", "maxpool", "layer1", "layer2", "layer3", "layer4", "fc"):
            if not hasattr(net, attr):
                raise ValueError(f"teacher.name: timm model {type(net).__name__} is not a ResNet (no {attr})")
        self.net = net
        self.feature_channels = {f"stage{i}": getattr(net, f"layer{i}")[-1].conv2.out_channels
                                 if hasattr(getattr(net, f"layer{i}")[-1], "conv2") else None for i in range(1, 5)}
        self.feature_channels["pooled"] = net.num_features
        if hasattr(net.layer4[-1], "conv3"):  # bottleneck ResNets
            for i in range(1, 5):
                self.feature_channels[f"stage{i}"] = getattr(net, f"layer{i}")[-1].conv3.out_channels

    def forward(self, x: torch.Tensor, return_features: bool = False):
        n = self.net
        h = n.maxpool(n.act1(n.bn1(n.conv1(x))))
        feats = {}
        for i in range(1, 5):
            h = getattr(n, f"layer{i}")(h)
            feats[f"stage{i}"] = h
        pooled = h.mean(dim=(2, 3))
        logits = n.fc(pooled)
        if not return_features:
            return logits
        return ModelOutput(logits, feats | {"pooled": pooled})

    def state_dict(self, *args, **kwargs):  # keys as timm names them, so timm weight files load directly
        return self.net.state_dict(*args, **kwargs)

    def load_state_dict(self, state, strict: bool = True, assign: bool = False):
        return self.net.load_state_dict(state, strict=strict, assign=assign)


def build_teacher(teacher_cfg, model_cfg) -> nn.Module:
    """The frozen teacher of the ``teacher`` config section: name '' = the student's ANN counterpart
    (``ann_resnet34`` for ``spiking_resnet34``, same width), an ``ann_*`` name, or a timm ResNet name
    (``resnet34``). Weights: a local ``.safetensors`` file (required), loaded strictly."""
    name, weights, num_classes = teacher_cfg.name, teacher_cfg.weights, model_cfg.num_classes
    name = name or ann_counterpart(model_cfg.name)
    if name in ANNS:
        net = timm.create_model(name, num_classes=num_classes, width_multiplier=model_cfg.width_multiplier,
                                in_chans=model_cfg.in_chans)
    else:
        try:
            net = TimmResNetFeatures(timm.create_model(name, pretrained=False, num_classes=num_classes))
        except RuntimeError as e:  # timm: "Unknown model"
            raise ValueError(f"teacher.name: {name!r}: {e}") from e
    if not weights:
        raise ValueError("teacher.weights: a teacher needs a local .safetensors weights file")
    load_weights(net, weights, what="teacher.weights")
    net.eval().requires_grad_(False)
    return net
