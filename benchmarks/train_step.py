"""One training step (forward, backward, SGD step) of spiking ResNet-18/34 at T = 4 on CPU, in one run:
distsnn (fast LIF; also the reference LIF and SpikingJelly's input layout) vs SpikingJelly 2.0's
``spiking_resnet18/34`` with ``LIFNode`` vs the ANN ResNet at batch T*B.

Same network and neuron everywhere: torchvision ResNet layout, BN after every conv, neuron after BN and after the
residual addition, U_pre = 0.25 U + x, spike at >= 0.5, hard reset to 0, sigmoid surrogate (alpha 4). Loss:
cross-entropy of the time-averaged logits. SpikingJelly is fed ``x.unsqueeze(0).repeat(T, 1, 1, 1, 1)`` in
multi-step mode with ``functional.reset_net`` before each step; distsnn is timed both on the static image (its
normal path: the stem conv runs once and is repeated over T) and on the same repeated sequence as SpikingJelly,
and with per-stage activation checkpointing (``model.grad_checkpointing``: memory for recomputation). The last
distsnn row is the whole SSCL step of the ImageNet recipe (teacher forward + objective on top of the student).

Memory: bytes autograd saves for backward during the forward (unique storages, parameters excluded) -- a
deterministic count of the activation memory, unlike RSS on a shared machine with a caching malloc.

Run: ``.venv/bin/python benchmarks/train_step.py [--arch resnet18 resnet34] [--batch 8] [--image 64]
[--steps 5] [--warmup 2] [--markdown out.md]``
"""
from __future__ import annotations

import argparse
import sys

import timm
import torch
import torch.nn.functional as F

from harness import SavedBytes, emit_table_report, interleaved_median_ms

import distsnn.models  # noqa: F401  (registers the models with timm)

NEURON = dict(decay=0.25, threshold=0.5, surrogate="sigmoid", surrogate_width=4.0)


class Contender:
    """A model, its optimizer and how it is fed: ``step()`` runs forward + backward + SGD step. ``loss_fn(x, y)``
    replaces the default loss (cross-entropy of the time-averaged logits of ``model(x)``)."""

    def __init__(self, name: str, model: torch.nn.Module, feed, samples: int, before_forward=None, loss_fn=None):
        self.name, self.model, self.feed, self.samples = name, model, feed, samples
        self.before_forward, self.loss_fn = before_forward, loss_fn
        self.opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        self.params = sum(p.numel() for p in model.parameters())

    def loss(self) -> torch.Tensor:
        x, y = self.feed()
        if self.before_forward is not None:
            self.before_forward()
        if self.loss_fn is not None:
            return self.loss_fn(x, y)
        logits = self.model(x)
        if logits.dim() == 3:  # [T, B, K]: rate decoding
            logits = logits.mean(0)
        return F.cross_entropy(logits, y)

    def step(self) -> None:
        self.opt.zero_grad(set_to_none=True)
        self.loss().backward()
        self.opt.step()

    def saved_bytes(self) -> int:
        with SavedBytes(exclude=tuple(self.model.parameters())) as counter:
            loss = self.loss()
        loss.backward()  # frees the graph
        self.opt.zero_grad(set_to_none=True)
        return counter.nbytes


def contenders(arch: str, T: int, B: int, image: int, with_reference: bool) -> list[Contender]:
    g = torch.Generator().manual_seed(0)
    images = torch.randn(B, 3, image, image, generator=g)
    labels = torch.randint(0, 1000, (B,), generator=g)
    seq = images.unsqueeze(0).repeat(T, 1, 1, 1, 1)  # SpikingJelly's input: [T, B, 3, H, W]
    out = [
        Contender(f"distsnn spiking_{arch}, fast LIF", timm.create_model(
            f"spiking_{arch}", num_classes=1000, timesteps=T, **NEURON), lambda: (images, labels), B),
        Contender(f"distsnn spiking_{arch}, fast LIF, [T,B] input", timm.create_model(
            f"spiking_{arch}", num_classes=1000, timesteps=T, **NEURON), lambda: (seq, labels), B),
    ]
    ckpt = timm.create_model(f"spiking_{arch}", num_classes=1000, timesteps=T, **NEURON)
    ckpt.set_grad_checkpointing()
    out.append(Contender(f"distsnn spiking_{arch}, fast LIF, stage checkpointing", ckpt, lambda: (images, labels), B))
    if with_reference:
        out.append(Contender(f"distsnn spiking_{arch}, reference LIF", timm.create_model(
            f"spiking_{arch}", num_classes=1000, timesteps=T, implementation="reference", **NEURON),
            lambda: (images, labels), B))
    try:
        from spikingjelly.activation_based import functional, neuron, surrogate
        from spikingjelly.activation_based.model import spiking_resnet
    except ImportError:
        print("spikingjelly is not installed: its row is left out", file=sys.stderr)
    else:
        sj = getattr(spiking_resnet, f"spiking_{arch}")(
            spiking_neuron=neuron.LIFNode, tau=4.0 / 3.0, decay_input=False, v_threshold=0.5, v_reset=0.0,
            surrogate_function=surrogate.Sigmoid(alpha=4.0), detach_reset=False, num_classes=1000)
        functional.set_step_mode(sj, "m")
        out.append(Contender(f"SpikingJelly 2.0 spiking_{arch}", sj, lambda: (seq, labels), B,
                             before_forward=lambda: functional.reset_net(sj)))
    out.append(sscl_contender(arch, T, images, labels, B))
    ann_labels = labels.repeat(T)
    out.append(Contender(f"ANN {arch} (ReLU), batch T*B", timm.create_model(f"ann_{arch}", num_classes=1000),
                         lambda: (seq.flatten(0, 1), ann_labels), T * B))
    return out


def sscl_contender(arch: str, T: int, images, labels, B: int) -> Contender:
    """The whole SSCL step of ``imagenet_sscl_<arch>.yaml``'s method: the student with features, the frozen ANN
    teacher's forward, the five layer NCE terms with their embedders and the 1/CKA weights (one process: the gathers
    are the identity). The optimizer holds the student and the objective's embedders."""
    from distsnn.config import load
    from distsnn.losses import build_objective

    method = load(f"imagenet_sscl_{arch.replace('resnet', 'r')}.yaml").method
    student = timm.create_model(f"spiking_{arch}", num_classes=1000, timesteps=T, **NEURON)
    teacher = timm.create_model(f"ann_{arch}", num_classes=1000).eval().requires_grad_(False)
    objective = build_objective(method, student.feature_channels, teacher.feature_channels, num_data=1_281_167,
                                timesteps=T)
    both = torch.nn.ModuleDict({"student": student, "objective": objective})

    def loss_fn(x, y):
        with torch.no_grad():
            t_out = teacher(x, return_features=True)
        return objective([student(x, return_features=True)], y, t_out).total

    return Contender(f"distsnn SSCL step: spiking_{arch} + ANN teacher + 5 NCE layers", both,
                     lambda: (images, labels), B, loss_fn=loss_fn)


def run_arch(arch: str, args) -> list[list[str]]:
    models = contenders(arch, args.timesteps, args.batch, args.image, not args.no_reference)
    for m in models:
        m.model.train()
    saved = {m.name: m.saved_bytes() for m in models}  # also the first call: compiles the fast LIF
    ms = interleaved_median_ms({m.name: m.step for m in models}, args.steps, args.warmup)
    sj_name = f"SpikingJelly 2.0 spiking_{arch}"
    ann_name = next(m.name for m in models if m.name.startswith("ANN"))
    rows = []
    for m in models:
        ips = m.samples / (ms[m.name] / 1e3)
        line = (f"{m.name:44s} {ms[m.name]:9.1f} ms/step {ips:8.1f} samples/s "
                f"saved {saved[m.name] / 2**20:8.1f} MiB  params {m.params / 1e6:.2f} M")
        print(line, flush=True)
        sj_ips = args.batch / (ms[sj_name] / 1e3) if sj_name in ms else None
        rows.append([m.name, str(m.samples), f"{ms[m.name]:.0f}", f"{ips:.1f}",
                     f"{ips / sj_ips:.2f}x" if sj_ips else "n/a",
                     f"{saved[m.name] / 2**20:.0f}",
                     f"{saved[m.name] / saved[sj_name]:.2f}" if sj_name in saved else "n/a",
                     f"{m.params / 1e6:.2f}", f"{ms[m.name] - ms[ann_name]:+.0f}"])
    return rows


def main(argv=None) -> str:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--arch", nargs="+", default=["resnet18"], choices=["resnet18", "resnet34"])
    p.add_argument("--timesteps", type=int, default=4)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--image", type=int, default=64)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--no-reference", action="store_true", help="leave out the reference-LIF row (slow)")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--markdown", default=None)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    rows = []
    for arch in args.arch:
        rows += run_arch(arch, args)
    header = ["contender", "samples/step", "ms/step (median)", "samples/s", "throughput vs SJ",
              "saved for bwd (MiB)", "saved / SJ", "params (M)", "ms above the ANN (same convs)"]
    return emit_table_report([
        f"T={args.timesteps}, B={args.batch}, {args.image}x{args.image} images, 1000 classes, SGD momentum; "
        f"median of {args.steps} rounds (contenders interleaved) after {args.warmup} warm-up rounds. A sample is "
        f"one image (over T steps for the SNNs); the ANN row runs T*B images per step, i.e. the same conv work. "
        f"Memory = bytes saved for backward (unique storages, parameters excluded). The ANN does the same "
        f"convolutions with ReLU for LIF: 'ms above the ANN' is what the neurons (and time handling) cost.",
    ], header, rows, args.markdown)


if __name__ == "__main__":
    main()
