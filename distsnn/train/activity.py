"""Firing rates of every neuron layer and the synaptic-operation (energy) estimate, recorded by hooks in eval.

Firing rate of a layer = mean spikes per neuron per time step. Synaptic operations of a conv/linear layer fed
by spikes = (mean input per neuron per step) x (its MACs per step) x T; layers fed by analog values (the
encoding stem conv, the classifier on averaged spikes) count as MACs. Energy uses the 45 nm figures SNN papers
use (Horowitz 2014): 4.6 pJ per MAC, 0.9 pJ per accumulate (SOP).
"""
from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn

from distsnn.models.resnet import TimeAct

E_MAC_PJ, E_AC_PJ = 4.6, 0.9


def _group(name: str) -> str:
    """``stages.1.0.act2`` -> ``stage2``; everything before the stages -> ``stem``."""
    parts = name.split(".")
    return f"stage{int(parts[1]) + 1}" if parts[0] == "stages" else "stem"


class ActivityRecorder:
    """Context manager: ``with ActivityRecorder(model) as rec: ...forward passes...; rec.summary()``."""

    def __init__(self, model: nn.Module, timesteps: int):
        self.model, self.T = model, timesteps
        self.acts = [(n, m) for n, m in model.named_modules() if isinstance(m, TimeAct)]
        self.synapses = [(n, m) for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
        # accumulated on the model's device: no host sync per hook; one transfer in summary()
        dev = next(model.parameters()).device
        self.spikes = torch.zeros(len(self.acts), dtype=torch.float64, device=dev)
        self.neurons = torch.zeros(len(self.acts), dtype=torch.float64, device=dev)
        self.ops = torch.zeros(len(self.synapses), 2, dtype=torch.float64, device=dev)  # [MACs, SOPs] over samples
        self.samples = torch.zeros(1, dtype=torch.float64, device=dev)
        self.handles = []

    def __enter__(self):
        for i, (_, m) in enumerate(self.acts):
            self.handles.append(m.register_forward_hook(self._on_spikes(i)))
        first = self.synapses[0][1] if self.synapses else None
        for i, (_, m) in enumerate(self.synapses):
            analog = m is first or isinstance(m, nn.Linear)
            self.handles.append(m.register_forward_hook(self._on_synapse(i, analog)))
        return self

    def __exit__(self, *exc):
        for h in self.handles:
            h.remove()

    def _on_spikes(self, i):
        def hook(_m, _inp, out):
            self.spikes[i] += out.detach().sum(dtype=torch.float64)
            self.neurons[i] += out.numel()
        return hook

    def _on_synapse(self, i, analog: bool):
        def hook(m, inp, out):
            x = inp[0].detach()
            fan_in = m.in_features if isinstance(m, nn.Linear) else m.in_channels // m.groups * m.kernel_size[0] * m.kernel_size[1]
            macs = out.numel() * fan_in  # over every (step, sample) this call ran
            if analog:
                self.ops[i, 0] += macs
            else:
                self.ops[i, 1] += macs * x.mean(dtype=torch.float64)
        return hook

    def count_samples(self, n: int) -> None:
        self.samples += n

    def summary(self) -> dict:
        """All-reduced over ranks: firing rates per neuron layer and per stage, MACs/SOPs/energy per image."""
        flat = torch.cat([self.spikes, self.neurons, self.ops.flatten(), self.samples])
        if dist.is_initialized():
            dist.all_reduce(flat)
        k, s = len(self.acts), len(self.synapses)
        flat = flat.cpu()
        spikes, neurons, ops, samples = flat[:k], flat[k:2 * k], flat[2 * k:2 * k + 2 * s].view(s, 2), flat[-1].item()
        # TimeAct outputs cover T steps, so spikes / neurons is already "per neuron per step"
        rates = {n: (spikes[i] / neurons[i]).item() for i, (n, _) in enumerate(self.acts) if neurons[i] > 0}
        by_stage: dict[str, list[float]] = {}
        for i, (n, _) in enumerate(self.acts):
            g = _group(n)
            by_stage.setdefault(g, [0.0, 0.0])
            by_stage[g][0] += spikes[i].item()
            by_stage[g][1] += neurons[i].item()
        per_image = ops / max(samples, 1.0)
        macs, sops = per_image[:, 0].sum().item(), per_image[:, 1].sum().item()
        return {
            "firing_rates": {g: v[0] / v[1] for g, v in by_stage.items() if v[1] > 0},
            "firing_rates_per_layer": rates,
            "energy": {"macs_per_image": macs, "sops_per_image": sops,
                       "energy_mj_per_image": (macs * E_MAC_PJ + sops * E_AC_PJ) * 1e-9,
                       "sops_per_layer": {n: per_image[i, 1].item() for i, (n, _) in enumerate(self.synapses)}},
        }
