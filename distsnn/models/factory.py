"""Build the student from the ``model`` section of the config."""
from __future__ import annotations

import timm
from torch import nn

from .registry import ANNS, STUDENTS


def build_student(model_cfg, ann: bool = False) -> nn.Module:
    """The student SNN (or, with ``ann=True`` for method ``ann``, its ANN counterpart) of ``model_cfg``;
    ``model.grad_checkpointing`` switches on per-stage activation checkpointing."""
    name = model_cfg.name
    if name not in STUDENTS + ANNS:
        raise ValueError(f"model.name: {name!r} is not one of {list(STUDENTS + ANNS)}")
    if ann or name in ANNS:
        from .registry import ann_counterpart
        model = timm.create_model(ann_counterpart(name), num_classes=model_cfg.num_classes,
                                  width_multiplier=model_cfg.width_multiplier, in_chans=model_cfg.in_chans)
    else:
        n = model_cfg.neuron
        model = timm.create_model(name, num_classes=model_cfg.num_classes, timesteps=model_cfg.timesteps,
                                  decay=n.decay, threshold=n.threshold, surrogate=n.surrogate,
                                  surrogate_width=n.surrogate_width, implementation=n.implementation,
                                  width_multiplier=model_cfg.width_multiplier, in_chans=model_cfg.in_chans)
    model.set_grad_checkpointing(model_cfg.grad_checkpointing)
    return model
