"""NIR export: every registered spiking model, written, read back with ``nir`` and run by a plain executor written
here from the NIR spec (numpy, float64, forward Euler at dt = 1), gives our spikes in every layer and our logits."""
from __future__ import annotations

import math

import nir
import numpy as np
import pytest
import torch
from numpy.lib.stride_tricks import sliding_window_view
from torch import nn

from distsnn.export import ExportError
from distsnn.export.nir_export import export_nir, to_nir
from distsnn.export.nir_sim import simulate
from distsnn.models import STUDENTS
from distsnn.models.resnet import TimeAct
from export_helpers import images, our_spikes, tiny_student

T = 3


# ---- the reference executor: NIR's node equations, one Euler step of dt = 1 per model step -------------------------

def _windows(x: np.ndarray, kernel, stride, padding) -> np.ndarray:
    """``x [B, C, H, W]`` zero-padded -> ``[B, C, Ho, Wo, kh, kw]`` windows."""
    (ph, pw), (sh, sw) = padding, stride
    x = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    return sliding_window_view(x, tuple(kernel), axis=(2, 3))[:, :, ::sh, ::sw]


def _node_step(node, x: np.ndarray, v: np.ndarray | None):
    """(output, new state) of one NIR node for the summed input ``x`` of this step."""
    if isinstance(node, nir.Conv2d):
        assert tuple(node.dilation) == (1, 1) and node.groups == 1
        win = _windows(x, node.weight.shape[2:], node.stride, node.padding)
        return np.einsum("bchwij,ocij->bohw", win, node.weight, optimize=True) + node.bias[:, None, None], None
    if isinstance(node, nir.LIF):  # tau dv/dt = v_leak - v + r I; z = [v > v_thr]; v <- v_reset where z
        v = np.zeros_like(x) if v is None else v
        v = v + (1.0 / node.tau) * (node.v_leak - v + node.r * x)
        z = v > node.v_threshold
        return z.astype(x.dtype), np.where(z, node.v_reset, v)
    if isinstance(node, nir.IF):  # dv/dt = r I
        v = (np.zeros_like(x) if v is None else v) + node.r * x
        z = v > node.v_threshold
        return z.astype(x.dtype), np.where(z, node.v_reset, v)
    if isinstance(node, nir.Threshold):
        return (x > node.threshold).astype(x.dtype), None
    if isinstance(node, (nir.SumPool2d, nir.AvgPool2d)):
        s = _windows(x, node.kernel_size, node.stride, node.padding).sum(axis=(-2, -1))
        return (s if isinstance(node, nir.SumPool2d) else s / np.prod(node.kernel_size)), None
    if isinstance(node, nir.Flatten):
        return x.reshape(x.shape[0], *node.output_type["output"]), None
    if isinstance(node, nir.Affine):
        return x @ node.weight.T + node.bias, None
    if isinstance(node, nir.Output):
        return x, None
    raise AssertionError(f"the reference executor has no rule for {type(node).__name__}")


def run_reference(graph: nir.NIRGraph, image: np.ndarray, steps: int):
    """The same image at every step; inputs summed over incoming edges; nodes run when all inputs are ready."""
    preds = {n: [a for a, b in graph.edges if b == n] for n in graph.nodes}
    state, outs, spikes = {}, [], {}
    for _ in range(steps):
        val = {n: image for n, node in graph.nodes.items() if isinstance(node, nir.Input)}
        while len(val) < len(graph.nodes):
            for n, node in graph.nodes.items():
                if n not in val and all(p in val for p in preds[n]):
                    val[n], state[n] = _node_step(node, sum(val[p] for p in preds[n]), state.get(n))
                    if isinstance(node, (nir.LIF, nir.IF, nir.Threshold)):
                        spikes.setdefault(n, []).append(val[n])
        outs.append(next(val[n] for n, node in graph.nodes.items() if isinstance(node, nir.Output)))
    return np.stack(outs), {n: np.stack(s) for n, s in spikes.items()}


def _compare(model, graph, x):
    logits, ours = our_spikes(model, x)
    out, theirs = run_reference(graph, x.numpy(), T)
    return logits.numpy(), ours, out, theirs


# ---- the proofs ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", STUDENTS)
def test_nir_file_simulates_to_our_spikes_and_logits(name, tmp_path):
    model = tiny_student(name, T).double()
    path = tmp_path / "m.nir"
    nir.write(path, to_nir(model, images(name).shape[-1], np.float64))
    graph = nir.read(path)
    x = images(name, dtype=torch.float64)
    logits, ours, out, theirs = _compare(model, graph, x)

    # every neuron (and the stem's spike max-pool) of ours is a spiking node there, with the same name
    assert set(theirs) == set(ours)
    n_lif = sum(isinstance(n, nir.LIF) for n in graph.nodes.values())
    assert n_lif == sum(isinstance(m, TimeAct) for m in model.modules())
    for layer, s in ours.items():
        assert 0 < s.mean() < 1, f"{layer}: silent or saturated ({float(s.mean()):.3f}): the comparison proves little"
        np.testing.assert_array_equal(theirs[layer], s.numpy(), err_msg=f"{name}: {layer}: spikes differ")
    np.testing.assert_allclose(out, logits, rtol=0, atol=1e-9)
    assert graph.metadata["dt"] == 1.0 and graph.metadata["timesteps"] == T


def test_package_simulator_matches_the_reference():
    """``nir_sim.simulate`` (the launcher's equivalence figure) against this file's executor on a SEW net."""
    name = "sew_resnet18"
    model = tiny_student(name, T).double()
    graph = to_nir(model, images(name).shape[-1], np.float64)
    x = images(name, dtype=torch.float64)
    out, spikes = simulate(graph, x, T)
    ref_out, ref_spikes = run_reference(graph, x.numpy(), T)
    assert set(spikes) == set(ref_spikes)
    for layer in spikes:
        np.testing.assert_array_equal(spikes[layer].numpy(), ref_spikes[layer], err_msg=layer)
    np.testing.assert_allclose(out.numpy(), ref_out, rtol=0, atol=1e-12)


def test_float32_file_and_mapping_values(tmp_path):
    """The written file is float32; a LIF node holds tau = dt/(1-decay), r = 1/(1-decay), v_leak = v_reset = 0; the
    convolutions carry BN's running statistics, and exporting leaves the model as it was."""
    name = "spiking_resnet20"
    model = tiny_student(name, T, decay=0.25, threshold=0.5).train()  # exported from train mode: stats untouched
    stats = {k: v.clone() for k, v in model.state_dict().items() if "running" in k}
    export_nir(model, images(name).shape[-1], tmp_path / "m.nir")
    assert model.training and all(torch.equal(v, model.state_dict()[k]) for k, v in stats.items())
    graph = nir.read(tmp_path / "m.nir")
    lif = graph.nodes["stages.0.0.act1"]
    assert lif.tau.dtype == np.float32 and lif.tau.shape == lif.v_threshold.shape
    np.testing.assert_allclose(lif.tau, 1 / 0.75, rtol=1e-7)
    np.testing.assert_allclose(lif.r, 1 / 0.75, rtol=1e-7)
    assert (lif.v_leak == 0).all() and (lif.v_reset == 0).all() and (lif.v_threshold == 0.5).all()
    # BN folded: no BatchNorm anywhere, conv biases carry the shift
    conv = graph.nodes["stem_conv.0"]
    bn = model.stem_conv[1]
    scale = (bn.weight / torch.sqrt(bn.running_var + bn.eps)).detach().numpy()
    np.testing.assert_allclose(conv.bias, bn.bias.detach().numpy() - bn.running_mean.numpy() * scale, rtol=1e-5)


@pytest.mark.parametrize("decay", [0.0, 1.0])
def test_leak_extremes_no_memory_and_integrate_and_fire(decay):
    """decay 0 (tau = dt: no memory) and decay 1 (NIR's IF) reproduce our spikes too."""
    name = "spiking_resnet19"
    model = tiny_student(name, T, decay=decay, threshold=0.5).double()
    graph = to_nir(model, images(name).shape[-1], np.float64)
    kinds = {type(n).__name__ for n in graph.nodes.values()}
    assert ("IF" in kinds and "LIF" not in kinds) if decay == 1.0 else ("LIF" in kinds and "IF" not in kinds)
    logits, ours, out, theirs = _compare(model, graph, images(name, dtype=torch.float64))
    for layer, s in ours.items():
        np.testing.assert_array_equal(theirs[layer], s.numpy(), err_msg=layer)
    np.testing.assert_allclose(out, logits, rtol=0, atol=1e-9)


def test_other_discretisation_is_caught():
    """The executor is sensitive to the mapping: tau for exact (zero-order-hold) integration, -dt/ln(decay), with the
    same r is what an exact integrator needs, but under forward Euler it changes the spikes."""
    name = "spiking_resnet20"
    model = tiny_student(name, T).double()
    graph = to_nir(model, images(name).shape[-1], np.float64)
    for node in graph.nodes.values():
        if isinstance(node, nir.LIF):
            node.tau = np.full_like(node.tau, -1.0 / math.log(model.stem_act[0].neuron.decay))
    _, ours, _, theirs = _compare(model, graph, images(name, dtype=torch.float64))
    assert sum(int((theirs[k] != ours[k].numpy()).sum()) for k in ours) > 0


# ---- refusals name the construct -----------------------------------------------------------------------------------

class _OtherNeuron(nn.Module):
    def forward(self, x):
        return (x > 0).to(x.dtype)


def test_refusals_name_the_culprit():
    name = "spiking_resnet18"
    size = images(name).shape[-1]
    with pytest.raises(ExportError, match="ANN has no spiking neurons"):
        to_nir(__import__("timm").create_model("ann_resnet18", num_classes=10, width_multiplier=0.0625), size)

    model = tiny_student(name, T)
    model.stages[1][0].act1.neuron = _OtherNeuron()
    with pytest.raises(ExportError, match=r"stages\.1\.0\.act1: neuron _OtherNeuron"):
        to_nir(model, size)

    model = tiny_student(name, T)
    model.stem_act = nn.Identity()  # the max-pool now sees BN outputs, not spikes
    with pytest.raises(ExportError, match="stem_pool: MaxPool2d over a non-spike input"):
        to_nir(model, size)

    model = tiny_student(name, T)
    model.stages[2][1].branch2.append(nn.Dropout(0.1))
    with pytest.raises(ExportError, match=r"stages\.2\.1\.branch2\.2: Dropout has no exact NIR equivalent"):
        to_nir(model, size)
