"""ONNX export: every registered spiking model, unrolled over T, run by ONNX Runtime on the CPU at a batch size
other than the one it was traced with, gives our logits at every step within 1e-4.

The sweep over all models uses the legacy TorchScript exporter (~1 s a model; the default torch.export-based one
takes ~8 s of CPU for each on these unrolled graphs). The default exporter is proven on two nets that between them
hold every op of the zoo: SEW-ResNet-18 here (ImageNet stem, max-pool over spikes, SEW ADD, spiking shortcut) and
the demo's spiking ResNet-20 at T = 4 in test_export_run (three-conv stem, avg-pool, add before the neuron)."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from distsnn.export import ExportError
from distsnn.export.onnx_export import OPSET, export_onnx, run_onnx
from distsnn.models import STUDENTS
from export_helpers import images, tiny_student

T = 2  # unrolling is proven at T > 1; the demo run dir in test_export_run exports T = 4


@pytest.mark.parametrize("name,exporter", [(n, "torchscript") for n in STUDENTS]
                         + [("sew_resnet18", "dynamo")])
def test_onnx_runtime_gives_our_logits_at_every_step(name, exporter, tmp_path):
    model = tiny_student(name, T)
    path = export_onnx(model, images(name).shape[-1], tmp_path / "m.onnx", exporter=exporter)

    proto = onnx.load(str(path))
    onnx.checker.check_model(proto)
    assert [o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")] == [OPSET]
    dims = [d.dim_param or d.dim_value for d in proto.graph.output[0].type.tensor_type.shape.dim]
    assert dims[0] == T and isinstance(dims[1], str) and dims[2] == 10, dims  # [T, batch, K], batch symbolic

    x = images(name, n=5)  # traced with a batch of 2: the batch dimension must be dynamic
    with torch.no_grad():
        ours = model(x).numpy()
    theirs = run_onnx(path, x.numpy())
    assert theirs.shape == ours.shape == (T, 5, 10)
    assert ours.std(axis=1).min() > 0, "logits equal for all images: the comparison would prove little"
    for t in range(T):
        np.testing.assert_allclose(theirs[t], ours[t], rtol=0, atol=1e-4, err_msg=f"{name}: logits at t={t + 1}")


class _OtherNeuron(nn.Module):
    def forward(self, x):
        return (x > 0).to(x.dtype)


def test_unknown_neuron_is_refused(tmp_path):
    model = tiny_student("spiking_resnet20", T)
    model.stages[0][1].act2.neuron = _OtherNeuron()
    with pytest.raises(ExportError, match=r"stages\.0\.1\.act2: neuron _OtherNeuron"):
        export_onnx(model, 8, tmp_path / "m.onnx")
    assert not (tmp_path / "m.onnx").exists()
