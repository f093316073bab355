"""distsnn spiking ResNet -> NIR graph (Neuromorphic Intermediate Representation), exact in discrete time.

NIR describes neurons in continuous time; a platform runs them on its own time grid. The graph written here
assumes **dt = 1 model step, forward-Euler integration** (the convention of snnTorch and Norse; written into the
graph's metadata). NIR's LIF, tau dv/dt = (v_leak - v) + r I, one Euler step of dt:

    v[t] = v[t-1] + dt/tau (v_leak - v[t-1] + r I[t]) = (1 - dt/tau) v[t-1] + (dt/tau) r I[t]

With tau = dt / (1 - lambda), r = tau / dt = 1 / (1 - lambda), v_leak = 0 this is v[t] = lambda v[t-1] + I[t]:
our U_pre[t] = lambda U[t-1] + x[t] (SSCL Eq.2); z = H(v - theta), v <- v_reset = 0 where z = 1 (Eq.3, hard
reset to 0). lambda = 1 (no leak) is NIR's IF with r = 1/dt; lambda = 0 gives tau = dt, r = 1. A platform that
integrates exactly (zero-order hold, v[t] = e^(-dt/tau) v + (1 - e^(-dt/tau)) r I) needs tau = -dt / ln(lambda)
with the same r instead: the metadata says which discretisation the numbers are for.

| distsnn | NIR node(s) |
| --- | --- |
| conv + BatchNorm (eval statistics) | ``Conv2d``: W' = W g / sqrt(var + eps), b' = beta - mean g / sqrt(var+eps) |
| ``LIF(lambda < 1, theta)`` | ``LIF(tau=dt/(1-lambda), r=1/(1-lambda), v_leak=0, v_threshold=theta, v_reset=0)`` |
| ``LIF(decay 1, theta)`` | ``IF(r=1/dt, v_threshold=theta, v_reset=0)`` |
| spiking block: SN(branch + shortcut) | two edges into the block's LIF node (NIR sums the edges that meet at a node) |
| SEW block: SN(branch) + shortcut (ADD) | no node: the block's consumers get an edge from each addend |
| ``AvgPool2d`` | ``AvgPool2d`` |
| ``MaxPool2d`` on spikes (ImageNet stem) | ``SumPool2d`` (same window, zero padding) -> ``Threshold(0.5)`` (a) |
| spatial mean + ``fc`` | ``AvgPool2d(H x W)`` -> ``Flatten`` -> ``Affine``; the ``Output`` is the logits of each step |

(a) over 0/1 spikes the max of a window is 1 iff its sum is >= 1: the pair is that max-pool exactly.

Direct encoding: the graph's input is the image at every step; the stem convolution then recomputes at each step
the value our model computes once and repeats. The mapping's only inexactness is the threshold's tie: we fire at
U >= theta, NIR's spec at v > theta (a membrane exactly on theta). The float32 file adds rounding (folded weights,
r = 1/(1-lambda)), which flips a spike whose membrane is within an ulp of theta (docs/EXPORT.md). Anything else
(another neuron class, a max-pool over non-spikes, an unknown module) is refused with an ``ExportError`` naming
the module.
"""
from __future__ import annotations

from pathlib import Path

import nir
import numpy as np
import torch
from torch import nn

from distsnn.models.resnet import BasicBlock, ResNet, TimeAct
from distsnn.spiking import LIF

from .run_model import ExportError

DT = 1.0
SPIKING_NODES = (nir.LIF, nir.IF, nir.Threshold)  # nodes whose output is 0/1 spikes


def _pair(v) -> tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[1]))


class _GraphBuilder:
    """Walks a ``ResNet`` module by module; the running tensor is a list of node names whose outputs add up."""

    def __init__(self, shapes: dict[nn.Module, tuple[int, ...]], dtype):
        self.shapes, self.dtype = shapes, dtype
        self.nodes: dict[str, nir.NIRNode] = {}
        self.edges: list[tuple[str, str]] = []
        self.out_shape: dict[str, tuple[int, ...]] = {}

    def add(self, name: str, node: nir.NIRNode, inputs: list[str], shape: tuple[int, ...]) -> list[str]:
        in_shapes = {self.out_shape[i] for i in inputs}
        if len(in_shapes) > 1:
            raise ExportError(f"{name}: the inputs to add have different shapes {sorted(in_shapes)}")
        self.nodes[name] = node
        self.edges += [(i, name) for i in inputs]
        self.out_shape[name] = tuple(int(s) for s in shape)
        return [name]

    def arr(self, x) -> np.ndarray:
        return np.asarray(x.detach().cpu().double().numpy() if isinstance(x, torch.Tensor) else x, dtype=self.dtype)

    def full(self, value: float, shape) -> np.ndarray:
        return np.full(shape, value, dtype=self.dtype)

    def module(self, m: nn.Module, path: str, cur: list[str]) -> list[str]:
        if isinstance(m, nn.Sequential):
            children = list(m.named_children())
            i = 0
            while i < len(children):
                name, child = children[i]
                bn = children[i + 1][1] if i + 1 < len(children) else None
                if isinstance(child, nn.Conv2d):
                    bn = bn if isinstance(bn, nn.BatchNorm2d) else None
                    cur = self.conv(child, bn, f"{path}.{name}", cur)
                    i += 2 if bn is not None else 1
                else:
                    cur = self.module(child, f"{path}.{name}", cur)
                    i += 1
            return cur
        if isinstance(m, BasicBlock):
            return self.block(m, path, cur)
        if isinstance(m, TimeAct):
            return self.neuron(m, path, cur)
        if isinstance(m, nn.Identity):
            return cur
        if isinstance(m, nn.AvgPool2d):
            return self.avg_pool(m, path, cur)
        if isinstance(m, nn.MaxPool2d):
            return self.max_pool(m, path, cur)
        if isinstance(m, nn.Conv2d):
            return self.conv(m, None, path, cur)
        raise ExportError(f"{path}: {type(m).__name__} has no exact NIR equivalent (exported: Conv2d[+BatchNorm2d], "
                          "LIF, residual adds, AvgPool2d, MaxPool2d over spikes, the linear head)")

    def block(self, m: BasicBlock, path: str, x: list[str]) -> list[str]:
        h = self.module(m.branch1, f"{path}.branch1", x)
        h = self.module(m.act1, f"{path}.act1", h)
        h = self.module(m.branch2, f"{path}.branch2", h)
        sc = self.module(m.shortcut, f"{path}.shortcut", x)
        if m.kind == "sew":  # SEW ADD: SN(branch) + shortcut, summed where the next nodes read it
            return self.module(m.act2, f"{path}.act2", h) + sc
        if m.kind == "spiking":  # SN(branch + shortcut): both edges end at the block's neuron
            return self.module(m.act2, f"{path}.act2", h + sc)
        raise ExportError(f"{path}: block kind {m.kind!r} is not spiking or sew")

    def conv(self, conv: nn.Conv2d, bn: nn.BatchNorm2d | None, path: str, cur: list[str]) -> list[str]:
        if conv.padding_mode != "zeros" or isinstance(conv.padding, str):
            raise ExportError(f"{path}: Conv2d padding {conv.padding!r} / mode {conv.padding_mode!r}: only explicit "
                              "zero padding is exported")
        w = conv.weight.detach().double()
        b = conv.bias.detach().double() if conv.bias is not None else torch.zeros(w.shape[0], dtype=torch.float64)
        if bn is not None:
            if bn.running_mean is None or bn.running_var is None:
                raise ExportError(f"{path}: BatchNorm2d without running statistics cannot be folded")
            g = bn.weight.detach().double() if bn.affine else torch.ones_like(b)
            beta = bn.bias.detach().double() if bn.affine else torch.zeros_like(b)
            scale = g / torch.sqrt(bn.running_var.double() + bn.eps)  # BN(y) = scale (y - mean) + beta
            w = w * scale[:, None, None, None]
            b = (b - bn.running_mean.double()) * scale + beta
        in_shape = self.out_shape[cur[0]]
        node = nir.Conv2d(input_shape=in_shape[1:], weight=self.arr(w), stride=_pair(conv.stride),
                          padding=_pair(conv.padding), dilation=_pair(conv.dilation), groups=int(conv.groups),
                          bias=self.arr(b))
        return self.add(path, node, cur, self.shapes[bn if bn is not None else conv])

    def neuron(self, m: TimeAct, path: str, cur: list[str]) -> list[str]:
        lif = m.neuron
        if not isinstance(lif, LIF):
            raise ExportError(f"{path}: neuron {type(lif).__name__} is not distsnn's LIF; its NIR mapping is unknown")
        shape = self.shapes[m]
        lam, theta = lif.decay, lif.threshold
        if lam >= 1.0:  # no leak: v[t] = v[t-1] + dt r I[t] with r = 1/dt
            node = nir.IF(r=self.full(1.0 / DT, shape), v_threshold=self.full(theta, shape),
                          v_reset=self.full(0.0, shape))
        else:
            tau = DT / (1.0 - lam)
            node = nir.LIF(tau=self.full(tau, shape), r=self.full(tau / DT, shape), v_leak=self.full(0.0, shape),
                           v_threshold=self.full(theta, shape), v_reset=self.full(0.0, shape))
        return self.add(path, node, cur, shape)

    def avg_pool(self, m: nn.AvgPool2d, path: str, cur: list[str]) -> list[str]:
        if m.ceil_mode or m.divisor_override is not None or (_pair(m.padding) != (0, 0) and not m.count_include_pad):
            raise ExportError(f"{path}: AvgPool2d with ceil_mode/divisor_override/padding excluded from the count "
                              "has no NIR equivalent")
        k = _pair(m.kernel_size)
        node = nir.AvgPool2d(kernel_size=np.array(k), stride=np.array(_pair(m.stride or k)),
                             padding=np.array(_pair(m.padding)))
        return self.add(path, node, cur, self.shapes[m])

    def max_pool(self, m: nn.MaxPool2d, path: str, cur: list[str]) -> list[str]:
        if len(cur) != 1 or not isinstance(self.nodes[cur[0]], SPIKING_NODES):
            raise ExportError(f"{path}: MaxPool2d over a non-spike input (from {cur}) has no NIR equivalent; over 0/1 "
                              "spikes it is exported as SumPool2d -> Threshold(0.5)")
        if m.ceil_mode or _pair(m.dilation) != (1, 1) or m.return_indices:
            raise ExportError(f"{path}: MaxPool2d with ceil_mode/dilation/return_indices has no NIR equivalent")
        k = _pair(m.kernel_size)
        shape = self.shapes[m]
        pool = nir.SumPool2d(kernel_size=np.array(k), stride=np.array(_pair(m.stride or k)),
                             padding=np.array(_pair(m.padding)))
        summed = self.add(f"{path}.sum", pool, cur, shape)
        return self.add(path, nir.Threshold(threshold=self.full(0.5, shape)), summed, shape)


def _probe_shapes(model: ResNet, image_size: int) -> dict[nn.Module, tuple[int, ...]]:
    """Per-sample output shape ``(C, H, W)`` of every leaf module and neuron, from one eval-mode forward of a blank
    image (eval: a train-mode probe would move the BatchNorm statistics that are about to be folded)."""
    shapes: dict[nn.Module, tuple[int, ...]] = {}
    was_training = model.training
    model.eval()
    hooks = [m.register_forward_hook(lambda mod, _i, out: shapes.__setitem__(mod, tuple(out.shape[1:])))
             for m in model.modules() if len(list(m.children())) == 0 or isinstance(m, TimeAct)]
    try:
        with torch.no_grad():
            p = next(model.parameters())
            model(torch.zeros(1, model.in_chans, image_size, image_size, dtype=p.dtype, device=p.device))
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()
    return shapes


def check_exportable(model: nn.Module, what: str = "model") -> ResNet:
    """The model as a spiking distsnn ``ResNet`` with LIF neurons everywhere, else an ``ExportError`` naming why."""
    if not isinstance(model, ResNet):
        raise ExportError(f"{what}: {type(model).__name__} is not a distsnn ResNet (the NIR exporter knows its layout)")
    if not model.spiking:
        raise ExportError(f"{what}: an ANN has no spiking neurons; NIR export is for the spiking students "
                          "(the ONNX export takes ANNs)")
    for name, m in model.named_modules():
        if isinstance(m, TimeAct) and not isinstance(m.neuron, LIF):
            raise ExportError(f"{what}: {name}: neuron {type(m.neuron).__name__} is not distsnn's LIF; "
                              "its NIR mapping is unknown")
    return model


def to_nir(model: ResNet, image_size: int, dtype=np.float32, metadata: dict | None = None) -> nir.NIRGraph:
    """The NIR graph of a spiking ``ResNet`` for ``[in_chans, image_size, image_size]`` images (mapping above).

    LIF nodes are named by the module path of the neuron (``stem_act``, ``stages.0.1.act2``), convolutions by the
    conv's path (``stages.0.0.branch1.0``); parameters are stored as ``dtype``.
    """
    check_exportable(model)
    shapes = _probe_shapes(model, image_size)
    b = _GraphBuilder(shapes, dtype)
    in_shape = (model.in_chans, image_size, image_size)
    cur = b.add("input", nir.Input(input_type={"input": np.array(in_shape)}), [], in_shape)
    cur = b.module(model.stem_conv, "stem_conv", cur)
    cur = b.module(model.stem_act, "stem_act", cur)
    cur = b.module(model.stem_pool, "stem_pool", cur)
    for i, stage in enumerate(model.stages):
        cur = b.module(stage, f"stages.{i}", cur)
    c, h, w = b.out_shape[cur[0]]
    cur = b.add("global_pool", nir.AvgPool2d(kernel_size=np.array((h, w)), stride=np.array((h, w)),
                                             padding=np.array((0, 0))), cur, (c, 1, 1))
    cur = b.add("flatten", nir.Flatten(input_type={"input": np.array((c, 1, 1))}, start_dim=0, end_dim=-1), cur, (c,))
    cur = b.add("fc", nir.Affine(weight=b.arr(model.fc.weight), bias=b.arr(model.fc.bias)), cur,
                (model.num_classes,))
    b.add("output", nir.Output(output_type={"output": np.array((model.num_classes,))}), cur, (model.num_classes,))
    meta = {"source": "distsnn", "dt": DT, "discretisation": "forward Euler: v += dt/tau (v_leak - v + r I)",
            "timesteps": int(model.timesteps), "encoding": "direct: the same image at every step",
            "output": "logits at every step; the prediction is their mean over the steps",
            "threshold_tie": "distsnn fires at v >= v_threshold, NIR's spec at v > v_threshold"}
    return nir.NIRGraph(nodes=b.nodes, edges=b.edges, metadata=meta | (metadata or {}))


def export_nir(model: ResNet, image_size: int, path: str | Path, metadata: dict | None = None) -> nir.NIRGraph:
    """Write the float32 NIR graph of ``model`` to ``path`` (HDF5, ``nir.write``); returns the graph."""
    graph = to_nir(model, image_size, np.float32, metadata)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    nir.write(tmp, graph)
    tmp.replace(path)
    return graph
