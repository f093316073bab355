"""Run a NIR graph in discrete time (dt per step, forward Euler), as the exporter's mapping assumes.

Per step t, nodes are evaluated in topological order; a node's input is the sum of its predecessors' outputs at
the same step (no delays), the graph's ``Input`` node gives the same images at every step (direct encoding).
Neurons (forward Euler of NIR's equations, state kept across steps):

    LIF: v <- v + dt/tau (v_leak - v + r I);  z = [v > v_threshold];  v <- v_reset where z
    IF:  v <- v + dt r I;                     z = [v > v_threshold];  v <- v_reset where z
    Threshold: z = [I > threshold]

Used by the export launcher for its equivalence figure; the tests check it against their own plain executor.
"""
from __future__ import annotations

import nir
import torch
import torch.nn.functional as F

from .run_model import ExportError


def topological_order(graph: nir.NIRGraph) -> list[str]:
    """Node names, each after all of its predecessors; a cycle is refused (the exporter writes none)."""
    preds = {n: [] for n in graph.nodes}
    for a, b in graph.edges:
        preds[b].append(a)
    order, done = [], set()
    pending = list(graph.nodes)
    while pending:
        ready = [n for n in pending if all(p in done for p in preds[n])]
        if not ready:
            raise ExportError(f"NIR graph: a cycle through {pending[:4]}: recurrent graphs are not simulated here")
        for n in ready:
            order.append(n)
            done.add(n)
        pending = [n for n in pending if n not in done]
    return order


def _t(a, like: torch.Tensor) -> torch.Tensor:
    return torch.as_tensor(a, dtype=like.dtype, device=like.device)


def simulate(graph: nir.NIRGraph, images: torch.Tensor, timesteps: int, dt: float = 1.0,
             record: bool = True) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """``images [B, C, H, W]`` -> (output ``[T, B, K]``, spikes ``{node: [T, B, ...]}`` of every LIF/IF/Threshold)."""
    order = topological_order(graph)
    preds = {n: [a for a, b in graph.edges if b == n] for n in graph.nodes}
    inputs = [n for n, node in graph.nodes.items() if isinstance(node, nir.Input)]
    outputs = [n for n, node in graph.nodes.items() if isinstance(node, nir.Output)]
    if len(inputs) != 1 or len(outputs) != 1:
        raise ExportError(f"NIR graph: expected one Input and one Output node, got {inputs} and {outputs}")
    state: dict[str, torch.Tensor] = {}
    spikes: dict[str, list[torch.Tensor]] = {}
    out_steps = []
    for _ in range(timesteps):
        val: dict[str, torch.Tensor] = {}
        for name in order:
            node = graph.nodes[name]
            if isinstance(node, nir.Input):
                val[name] = images
                continue
            x = sum(val[p] for p in preds[name])
            if isinstance(node, nir.Conv2d):
                y = F.conv2d(x, _t(node.weight, x), _t(node.bias, x), tuple(node.stride), tuple(node.padding),
                             tuple(node.dilation), int(node.groups))
            elif isinstance(node, nir.Affine):
                y = x @ _t(node.weight, x).T + _t(node.bias, x)
            elif isinstance(node, nir.AvgPool2d):
                y = F.avg_pool2d(x, tuple(node.kernel_size), tuple(node.stride), tuple(node.padding))
            elif isinstance(node, nir.SumPool2d):
                y = F.avg_pool2d(x, tuple(node.kernel_size), tuple(node.stride), tuple(node.padding),
                                 divisor_override=1)
            elif isinstance(node, nir.Flatten):
                end = node.end_dim if node.end_dim < 0 else node.end_dim + 1
                y = x.flatten(node.start_dim + 1, end)  # NIR dims exclude the batch
            elif isinstance(node, nir.Threshold):
                y = (x > _t(node.threshold, x)).to(x.dtype)
            elif isinstance(node, (nir.LIF, nir.IF)):
                v = state.get(name, torch.zeros_like(x))
                if isinstance(node, nir.LIF):
                    v = v + dt / _t(node.tau, x) * (_t(node.v_leak, x) - v + _t(node.r, x) * x)
                else:
                    v = v + dt * _t(node.r, x) * x
                z = v > _t(node.v_threshold, x)
                state[name] = torch.where(z, _t(node.v_reset, x).expand_as(v), v)
                y = z.to(x.dtype)
            elif isinstance(node, nir.Output):
                y = x
            else:
                raise ExportError(f"NIR graph: node {name!r}: {type(node).__name__} is not simulated here")
            val[name] = y
            if record and isinstance(node, (nir.LIF, nir.IF, nir.Threshold)):
                spikes.setdefault(name, []).append(y)
        out_steps.append(val[outputs[0]])
    return torch.stack(out_steps), {k: torch.stack(v) for k, v in spikes.items()}
