"""timm registration: ``timm.create_model("spiking_resnet34", num_classes=1000, timesteps=4)`` and friends.

| name | paper / definition |
| --- | --- |
| ``spiking_resnet18/34`` | ImageNet ResNet-18/34 layout, binary-spike blocks (SSCL Table 2, Fang et al. 2021) |
| ``sew_resnet18/34`` | SEW-ResNet with ADD connection (Fang et al. 2021; TCL/STCL) |
| ``spiking_resnet19`` | CIFAR ResNet-19 of Zheng et al. 2020 (tdBN): 3x3 stem of 128, stages [3, 3, 2] x [128, 256, 512]; one FC head (the 256-wide hidden FC of some releases is left out) |
| ``spiking_resnet20`` | CIFAR ResNet-20 of Rathi & Roy 2020 (DIET-SNN): three 3x3 convs of 64 + 2x2 avg-pool, stages [2, 2, 2, 2] x [128, 256, 512, 512] (dropout left out) |
| ``spiking_resnet18/34_cifar``, ``sew_resnet18/34_cifar`` | the ResNet-18/34 stages on 32 px CIFAR images: 3x3/1 stem conv of 64, no max-pool (the CIFAR stem of TCL/STCL's SEW-ResNets and of the usual CIFAR ResNet-18); stage maps 32, 16, 8, 4 px |
| ``ann_resnet18/34/19/20``, ``ann_resnet18/34_cifar`` | the ANN counterparts (same net, ReLU, no T): the teachers |

Neuron arguments (``decay``, ``threshold``, ``surrogate``, ``surrogate_width``, ``implementation``) or a
ready ``neuron`` factory are injected, as timm injects ``act_layer``.
"""
from __future__ import annotations

from functools import partial

from timm.models import register_model

from distsnn.spiking import LIF

from .resnet import ResNet

ARCHS = {
    "resnet18": dict(layers=(2, 2, 2, 2), widths=(64, 128, 256, 512), strides=(1, 2, 2, 2), stem="imagenet"),
    "resnet34": dict(layers=(3, 4, 6, 3), widths=(64, 128, 256, 512), strides=(1, 2, 2, 2), stem="imagenet"),
    "resnet19": dict(layers=(3, 3, 2), widths=(128, 256, 512), strides=(1, 2, 2), stem="cifar"),
    "resnet20": dict(layers=(2, 2, 2, 2), widths=(128, 256, 512, 512), strides=(1, 2, 2, 2), stem="cifar3"),
    "resnet18_cifar": dict(layers=(2, 2, 2, 2), widths=(64, 128, 256, 512), strides=(1, 2, 2, 2), stem="cifar"),
    "resnet34_cifar": dict(layers=(3, 4, 6, 3), widths=(64, 128, 256, 512), strides=(1, 2, 2, 2), stem="cifar"),
}
_TIMM_ARGS = ("pretrained", "pretrained_cfg", "pretrained_cfg_overlay", "cache_dir", "features_only")


def _build(arch: str, kind: str, **kwargs) -> ResNet:
    if kwargs.get("pretrained"):
        raise ValueError("pretrained: distsnn never downloads weights; load a local .safetensors file instead")
    for k in _TIMM_ARGS:
        kwargs.pop(k, None)
    neuron = kwargs.pop("neuron", None)
    lif_args = {k: kwargs.pop(k) for k in ("decay", "threshold", "surrogate", "implementation") if k in kwargs}
    if "surrogate_width" in kwargs:
        lif_args["width"] = kwargs.pop("surrogate_width")
    if kind == "ann":
        kwargs.pop("timesteps", None)
        return ResNet(**ARCHS[arch], kind="ann", timesteps=None, **kwargs)
    if neuron is None:
        LIF(**lif_args)  # validate the arguments once, with their names, before building the net
        neuron = partial(LIF, **lif_args)
    return ResNet(**ARCHS[arch], kind=kind, neuron=neuron, **kwargs)


@register_model
def spiking_resnet18(**kwargs):
    return _build("resnet18", "spiking", **kwargs)


@register_model
def spiking_resnet34(**kwargs):
    return _build("resnet34", "spiking", **kwargs)


@register_model
def spiking_resnet19(**kwargs):
    return _build("resnet19", "spiking", **kwargs)


@register_model
def spiking_resnet20(**kwargs):
    return _build("resnet20", "spiking", **kwargs)


@register_model
def sew_resnet18(**kwargs):
    return _build("resnet18", "sew", **kwargs)


@register_model
def sew_resnet34(**kwargs):
    return _build("resnet34", "sew", **kwargs)


@register_model
def ann_resnet18(**kwargs):
    return _build("resnet18", "ann", **kwargs)


@register_model
def ann_resnet34(**kwargs):
    return _build("resnet34", "ann", **kwargs)


@register_model
def ann_resnet19(**kwargs):
    return _build("resnet19", "ann", **kwargs)


@register_model
def ann_resnet20(**kwargs):
    return _build("resnet20", "ann", **kwargs)


@register_model
def spiking_resnet18_cifar(**kwargs):
    return _build("resnet18_cifar", "spiking", **kwargs)


@register_model
def spiking_resnet34_cifar(**kwargs):
    return _build("resnet34_cifar", "spiking", **kwargs)


@register_model
def sew_resnet18_cifar(**kwargs):
    return _build("resnet18_cifar", "sew", **kwargs)


@register_model
def sew_resnet34_cifar(**kwargs):
    return _build("resnet34_cifar", "sew", **kwargs)


@register_model
def ann_resnet18_cifar(**kwargs):
    return _build("resnet18_cifar", "ann", **kwargs)


@register_model
def ann_resnet34_cifar(**kwargs):
    return _build("resnet34_cifar", "ann", **kwargs)


STUDENTS = ("spiking_resnet18", "spiking_resnet34", "spiking_resnet19", "spiking_resnet20", "sew_resnet18", "sew_resnet34",
            "spiking_resnet18_cifar", "spiking_resnet34_cifar", "sew_resnet18_cifar", "sew_resnet34_cifar")
ANNS = ("ann_resnet18", "ann_resnet34", "ann_resnet19", "ann_resnet20", "ann_resnet18_cifar", "ann_resnet34_cifar")


def ann_counterpart(student: str) -> str:
    """``spiking_resnet34`` / ``sew_resnet34`` -> ``ann_resnet34``."""
    for prefix in ("spiking_", "sew_", "ann_"):
        if student.startswith(prefix):
            return "ann_" + student[len(prefix):]
    raise ValueError(f"model name: {student!r} is not a distsnn model ({', '.join(STUDENTS + ANNS)})")
