"""distsnn network -> ONNX, unrolled over T, for ordinary inference servers (ONNX Runtime).

The graph is the model's own forward, traced by torch's exporter (``torch.onnx.export``, opset ``OPSET``; by default
``dynamo=True``, the torch.export-based exporter; ``exporter="torchscript"`` picks the legacy tracer, deprecated
since torch 2.9 but about 10x faster on these unrolled graphs, which the per-model tests use): input
``image [B, C, H, W]`` (direct encoding: the stem conv+BN runs once, its output repeated over T), output
``logits [T, B, K]`` (the prediction at step t is the mean of steps 1..t; an ANN gives ``[B, K]``). The batch
dimension is dynamic. Each LIF becomes T unrolled steps of plain ops, our Eq.2-3 written out:

    U_pre[t] = decay U[t-1] + x[t],  O[t] = [U_pre[t] >= U_th],  U[t] = U_pre[t] (1 - O[t]),  U[-1] = 0

(the training kernels, a fused autograd function or a ``torch.compile``d loop, are swapped for this loop on a copy
of the model before export; weights and BN statistics are the model's, in eval mode).
"""
from __future__ import annotations

import copy
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from distsnn.models.resnet import ResNet, TimeAct
from distsnn.spiking import LIF

from .run_model import ExportError

OPSET = 18
EXPORTERS = ("dynamo", "torchscript")


class UnrolledLIF(nn.Module):
    """``x [T, ...]`` -> spikes ``[T, ...]``: the LIF of ``distsnn.spiking`` (hard reset to 0) as traceable ops."""

    def __init__(self, decay: float, threshold: float):
        super().__init__()
        self.decay, self.threshold = float(decay), float(threshold)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        steps = x.unbind(0)  # T is fixed by the model: the exporter unrolls this loop
        u = torch.zeros_like(steps[0])
        spikes = []
        for x_t in steps:
            u_pre = self.decay * u + x_t
            o = (u_pre >= self.threshold).to(x.dtype)
            u = u_pre * (1.0 - o)
            spikes.append(o)
        return torch.stack(spikes)


def exportable_copy(model: nn.Module) -> nn.Module:
    """A float32 eval-mode copy of ``model`` on the CPU whose neurons are ``UnrolledLIF``; other neuron classes are
    refused by module name."""
    if not isinstance(model, ResNet):
        raise ExportError(f"model: {type(model).__name__} is not a distsnn ResNet")
    net = copy.deepcopy(model).float().cpu().eval()
    for name, m in net.named_modules():
        if isinstance(m, TimeAct):
            if not isinstance(m.neuron, LIF):
                raise ExportError(f"model: {name}: neuron {type(m.neuron).__name__} is not distsnn's LIF; the ONNX "
                                  "exporter unrolls only that one")
            m.neuron = UnrolledLIF(m.neuron.decay, m.neuron.threshold)
    net.set_grad_checkpointing(False)
    return net


def export_onnx(model: nn.Module, image_size: int, path: str | Path, exporter: str = "dynamo") -> Path:
    """Write ``model`` as ONNX (opset ``OPSET``, dynamic batch, weights inside the file) to ``path``."""
    if exporter not in EXPORTERS:
        raise ExportError(f"exporter: {exporter!r} is not one of {list(EXPORTERS)}")
    net = exportable_copy(model)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    example = torch.zeros(2, net.in_chans, image_size, image_size)
    tmp = path.with_name(f".{path.name}.tmp.onnx")
    names = dict(input_names=["image"], output_names=["logits"], opset_version=OPSET)
    with torch.no_grad():
        if exporter == "dynamo":
            torch.onnx.export(net, (example,), str(tmp), dynamo=True, external_data=False, verbose=False,
                              dynamic_shapes=({0: torch.export.Dim("batch", min=1)},), **names)
        else:
            with warnings.catch_warnings():  # the deprecation notice, and the tracer on the forward's shape checks
                warnings.simplefilter("ignore", DeprecationWarning)
                warnings.simplefilter("ignore", torch.jit.TracerWarning)
                torch.onnx.export(net, (example,), str(tmp), dynamo=False,
                                  dynamic_axes={"image": {0: "batch"}, "logits": {1 if net.spiking else 0: "batch"}},
                                  **names)
            _set_static_dims(tmp, net)
    tmp.replace(path)
    return path


def _set_static_dims(path: Path, net: ResNet) -> None:
    """The tracer leaves T and K of ``logits`` symbolic after the model's final view; write them as the numbers."""
    import onnx

    proto = onnx.load(str(path))
    static = [net.timesteps, None, net.num_classes] if net.spiking else [None, net.num_classes]
    for dim, value in zip(proto.graph.output[0].type.tensor_type.shape.dim, static):
        if value is not None:
            dim.dim_value = value
    onnx.save(proto, str(path))


def run_onnx(path: str | Path, images: np.ndarray) -> np.ndarray:
    """The ONNX file's logits for ``images [B, C, H, W]`` (float32) with ONNX Runtime on the CPU."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.log_severity_level = 3
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    return sess.run(["logits"], {"image": np.ascontiguousarray(images, dtype=np.float32)})[0]
