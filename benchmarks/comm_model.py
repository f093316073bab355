#!/usr/bin/env python
"""Communication per training step for W = 8..512 GPUs (8x H100 nodes), computed from the real models.

Nothing is measured here: parameters are counted on the real student + objective heads (``build_student``,
``build_objective`` with each recipe's ``method`` section), FLOPs per image with ``torch.utils.flop_counter``
on meta tensors, and every collective the step issues is listed from the code (trainer.py, objective.py,
nce_critic.py, temporal_supcon.py, distributed.py). Times follow the ring alpha-beta model::

    all-reduce of S bytes        2 (W-1)/W * S / busbw + 2 (W-1) alpha
    all-gather, n bytes per rank (W-1) * n / busbw     +   (W-1) alpha      (reduce-scatter: the same)

All of it is exposed: the gathers sit inside the forward/backward, and DeepSpeed ZeRO-0 all-reduces the
gradients after backward. The assumptions are the constants below; docs/PERFORMANCE.md explains them.
Usage: ``.venv/bin/python benchmarks/comm_model.py [--util 0.4] [--markdown FILE]``.
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# ---- assumptions (docs/PERFORMANCE.md) ---------------------------------------------------------------------------
GPUS_PER_NODE = 8
NVLINK_GBPS = 450.0          # H100 SXM NVLink 4, per GPU per direction
NIC_GBPS = 50.0              # one 400 Gb/s InfiniBand NIC per GPU
LINK_EFFICIENCY = 0.8        # achieved / nominal bus bandwidth (NCCL at large messages)
ALPHA_INTRA_US = 2.0         # per ring step, NVLink only (W <= 8)
ALPHA_INTER_US = 5.0         # per ring step once the ring crosses InfiniBand (W > 8)
PEAK_BF16_TFLOPS = 989.0     # H100 SXM dense bf16
PEAK_FP64_TFLOPS = 67.0      # H100 SXM fp64 tensor core
HBM_TBPS = 3.35              # H100 SXM HBM3
GRAD_BYTES = 4               # fp32 weights under torch autocast: fp32 gradients are all-reduced
EMBED_BYTES = 4              # nce_critic_loss / temporal_supcon_loss gather in float32
FEATURE_BYTES = 2            # CKA features: bf16 activations under autocast
CKA_PASSES = 59              # [N, N] float64 passes of linear_cka (2 Grams + 3 unbiased_hsic + 2 scale checks)
WORLDS = (8, 16, 32, 64, 128, 256, 512)
BATCH = 32                   # per GPU
LAYERS = ("stage1", "stage2", "stage3", "stage4", "pooled")

RECIPES = ("imagenet_ann_r18", "imagenet_ann_r34", "imagenet_sscl_r18", "imagenet_sscl_r34",
           "imagenet_tcl_sew18", "imagenet_tcl_sew34", "imagenet_stcl_sew18", "imagenet_stcl_sew34")


def busbw(world: int) -> float:
    """Bytes/s of ring bus bandwidth: NVLink inside one node; across nodes NCCL runs one ring per NIC (rail-
    aligned), so a node's 8 NICs carry 8 rings in parallel: min(NVLink, 8 x NIC) = 400 GB/s nominal."""
    link = NVLINK_GBPS if world <= GPUS_PER_NODE else min(NVLINK_GBPS, GPUS_PER_NODE * NIC_GBPS)
    return LINK_EFFICIENCY * link * 1e9


def alpha(world: int) -> float:
    return 1e-6 * (ALPHA_INTRA_US if world <= GPUS_PER_NODE else ALPHA_INTER_US)


def t_allreduce(nbytes: float, w: int) -> float:
    return 2 * (w - 1) / w * nbytes / busbw(w) + 2 * (w - 1) * alpha(w)


def t_allreduce_tree(nbytes: float, w: int) -> float:
    """NCCL's double binary tree: log-depth latency, about the ring's bandwidth term at large messages."""
    return 2 * (w - 1) / w * nbytes / busbw(w) + 2 * math.log2(w) * alpha(w)


def t_allgather(per_rank_bytes: float, w: int) -> float:
    return (w - 1) * per_rank_bytes / busbw(w) + (w - 1) * alpha(w)


def flops_per_image(model, image: int, timesteps: int | None, backward: bool) -> float:
    """Matmul/conv FLOPs of one image, forward (+ backward), counted on meta tensors (no compute)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    b = 2
    x = torch.empty(b, 3, image, image, device="meta", requires_grad=False)
    with FlopCounterMode(display=False) as fc:
        out = model(x)
        if backward:
            out.float().sum().backward()
    return fc.get_total_flops() / b


def describe(recipe: str) -> dict:
    """Parameter count, FLOPs per image and per-rank gather sizes of one recipe at batch BATCH."""
    import timm
    import torch

    import distsnn.models  # noqa: F401  (registers the timm names)
    from distsnn.config import load
    from distsnn.losses import build_objective
    from distsnn.models import ann_counterpart

    cfg = load(f"{recipe}.yaml", [f"data.batch_size={BATCH}"])
    m, method = cfg.model, cfg.method
    ann = method.name == "ann"
    name = ann_counterpart(m.name) if ann else m.name
    kw = {} if ann else {"timesteps": m.timesteps, "implementation": "reference"}
    student = timm.create_model(name, num_classes=m.num_classes, **kw)
    teacher_ch = None
    if method.name in ("sscl", "sscl+stcl"):
        teacher_ch = student.feature_channels  # same-architecture ANN teacher (teacher.name '')
    objective = build_objective(method, student.feature_channels, teacher_ch, num_data=1_281_167)
    params = sum(p.numel() for p in student.parameters()) + sum(p.numel() for p in objective.parameters())

    with torch.device("meta"):
        s_meta = timm.create_model(name, num_classes=m.num_classes, **kw)
    views = 2 if method.name in ("stcl", "sscl+stcl") else 1
    flops = views * flops_per_image(s_meta, cfg.data.image_size, None, backward=True)
    if teacher_ch is not None:
        with torch.device("meta"):
            t_meta = timm.create_model(ann_counterpart(m.name), num_classes=m.num_classes)
        with torch.no_grad():
            flops += flops_per_image(t_meta, cfg.data.image_size, None, backward=False)

    T, B = m.timesteps if not ann else 1, BATCH
    d = {"recipe": recipe, "method": method.name, "student": name, "params": params, "flops": flops,
         "embed_row": 0, "cka_row": 0, "label_row": 0, "gathers": 0, "allreduces": 2}
    # Trainer: _flags (2 floats) and _grads_finite (1 float) all-reduce every step; grads: 1 bucket.
    if method.name in ("sscl", "sscl+stcl"):
        layers = method.sscl.layers
        g2 = method.sscl.pool_grid ** 2
        d["embed_row"] += len(layers) * B * method.sscl.embed_dim * EMBED_BYTES
        d["cka_row"] = sum(B * 2 * student.feature_channels[l] * (1 if l == "pooled" else g2) * FEATURE_BYTES
                           for l in layers)
        # per layer: 3 shape checks + z_a gather + z_a reduce-scatter + s, a gathers; global_value all-reduce
        d["gathers"] += 7 * len(layers)
        d["allreduces"] += len(layers)
    if method.name in ("tcl", "stcl", "sscl+stcl"):
        layers = method.tcl.layers
        S = T * views
        d["embed_row"] += len(layers) * B * S * method.tcl.proj_dim * EMBED_BYTES
        d["label_row"] = len(layers) * B * 8
        # per layer: shape check + keys gather + keys reduce-scatter + label shape check + labels gather
        d["gathers"] += 5 * len(layers)
        d["allreduces"] += len(layers)
    # feature-space CKA: all-reduce X'Y, X'X, Y'Y ([C, C] each) in float64 instead of gathering [W*B, C]
    d["cka_cov_bytes"] = sum(8 * 3 * student.feature_channels[l] ** 2 for l in method.sscl.layers) if teacher_ch else 0
    d["cka_channels"] = ([(student.feature_channels[l], teacher_ch[l]) for l in method.sscl.layers]
                         if teacher_ch is not None else [])
    return d


def cka_time(d: dict, w: int) -> float:
    """linear_cka on the gathered [W*B, C] features, replicated on every GPU: float64 Grams + elementwise
    passes over [N, N], the larger of the fp64 FLOP time and the HBM time."""
    n = w * BATCH
    t = 0.0
    for cs, ca in d["cka_channels"]:
        flops = 2 * n * n * (cs + ca)
        traffic = CKA_PASSES * 8 * n * n
        t += max(flops / (PEAK_FP64_TFLOPS * 1e12), traffic / (HBM_TBPS * 1e12))
    return t


def step_model(d: dict, w: int, util: float) -> dict:
    grad = t_allreduce(GRAD_BYTES * d["params"], w)
    # forward all-gather + backward reduce-scatter of the embeddings (equal cost)
    embed = 2 * ((w - 1) * d["embed_row"] / busbw(w))
    cka = (w - 1) * (d["cka_row"] + d["label_row"]) / busbw(w)
    latency = d["gathers"] * (w - 1) * alpha(w) + d["allreduces"] * 2 * (w - 1) * alpha(w)
    compute = BATCH * d["flops"] / (util * PEAK_BF16_TFLOPS * 1e12)
    # fused: one all-gather (all rows), one reduce-scatter, one scalar all-reduce, no shape checks
    n_fused_g = 2 if d["embed_row"] else (1 if d["cka_row"] or d["label_row"] else 0)
    fused_latency = n_fused_g * (w - 1) * alpha(w) + 1 * 2 * (w - 1) * alpha(w)
    # improved: fused gathers, tree all-reduces, feature-space CKA (no [N, N] Grams, no feature gather)
    improved = (min(grad, t_allreduce_tree(GRAD_BYTES * d["params"], w)) + embed
                + (w - 1) * d["label_row"] / busbw(w)
                + (t_allreduce_tree(d["cka_cov_bytes"], w) if d["cka_cov_bytes"] else 0.0)
                + n_fused_g * (w - 1) * alpha(w) + 2 * math.log2(w) * alpha(w))  # + one scalar all-reduce
    return {"improved": improved, "grad": grad, "embed": embed, "cka_gather": cka, "latency": latency,
            "fused_latency": fused_latency,
            "cka_compute": cka_time(d, w), "compute": compute}


def fmt_ms(s: float) -> str:
    return f"{1e3 * s:.2f}" if s < 0.1 else f"{1e3 * s:.0f}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--util", type=float, default=0.4, help="achieved fraction of the bf16 peak in the step")
    p.add_argument("--recipes", nargs="+", default=list(RECIPES))
    p.add_argument("--markdown", help="also write the output to this file")
    args = p.parse_args()
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from harness import markdown_table

    out = []
    descs = [describe(r) for r in args.recipes]
    out.append(f"Assumptions: {BATCH} images/GPU, {GPUS_PER_NODE} GPUs/node, busbw {busbw(8) / 1e9:.0f} GB/s in a node "
               f"and {busbw(16) / 1e9:.0f} GB/s across nodes ({LINK_EFFICIENCY:.0%} of nominal), alpha "
               f"{ALPHA_INTRA_US:g}/{ALPHA_INTER_US:g} us per ring step, bf16 peak {PEAK_BF16_TFLOPS:g} TFLOP/s at "
               f"{args.util:.0%} utilisation, gradients {GRAD_BYTES} B, embeddings {EMBED_BYTES} B, CKA features "
               f"{FEATURE_BYTES} B per value.\n")
    rows = []
    for d in descs:
        peak_ips = PEAK_BF16_TFLOPS * 1e12 / d["flops"]
        rows.append([d["recipe"], d["student"], f"{d['params'] / 1e6:.2f}", f"{GRAD_BYTES * d['params'] / 2**20:.1f}",
                     f"{d['flops'] / 1e9:.1f}", f"{peak_ips:,.0f}", f"{args.util * peak_ips:,.0f}",
                     f"{d['embed_row'] / 2**10:.0f}", f"{(d['cka_row'] + d['label_row']) / 2**10:.1f}",
                     str(d["gathers"] + d["allreduces"] + 1)])
    out.append("Per recipe (per GPU, per step; gathered rows grow x W at the receiver):\n")
    out.append(markdown_table(["recipe", "student", "trainable params (M)", "gradient all-reduce (MiB)",
                               "GFLOP/img (fwd+bwd, + teacher fwd)", "img/s at bf16 peak",
                               f"img/s at {args.util:.0%}", "gathered w/ grad per rank (KiB)",
                               "gathered no grad per rank (KiB)", "collectives/step"], rows))
    for d in descs:
        if d["recipe"] not in ("imagenet_sscl_r34", "imagenet_stcl_sew34"):
            continue
        rows = []
        for w in WORLDS:
            s = step_model(d, w, args.util)
            comm = s["grad"] + s["embed"] + s["cka_gather"] + s["latency"]
            parts = {"gradient all-reduce": s["grad"], "embedding gather": s["embed"],
                     "CKA/label gather": s["cka_gather"], "collective latency": s["latency"]}
            if d["cka_channels"]:
                parts["CKA compute"] = s["cka_compute"]
            top = max(parts, key=parts.get)
            total = comm + s["cka_compute"]
            rows.append([str(w), fmt_ms(s["compute"]), fmt_ms(s["grad"]), fmt_ms(s["embed"]), fmt_ms(s["cka_gather"]),
                         fmt_ms(s["latency"]), fmt_ms(s["fused_latency"]), fmt_ms(s["cka_compute"]),
                         f"{total / s['compute']:.2f}", top,
                         f"{s['compute'] / (s['compute'] + total):.0%}"])
        out.append(f"\n{d['recipe']} ({d['student']}), ms per step:\n")
        out.append(markdown_table(["W", "compute", "grad all-reduce", "embed gather fwd+bwd", "CKA/label gather",
                                   "latency (as coded)", "latency (fused)", "CKA compute (replicated)",
                                   "overhead / compute", "largest overhead", "scaling efficiency"], rows))
    rows = []
    for d in descs:
        cells = []
        for w in WORLDS:
            s = step_model(d, w, args.util)
            total = s["grad"] + s["embed"] + s["cka_gather"] + s["latency"] + s["cka_compute"]
            cells.append(f"{s['compute'] / (s['compute'] + total):.0%}")
        rows.append([d["recipe"], *cells])
    out.append("\nScaling efficiency (compute / (compute + exposed overhead)), all recipes, as coded (ring):\n")
    out.append(markdown_table(["recipe", *(f"W={w}" for w in WORLDS)], rows))
    rows = []
    for d in descs:
        cells = []
        for w in WORLDS:
            s = step_model(d, w, args.util)
            cells.append(f"{s['compute'] / (s['compute'] + s['improved']):.0%}")
        rows.append([d["recipe"], *cells])
    out.append("\nScaling efficiency with the fixes of docs/PERFORMANCE.md (fused gathers, tree all-reduce, "
               "feature-space CKA):\n")
    out.append(markdown_table(["recipe", *(f"W={w}" for w in WORLDS)], rows))
    text = "\n".join(out)
    print(text)
    if args.markdown:
        Path(args.markdown).write_text(text + "\n")


if __name__ == "__main__":
    main()
