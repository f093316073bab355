#!/usr/bin/env python
"""GPU-hours of the CIFAR recipes on 1 and 8 H100s, from a step-time model (docs/CLUSTER.md section 8).

    python benchmarks/gpu_hours_cifar.py          # prints the markdown table

Per optimizer step at global batch G (the recipes' 128) on W GPUs, each with G/W images:
- compute = (G/W) x FLOP/image (student fwd+bwd over all views + teacher fwd; meta-tensor count, no compute)
  / (MFU x 989 TFLOP/s), MFU an assumption (``--mfu``);
- launch floor = kernels per step x ``--us-per-kernel``: the aten ops of the student's forward + backward (+ the
  teacher's forward) counted on meta tensors, with the LIF as one fused kernel each way (as the compiled LIF runs);
- overhead = a flat ``--overhead-ms`` per step for what is not counted: the objective's heads and losses, the
  optimizer, the per-step non-finite all-reduce (a host sync), the hand-over of DALI's batch;
- step = max(compute, launch floor) + overhead + the gradient all-reduce (ring over NVLink at 360 GB/s, W > 1).
GPU-hours = W x steps x step / 3600, steps = floor(50,000 / G) x epochs. Replace with the measured
``distsnn_images_per_second`` once a run has taken a few hundred steps.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PEAK = 989e12          # H100 SXM dense bf16 FLOP/s
NVLINK_BUSBW = 360e9   # bytes/s, 80 % of NVLink 4's 450 GB/s
TRAIN_IMAGES = 50_000
ROWS = [  # (recipes, label) in the papers' table order
    (["cifar100_baseline_r20_t2", "cifar100_nce_r20_t2", "cifar100_sscl_r20_t2"], "SSCL Table 3, T=2"),
    (["cifar100_baseline_r20_t4", "cifar100_nce_r20_t4", "cifar100_sscl_r20_t4"], "SSCL Table 3, T=4"),
    (["cifar100_ann_r20", "cifar10_ann_r19", "cifar100_ann_r19"], "SSCL teachers"),
    (["cifar10_sscl_r19_t1", "cifar10_sscl_r19_t2", "cifar100_sscl_r19_t1", "cifar100_sscl_r19_t2"], "SSCL Table 1"),
    (["cifar10_baseline_sew18", "cifar10_tcl_sew18", "cifar10_stcl_sew18", "cifar100_baseline_sew18",
      "cifar100_tcl_sew18", "cifar100_stcl_sew18"], "TCL/STCL Table 1, SEW-18"),
    (["cifar10_baseline_sew34", "cifar10_tcl_sew34", "cifar10_stcl_sew34", "cifar100_baseline_sew34",
      "cifar100_tcl_sew34", "cifar100_stcl_sew34"], "TCL/STCL Table 1, SEW-34"),
]


class _Spike(torch.autograd.Function):
    """Stands in for the fused LIF in the kernel count: one op forward, one op backward."""

    @staticmethod
    def forward(ctx, x):
        return torch.sign(x)

    @staticmethod
    def backward(ctx, g):
        return torch.neg(g)


class _FusedNeuron(nn.Module):
    def forward(self, x):
        return _Spike.apply(x)


class _CountOps(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.ops = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func not in (torch.ops.aten.detach.default, torch.ops.aten.view.default, torch.ops.aten._unsafe_view.default,
                        torch.ops.aten.t.default, torch.ops.aten.expand.default):  # no kernel
            self.ops += 1
        return func(*args, **(kwargs or {}))


def _cost(net, batch: int, backward: bool) -> tuple[float, int]:
    """(FLOPs per image, kernels) of one forward (+ backward) of ``net`` on a [batch, 3, 32, 32] meta batch."""
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.empty(batch, 3, 32, 32, device="meta")
    with FlopCounterMode(display=False) as fc, _CountOps() as ops:
        out = net(x)
        if backward:
            out.float().sum().backward()
        elif out.requires_grad:
            out = out.detach()
    return fc.get_total_flops() / batch, ops.ops


def describe(recipe: str) -> dict:
    import timm

    from distsnn.config import load
    from distsnn.models import ann_counterpart

    cfg = load(recipe)
    m, views = cfg.model, 2 if cfg.method.name in ("stcl", "sscl+stcl") else 1
    with torch.device("meta"):
        if cfg.method.name == "ann":
            student = timm.create_model(ann_counterpart(m.name), num_classes=m.num_classes)
        else:
            student = timm.create_model(m.name, num_classes=m.num_classes, timesteps=m.timesteps, neuron=_FusedNeuron)
        teacher = timm.create_model(ann_counterpart(m.name), num_classes=m.num_classes).eval() \
            if cfg.method.name in ("sscl", "sscl+stcl") else None
    flops, kernels = _cost(student, 2 * views, backward=True)
    flops *= views
    if teacher is not None:
        with torch.no_grad():
            tf, tk = _cost(teacher, 2, backward=False)
        flops, kernels = flops + tf, kernels + tk
    params = sum(p.numel() for p in student.parameters())
    return {"recipe": recipe, "epochs": cfg.run.epochs, "global_batch": cfg.data.batch_size, "flops": flops,
            "kernels": kernels, "params": params}


def step_seconds(d: dict, world: int, mfu: float, us_per_kernel: float, overhead_ms: float) -> float:
    per_gpu = d["global_batch"] / world
    compute = per_gpu * d["flops"] / (mfu * PEAK)
    floor = d["kernels"] * us_per_kernel * 1e-6
    comm = 2 * (world - 1) / world * 4 * d["params"] / NVLINK_BUSBW if world > 1 else 0.0
    return max(compute, floor) + overhead_ms * 1e-3 + comm


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mfu", type=float, default=0.20, help="assumed model-FLOP utilisation at 128 images/GPU")
    ap.add_argument("--us-per-kernel", type=float, default=8.0, help="assumed GPU time per small kernel (launch-bound)")
    ap.add_argument("--overhead-ms", type=float, default=2.0, help="flat per-step allowance for what is not counted")
    a = ap.parse_args()
    args = (a.mfu, a.us_per_kernel, a.overhead_ms)
    print(f"Model: MFU {a.mfu:.0%} of 989 TFLOP/s, {a.us_per_kernel:g} us per kernel, {a.overhead_ms:g} ms per step "
          f"not counted, gradient all-reduce at {NVLINK_BUSBW / 1e9:.0f} GB/s; global batch 128, kept on 8 GPUs "
          f"(16 per GPU).\n")
    print("| recipe | epochs | GFLOP / image (train) | kernels / step | step 1 GPU (ms) | **GPU-h, 1 H100** | "
          "step 8 GPUs (ms) | GPU-h, 8 H100 (wall-clock) |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    total1 = total8 = 0.0
    for recipes, label in ROWS:
        print(f"| *{label}* | | | | | | | |")
        for r in recipes:
            d = describe(r)
            steps = TRAIN_IMAGES // d["global_batch"] * d["epochs"]
            s1, s8 = step_seconds(d, 1, *args), step_seconds(d, 8, *args)
            h1, h8 = steps * s1 / 3600, 8 * steps * s8 / 3600
            total1, total8 = total1 + h1, total8 + h8
            print(f"| `{r}` | {d['epochs']} | {d['flops'] / 1e9:.2f} | {d['kernels']:,} | {1e3 * s1:.1f} | **{h1:.1f}** "
                  f"| {1e3 * s8:.1f} | {h8:.1f} ({h8 / 8:.1f} h) |")
    print(f"| **all {sum(len(r) for r, _ in ROWS)} recipes, one seed** | | | | | **{total1:.1f}** | | "
          f"{total8:.1f} ({total8 / 8:.1f} h) |")


if __name__ == "__main__":
    main()
