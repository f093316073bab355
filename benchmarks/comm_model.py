#!/usr/bin/env python
"""Communication per training step for W = 8..512 GPUs (8x H100 nodes), computed from the real models.

Nothing is measured here: parameters are counted on the real student + objective heads (``build_student``,
``build_objective`` with each recipe's ``method`` section), FLOPs per image with ``torch.utils.flop_counter``
on meta tensors, and every collective the step issues is listed from the code (trainer.py, objective.py,
nce_critic.py, temporal_supcon.py, global_cka.py, distributed.py). Times follow the alpha-beta model::

    all-reduce of S bytes        2 (W-1)/W * S / busbw + 2 min(W-1, log2 W) alpha   (ring or NCCL's tree)
    all-gather, n bytes per rank (W-1) * n / busbw     +   (W-1) alpha      (reduce-scatter: the same)

All of it is exposed: the gathers sit inside the forward/backward, and DeepSpeed ZeRO-0 all-reduces the
gradients after backward. Each SSCL layer's CKA takes the form ``global_cka.choose_estimator`` picks at that W
(Gram: gather the features, [N, N] float64 work on every GPU; moments: all-reduce feature-space sums). The
per-layer design that the objective replaced is modelled next to it for comparison. The assumptions are the constants below; docs/PERFORMANCE.md explains them.
Usage: ``.venv/bin/python benchmarks/comm_model.py [--util 0.4] [--markdown FILE]``.
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from distsnn.losses.global_cka import choose_estimator  # noqa: E402

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
    """The faster of NCCL's ring and double binary tree (NCCL picks per message size when NCCL_ALGO is unset):
    the tree has log-depth latency and about the ring's bandwidth term."""
    bandwidth = 2 * (w - 1) / w * nbytes / busbw(w)
    return bandwidth + 2 * min(w - 1, math.log2(w)) * alpha(w)


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
         "embed_row": 0, "label_row": 0, "sscl_pq": [], "tcl_layers": 0}
    if method.name in ("sscl", "sscl+stcl"):
        cells = method.sscl.pool_grid ** 2
        d["embed_row"] += len(method.sscl.layers) * B * method.sscl.embed_dim * EMBED_BYTES
        d["sscl_pq"] = [(student.feature_channels[l] * (1 if l == "pooled" else cells),
                         teacher_ch[l] * (1 if l == "pooled" else cells)) for l in method.sscl.layers]
        d["cka_estimator"] = method.sscl.cka_estimator
    if method.name in ("tcl", "stcl", "sscl+stcl"):
        S = T * views
        d["tcl_layers"] = len(method.tcl.layers)
        d["embed_row"] += len(method.tcl.layers) * B * S * method.tcl.proj_dim * EMBED_BYTES
        d["label_row"] = B * 8 if method.tcl.supervised else 0
    return d


def moment_values(p: int, q: int) -> int:
    """Length of ``similarity.cka_moments`` for widths p, q (float64 values)."""
    return p * q + p * p + q * q + 3 * (p + q) + 6


def cka_forms(d: dict, w: int) -> list[tuple[str, int, int]]:
    """(form, p, q) per SSCL layer as ``global_cka.choose_estimator`` picks them for the global batch W*B."""
    return [(choose_estimator(d["cka_estimator"], p, q, w * BATCH), p, q) for p, q in d["sscl_pq"]]


def collectives(d: dict, fused: bool) -> tuple[int, int]:
    """(gathers incl. reduce-scatters, small all-reduces) per step after the first, the gradient all-reduce
    excluded (timed on its own). ``fused``: as coded now (objective.py: one collective per kind for all layers,
    shape checks as all-reduces); otherwise the per-layer design it replaced (a shape check before every
    gather, one of each per layer)."""
    # trainer: _flags, and in the per-layer design also _grads_finite (now free at an accumulation boundary)
    gathers, allreduces = 0, 1 if fused else 2
    n_sscl = len(d["sscl_pq"])
    if n_sscl:
        if fused:   # one gather (z_a + Gram-form CKA rows) and its reduce-scatter; shape check, values + CKA moments
            gathers += 2
            allreduces += 2
        else:       # per layer: 3 shape checks, z_a gather + reduce-scatter, s and a feature gathers; value
            gathers += 7 * n_sscl
            allreduces += n_sscl
    if d["tcl_layers"]:
        if fused:   # one gather (keys + labels), its reduce-scatter; shape check, value
            gathers += 2
            allreduces += 2
        else:       # per layer: shape check, keys gather + reduce-scatter, label check + gather; value
            gathers += 5 * d["tcl_layers"]
            allreduces += d["tcl_layers"]
    return gathers, allreduces


def gram_time(p: int, q: int, n: int) -> float:
    """linear_cka on gathered [n, p], [n, q] features, replicated on every GPU: float64 Grams + elementwise
    passes over [n, n], the larger of the fp64 FLOP time and the HBM time."""
    return max(2 * n * n * (p + q) / (PEAK_FP64_TFLOPS * 1e12), CKA_PASSES * 8 * n * n / (HBM_TBPS * 1e12))


def step_model(d: dict, w: int, util: float, fused: bool = True) -> dict:
    """Seconds per step of each part at W = w. ``fused=False``: the per-layer design with Gram-form CKA."""
    grad = t_allreduce(GRAD_BYTES * d["params"], w)
    # forward all-gather + backward reduce-scatter of the embeddings (equal cost)
    embed = 2 * ((w - 1) * d["embed_row"] / busbw(w))
    forms = cka_forms(d, w) if fused else [("gram", p, q) for p, q in d["sscl_pq"]]
    n = w * BATCH
    cka_traffic = (w - 1) * (d["label_row"] + sum(BATCH * (p + q) * FEATURE_BYTES
                                                   for f, p, q in forms if f == "gram")) / busbw(w)
    moments = sum(8 * moment_values(p, q) for f, p, q in forms if f == "moments")
    cka_traffic += 2 * (w - 1) / w * moments / busbw(w)
    cka_compute = sum(gram_time(p, q, n) if f == "gram" else
                      2 * BATCH * (p * q + p * p + q * q) / (PEAK_FP64_TFLOPS * 1e12) for f, p, q in forms)
    gathers, allreduces = collectives(d, fused)
    latency = gathers * (w - 1) * alpha(w) + allreduces * t_allreduce(0, w)
    compute = BATCH * d["flops"] / (util * PEAK_BF16_TFLOPS * 1e12)
    overhead = grad + embed + cka_traffic + latency + cka_compute
    return {"grad": grad, "embed": embed, "cka_traffic": cka_traffic, "latency": latency,
            "cka_compute": cka_compute, "compute": compute, "overhead": overhead, "collectives": gathers + allreduces,
            "efficiency": compute / (compute + overhead), "moment_layers": sum(f == "moments" for f, _, _ in forms)}


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
               f"{FEATURE_BYTES} B per value, CKA moments 8 B.\n")
    rows = []
    for d in descs:
        peak_ips = PEAK_BF16_TFLOPS * 1e12 / d["flops"]
        rows.append([d["recipe"], d["student"], f"{d['params'] / 1e6:.2f}", f"{GRAD_BYTES * d['params'] / 2**20:.1f}",
                     f"{d['flops'] / 1e9:.1f}", f"{peak_ips:,.0f}", f"{args.util * peak_ips:,.0f}",
                     f"{d['embed_row'] / 2**10:.0f}", str(sum(collectives(d, False)) + 1),
                     str(step_model(d, 8, args.util)["collectives"] + 1)])
    out.append("Per recipe (per GPU, per step; gathered rows grow x W at the receiver; collectives include the "
               "gradient all-reduce):\n")
    out.append(markdown_table(["recipe", "student", "trainable params (M)", "gradient all-reduce (MiB)",
                               "GFLOP/img (fwd+bwd, + teacher fwd)", "img/s at bf16 peak",
                               f"img/s at {args.util:.0%}", "gathered w/ grad per rank (KiB)",
                               "collectives/step, per-layer design", "collectives/step, as coded"], rows))
    for d in descs:
        if d["recipe"] not in ("imagenet_sscl_r34", "imagenet_stcl_sew34"):
            continue
        rows = []
        for w in WORLDS:
            s = step_model(d, w, args.util)
            before = step_model(d, w, args.util, fused=False)
            parts = {"gradient all-reduce": s["grad"], "embedding gather": s["embed"],
                     "CKA/label traffic": s["cka_traffic"], "collective latency": s["latency"]}
            if d["sscl_pq"]:
                parts["CKA compute"] = s["cka_compute"]
            top = max(parts, key=parts.get)
            rows.append([str(w), fmt_ms(s["compute"]), fmt_ms(s["grad"]), fmt_ms(s["embed"]),
                         fmt_ms(s["cka_traffic"]), fmt_ms(s["latency"]), fmt_ms(s["cka_compute"]),
                         f"{s['moment_layers']}/{len(d['sscl_pq'])}" if d["sscl_pq"] else "-",
                         f"{s['overhead'] / s['compute']:.2f}", top, f"{s['efficiency']:.0%}",
                         f"{before['efficiency']:.0%}"])
        out.append(f"\n{d['recipe']} ({d['student']}), ms per step, as coded:\n")
        out.append(markdown_table(["W", "compute", "grad all-reduce", "embed gather fwd+bwd", "CKA/label traffic",
                                   "collective latency", "CKA compute (replicated)", "CKA layers in moment form",
                                   "overhead / compute", "largest overhead", "scaling efficiency",
                                   "efficiency, per-layer design"], rows))
    for fused, title in ((False, "the per-layer design (a shape check before every gather, one collective of each "
                                 "kind per layer, Gram-form CKA)"),
                         (True, "as coded (one collective per kind for all layers, CKA form chosen per layer)")):
        rows = [[d["recipe"], *(f"{step_model(d, w, args.util, fused)['efficiency']:.0%}" for w in WORLDS)]
                for d in descs]
        out.append(f"\nScaling efficiency (compute / (compute + exposed overhead)), all-reduces ring or tree, gathers ring, {title}:\n")
        out.append(markdown_table(["recipe", *(f"W={w}" for w in WORLDS)], rows))
    text = "\n".join(out)
    print(text)
    if args.markdown:
        Path(args.markdown).write_text(text + "\n")


if __name__ == "__main__":
    main()
