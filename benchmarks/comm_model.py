#!/usr/bin/env python
"""Communication per training step for W = 8..512 GPUs (8x H100 nodes), computed from the real models.

Nothing is measured here: parameters are counted on the real student + objective heads (``build_student``,
``build_objective`` with each recipe's ``method`` section), FLOPs per image with ``torch.utils.flop_counter``
on meta tensors, and every collective the step issues is listed from the code (trainer.py, objective.py,
nce_critic.py, temporal_supcon.py, global_cka.py, distributed.py). Times follow the alpha-beta model::

    all-reduce of S bytes        2 (W-1)/W * S / busbw + 2 min(W-1, log2 W) alpha   (ring or NCCL's tree)
    all-gather, n bytes per rank (W-1) * n / busbw     +   (W-1) alpha      (reduce-scatter: the same)

All of it is exposed: the gathers sit inside the forward/backward, and DeepSpeed ZeRO-0 all-reduces the
gradients after backward. SSCL's CKA is taken on the WHOLE stage maps with time kept (``pooling.representation_rows``:
student rows [B, T*C*H*W], teacher [B, C*H*W]); their widths come from a meta-device forward with
``return_features=True`` at the recipe's image size. Each layer's CKA takes the form ``global_cka.choose_estimator``
picks at that W for the recipe's ``method.sscl.cka_estimator`` ("auto": Gram for whole maps; moments only where
2N > p+q and (p+q)^2 <= 2^26, i.e. the pooled layer from W=64), and the same recipe is modelled again with "local":

    gram     gather every rank's rows (FEATURE_BYTES per value) and compute float64 Grams of the global batch
             N = W*B on every GPU: 2 N^2 (p+q) FLOPs, N*(p+q) values held per rank
    moments  all-reduce the feature-space sums (~(p+q)^2 float64 values), O(B (p+q)^2) work
    local    each rank's own [B, B] Grams (2 B^2 (p+q) FLOPs), 5 float64 numbers per layer added to the
             all-reduce the step issues anyway; nothing gathered; Nguyen et al.'s mini-batch estimator, not the
             global batch's value

The per-layer design that the objective replaced is modelled next to it for comparison. The assumptions are the
constants below; docs/PERFORMANCE.md explains them.
Regenerate PERFORMANCE.md's results section: ``.venv/bin/python benchmarks/comm_model.py [--util 0.4] --markdown
/tmp/model.md`` and paste /tmp/model.md between "## Results" and "## Reading it" (the text around it cites its numbers).
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
HBM_GIB = 80 * 1e9 / 2**30   # H100 SXM memory (80 GB); "(OOM)" where the CKA alone needs more
GRAD_BYTES = 4               # fp32 weights under torch autocast: fp32 gradients are all-reduced
EMBED_BYTES = 4              # nce_critic_loss / temporal_supcon_loss gather in float32
FEATURE_BYTES = 4            # CKA rows: float32 (Objective.forward upcasts bf16 features; they join z_a's fp32 gather)
CKA_PASSES = 59              # [N, N] float64 passes of linear_cka (2 Grams + 3 unbiased_hsic + 2 scale checks)
ROW_PASS_BYTES = FEATURE_BYTES + 8 + 8  # per row value in hsic_terms: read, written as float64, read by the Gram
NN_TEMPS = 6                 # [N, N] float64 tensors alive at once in unbiased_hsic (K, L, the mask, K~, L~, K~*L~')
LOCAL_TERMS = 5              # float64 HSIC terms per layer that the "local" estimator all-reduces
WORLDS = (8, 16, 32, 64, 128, 256, 512)
BATCH = 32                   # per GPU

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


def feature_widths(student, teacher, image: int, layers, grid: int, keep_time: bool) -> list[dict]:
    """Per SSCL layer, from a meta-device forward with ``return_features=True`` (no memory, no compute): the
    student's and teacher's feature shapes, the CKA row widths p, q (``pooling.representation_rows``: the whole
    map, time kept) and the embedders' input widths (``pooling.grid_flatten``: pooled to ``grid x grid``)."""
    import torch

    from distsnn.losses.pooling import grid_flatten, representation_rows

    x = torch.empty(2, 3, image, image, device="meta")
    with torch.no_grad():
        fs = student(x, return_features=True).features
        ft = teacher(x, return_features=True).features
    out = []
    for layer in layers:
        s, a = fs[layer], ft[layer]
        out.append({"layer": layer, "s_shape": tuple(s.shape[:1]) + ("B",) + tuple(s.shape[2:]),
                    "a_shape": ("B",) + tuple(a.shape[1:]),
                    "p": representation_rows(s, time_major=True).shape[1],
                    "q": representation_rows(a, time_major=False).shape[1],
                    "g_s": grid_flatten(s, grid, time_major=True, keep_time=keep_time).shape[1],
                    "g_a": grid_flatten(a, grid, time_major=False).shape[1]})
    return out


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
    objective = build_objective(method, student.feature_channels, teacher_ch, num_data=1_281_167,
                                timesteps=m.timesteps if not ann else 1)
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
        widths = feature_widths(s_meta, t_meta, cfg.data.image_size, method.sscl.layers, method.sscl.pool_grid,
                                method.sscl.embed_time == "keep")

    T, B = m.timesteps if not ann else 1, BATCH
    d = {"recipe": recipe, "method": method.name, "student": name, "params": params, "flops": flops,
         "embed_row": 0, "label_row": 0, "sscl_pq": [], "tcl_layers": 0}
    if method.name in ("sscl", "sscl+stcl"):
        # z_a [B, embed_dim] per layer (embedders see the grid-pooled maps; their output width is unchanged)
        d["embed_row"] += len(method.sscl.layers) * B * method.sscl.embed_dim * EMBED_BYTES
        d["sscl_pq"] = [(f["p"], f["q"]) for f in widths]    # CKA on the whole maps
        d["sscl_widths"] = widths
        d["cka_estimator"] = method.sscl.cka_estimator
        d["pool_grid"], d["embed_time"] = method.sscl.pool_grid, method.sscl.embed_time
    if method.name in ("tcl", "stcl", "sscl+stcl"):
        S = T * views
        d["tcl_layers"] = len(method.tcl.layers)
        d["embed_row"] += len(method.tcl.layers) * B * S * method.tcl.proj_dim * EMBED_BYTES
        d["label_row"] = B * 8 if method.tcl.supervised else 0
    return d


def moment_values(p: int, q: int) -> int:
    """Length of ``similarity.cka_moments`` for widths p, q (float64 values)."""
    return p * q + p * p + q * q + 3 * (p + q) + 6


def cka_forms(d: dict, w: int, estimator: str | None = None) -> list[tuple[str, int, int]]:
    """(form, p, q) per SSCL layer as ``global_cka.choose_estimator`` picks them for the global batch W*B, with
    the recipe's ``cka_estimator`` or ``estimator``."""
    est = estimator or d.get("cka_estimator", "auto")
    return [(choose_estimator(est, p, q, w * BATCH), p, q) for p, q in d["sscl_pq"]]


def forms_label(forms: list[tuple[str, int, int]]) -> str:
    """"4 gram + 1 moments" style summary of the forms of a step's SSCL layers."""
    counts = {f: sum(g == f for g, _, _ in forms) for f in ("gram", "moments", "local")}
    return " + ".join(f"{c} {f}" for f, c in counts.items() if c) or "-"


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
    """``similarity.hsic_terms`` on [n, p], [n, q] rows: float64 Grams (2 n^2 (p+q) FLOPs) + elementwise passes
    over [n, n], the larger of the fp64 FLOP time and the HBM time (the rows cast to float64 and read once,
    the [n, n] passes). Gram form: n = W*B, replicated on every GPU; local form: n = B, each rank its own."""
    hbm = ROW_PASS_BYTES * n * (p + q) + CKA_PASSES * 8 * n * n
    return max(2 * n * n * (p + q) / (PEAK_FP64_TFLOPS * 1e12), hbm / (HBM_TBPS * 1e12))


def cka_memory(forms: list[tuple[str, int, int]], w: int) -> float:
    """Bytes the CKA holds per rank at its peak: Gram form: the gathered rows of every Gram layer [W*B, sum p+q]
    (FEATURE_BYTES; one buffer, ``all_gather_columns``), plus the float64 copy of the widest layer's rows and the
    [N, N] temporaries while its terms are computed; local form: a float64 copy of one layer's [B, p+q] rows."""
    n = w * BATCH
    gram = [(p, q) for f, p, q in forms if f == "gram"]
    local = [(p, q) for f, p, q in forms if f == "local"]
    mem = 0.0
    if gram:
        mem += FEATURE_BYTES * n * sum(p + q for p, q in gram) + 8 * n * max(p + q for p, q in gram)
        mem += NN_TEMPS * 8 * n * n
    if local:
        mem = max(mem, 8 * BATCH * max(p + q for p, q in local) + NN_TEMPS * 8 * BATCH * BATCH)
    return mem


def step_model(d: dict, w: int, util: float, fused: bool = True, estimator: str | None = None) -> dict:
    """Seconds per step of each part at W = w. ``fused=False``: the per-layer design with Gram-form CKA.
    ``estimator``: the CKA estimator instead of the recipe's (``method.sscl.cka_estimator``)."""
    grad = t_allreduce(GRAD_BYTES * d["params"], w)
    # forward all-gather + backward reduce-scatter of the embeddings (equal cost)
    embed = 2 * ((w - 1) * d["embed_row"] / busbw(w))
    forms = cka_forms(d, w, estimator) if fused else [("gram", p, q) for p, q in d["sscl_pq"]]
    n = w * BATCH
    cka_sent = BATCH * FEATURE_BYTES * sum(p + q for f, p, q in forms if f == "gram")   # per rank; x W received
    cka_traffic = (w - 1) * (d["label_row"] + cka_sent) / busbw(w)
    # moment sums and local HSIC terms ride in the value all-reduce (float64): only their bandwidth term is extra
    summed = sum(8 * moment_values(p, q) for f, p, q in forms if f == "moments")
    summed += sum(8 * LOCAL_TERMS for f, _, _ in forms if f == "local")
    cka_traffic += 2 * (w - 1) / w * summed / busbw(w)
    cka_compute = sum(gram_time(p, q, n) if f == "gram" else gram_time(p, q, BATCH) if f == "local" else
                      2 * BATCH * (p * q + p * p + q * q) / (PEAK_FP64_TFLOPS * 1e12) for f, p, q in forms)
    gathers, allreduces = collectives(d, fused)
    latency = gathers * (w - 1) * alpha(w) + allreduces * t_allreduce(0, w)
    compute = BATCH * d["flops"] / (util * PEAK_BF16_TFLOPS * 1e12)
    overhead = grad + embed + cka_traffic + latency + cka_compute
    mem = cka_memory(forms, w)
    return {"grad": grad, "embed": embed, "cka_traffic": cka_traffic, "latency": latency,
            "cka_compute": cka_compute, "compute": compute, "overhead": overhead, "collectives": gathers + allreduces,
            "efficiency": compute / (compute + overhead), "forms": forms_label(forms),
            "cka_sent": cka_sent, "cka_held": cka_sent * w, "cka_mem": mem, "fits": mem <= HBM_GIB * 2**30}


def fmt_eff(s: dict) -> str:
    """Scaling efficiency, marked where the CKA alone would not fit in a GPU's memory."""
    return f"{s['efficiency']:.0%}" + ("" if s["fits"] else " (OOM)")


def fmt_ms(s: float) -> str:
    return f"{1e3 * s:.2f}" if s < 0.1 else f"{1e3 * s:,.0f}"


def fmt_bytes(b: float, unit: int) -> str:
    v = b / unit
    return "0" if v == 0 else f"{v:.2f}" if v < 10 else f"{v:,.0f}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--util", type=float, default=0.4, help="achieved fraction of the bf16 peak in the step")
    p.add_argument("--recipes", nargs="+", default=list(RECIPES))
    p.add_argument("--markdown", help="also write the output to this file")
    args = p.parse_args()
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from harness import markdown_table

    MiB, GiB = 2**20, 2**30
    out = []
    descs = [describe(r) for r in args.recipes]
    sscl = [d for d in descs if d["sscl_pq"]]
    out.append(f"Assumptions: {BATCH} images/GPU, {GPUS_PER_NODE} GPUs/node, busbw {busbw(8) / 1e9:.0f} GB/s in a node "
               f"and {busbw(16) / 1e9:.0f} GB/s across nodes ({LINK_EFFICIENCY:.0%} of nominal), alpha "
               f"{ALPHA_INTRA_US:g}/{ALPHA_INTER_US:g} us per ring step, bf16 peak {PEAK_BF16_TFLOPS:g} TFLOP/s at "
               f"{args.util:.0%} utilisation, fp64 {PEAK_FP64_TFLOPS:g} TFLOP/s, HBM {HBM_TBPS:g} TB/s and "
               f"{HBM_GIB:.1f} GiB per GPU, gradients {GRAD_BYTES} B, embeddings {EMBED_BYTES} B, CKA rows "
               f"{FEATURE_BYTES} B per value, CKA moments and local HSIC terms 8 B. (OOM): the CKA alone needs "
               f"more than a GPU's memory at that W.\n")
    rows = []
    for d in descs:
        peak_ips = PEAK_BF16_TFLOPS * 1e12 / d["flops"]
        gram_rows = BATCH * FEATURE_BYTES * sum(p + q for p, q in d["sscl_pq"])
        rows.append([d["recipe"], d["student"], f"{d['params'] / 1e6:.2f}", f"{GRAD_BYTES * d['params'] / MiB:.1f}",
                     f"{d['flops'] / 1e9:.1f}", f"{peak_ips:,.0f}", f"{args.util * peak_ips:,.0f}",
                     f"{d['embed_row'] / 2**10:.0f}", f"{gram_rows / MiB:.0f}" if gram_rows else "-",
                     str(sum(collectives(d, False)) + 1), str(step_model(d, 8, args.util)["collectives"] + 1)])
    out.append("Per recipe (per GPU, per step; gathered rows grow x W at the receiver; collectives include the "
               "gradient all-reduce):\n")
    out.append(markdown_table(["recipe", "student", "trainable params (M)", "gradient all-reduce (MiB)",
                               "GFLOP/img (fwd+bwd, + teacher fwd)", "img/s at bf16 peak",
                               f"img/s at {args.util:.0%}", "gathered w/ grad per rank (KiB)",
                               "CKA rows sent per rank, all layers in Gram form (MiB)",
                               "collectives/step, per-layer design", "collectives/step, as coded"], rows))

    # the SSCL layers: what CKA sees (whole maps) and what the embedders see (grid-pooled), per distinct geometry
    seen = {}
    for d in sscl:
        key = tuple((f["layer"], f["p"], f["q"], f["g_s"], f["g_a"]) for f in d["sscl_widths"])
        seen.setdefault(key, []).append(d)
    for group in seen.values():
        d = group[0]
        rows = []
        for f in d["sscl_widths"]:
            picks = [choose_estimator(d["cka_estimator"], f["p"], f["q"], w * BATCH) for w in WORLDS]
            first = {}
            for w, k in zip(WORLDS, picks):
                first.setdefault(k, w)
            rows.append([f["layer"], "[" + ", ".join(map(str, f["s_shape"])) + "]",
                         "[" + ", ".join(map(str, f["a_shape"])) + "]", f"{f['p']:,}", f"{f['q']:,}",
                         f"{FEATURE_BYTES * (f['p'] + f['q']) / MiB:.2f}", f"{f['g_s']:,} / {f['g_a']:,}",
                         ", ".join(f"{k} from W={w}" for k, w in first.items())])
        tot = sum(f["p"] + f["q"] for f in d["sscl_widths"])
        rows.append(["all", "", "", "", "", f"{FEATURE_BYTES * tot / MiB:.2f}", "", ""])
        names = ", ".join(g["recipe"] for g in group)
        out.append(f"\nSSCL layers of {names}: CKA on the whole maps (representation_rows), embedders on "
                   f"{d['pool_grid']}x{d['pool_grid']}-pooled maps (embed_time: {d['embed_time']}):\n")
        out.append(markdown_table(["layer", "student map", "teacher map", "CKA row width p (student)",
                                   "q (teacher)", "CKA rows per sample (MiB)", "g^S / g^A input width",
                                   f"cka_estimator: {d['cka_estimator']} picks"], rows))

    def detail(d: dict, estimator: str | None) -> None:
        rows = []
        for w in WORLDS:
            s = step_model(d, w, args.util, estimator=estimator)
            before = step_model(d, w, args.util, fused=False)
            parts = {"gradient all-reduce": s["grad"], "embedding gather": s["embed"],
                     "CKA/label traffic": s["cka_traffic"], "collective latency": s["latency"]}
            if d["sscl_pq"]:
                parts["CKA compute"] = s["cka_compute"]
            top = max(parts, key=parts.get)
            cka = [s["forms"], fmt_bytes(s["cka_sent"], MiB), fmt_bytes(s["cka_held"], GiB),
                   fmt_bytes(s["cka_mem"], GiB)] if d["sscl_pq"] else ["-", "-", "-", "-"]
            rows.append([str(w), fmt_ms(s["compute"]), fmt_ms(s["grad"]), fmt_ms(s["embed"]),
                         fmt_ms(s["cka_traffic"]), fmt_ms(s["latency"]), fmt_ms(s["cka_compute"]), *cka,
                         f"{s['overhead'] / s['compute']:.2f}", top, fmt_eff(s), f"{before['efficiency']:.0%}"])
        est = estimator or d.get("cka_estimator")
        how = f", cka_estimator: {est}" if d["sscl_pq"] else ""
        out.append(f"\n{d['recipe']} ({d['student']}{how}), ms per step:\n")
        out.append(markdown_table(["W", "compute", "grad all-reduce", "embed gather fwd+bwd", "CKA/label traffic",
                                   "collective latency", "CKA compute", "CKA forms",
                                   "CKA rows sent per rank (MiB)", "CKA rows held per rank (GiB)",
                                   "CKA peak memory per rank (GiB)", "overhead / compute", "largest overhead",
                                   "scaling efficiency", "efficiency, per-layer design"], rows))

    for d in descs:
        if d["recipe"] == "imagenet_sscl_r34":
            detail(d, None)
            detail(d, "local")
        elif d["recipe"] == "imagenet_stcl_sew34":
            detail(d, None)

    rows = []
    for d in sscl:
        for w in WORLDS:
            g = step_model(d, w, args.util)
            loc = step_model(d, w, args.util, estimator="local")
            rows.append([d["recipe"], str(w), f"{w * BATCH:,}", g["forms"], fmt_bytes(g["cka_sent"], MiB),
                         fmt_bytes(g["cka_held"], GiB), fmt_bytes(g["cka_mem"], GiB), fmt_ms(g["cka_traffic"]),
                         fmt_ms(g["cka_compute"]), fmt_eff(g), fmt_ms(loc["cka_traffic"]), fmt_ms(loc["cka_compute"]),
                         fmt_bytes(loc["cka_mem"], GiB), fmt_eff(loc)])
    if rows:
        out.append(f"\nSSCL CKA on whole maps, exact on the global batch (recipe's cka_estimator) vs 'local' (each "
                   f"rank's {BATCH} rows), per rank per step:\n")
        out.append(markdown_table(["recipe", "W", "global batch N", "CKA forms (recipe)", "rows sent (MiB)",
                                   "rows held after the gather (GiB)", "CKA peak memory (GiB)",
                                   "CKA traffic (ms)", "Gram compute (ms)", "scaling efficiency",
                                   "local: CKA traffic (ms)", "local: CKA compute (ms)", "local: memory (GiB)",
                                   "local: scaling efficiency"], rows))

    for fused, title in ((False, "the per-layer design (a shape check before every gather, one collective of each "
                                 "kind per layer, Gram-form CKA)"),
                         (True, "as coded (one collective per kind for all layers, CKA form per layer as the "
                                "recipe's cka_estimator picks it; '(local)' rows: cka_estimator: local)")):
        rows = []
        for d in descs:
            if fused:
                rows.append([d["recipe"], *(fmt_eff(step_model(d, w, args.util)) for w in WORLDS)])
                if d["sscl_pq"]:
                    rows.append([f"{d['recipe']} (local)",
                                 *(fmt_eff(step_model(d, w, args.util, estimator="local")) for w in WORLDS)])
            else:
                rows.append([d["recipe"], *(f"{step_model(d, w, args.util, fused)['efficiency']:.0%}"
                                            for w in WORLDS)])
        out.append(f"\nScaling efficiency (compute / (compute + exposed overhead)), all-reduces ring or tree, "
                   f"gathers ring, {title}:\n")
        out.append(markdown_table(["recipe", *(f"W={w}" for w in WORLDS)], rows))
    text = "\n".join(out)
    print(text)
    if args.markdown:
        Path(args.markdown).write_text(text + "\n")

if __name__ == "__main__":
    main()
