#!/usr/bin/env python
"""Cost of each loss (forward + backward) on the global batch sizes of the ImageNet recipes, next to a
named reference: one forward + backward of torchvision's resnet18 at a small batch on the same device.

With ``--world W > 1`` the script spawns W gloo ranks (CPU) that each hold N/W rows, so the numbers
include the cross-rank gather (and each rank's share of the work); ``all_gather_with_grad`` is also
timed alone. Times are rank 0's median per call.

  OMP_NUM_THREADS=1 python benchmarks/losses.py [--rows 256 1024] [--world 1] [--device auto]
"""
from __future__ import annotations

import argparse
import datetime
import os
import sys
import tempfile

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from distsnn import distributed as D  # noqa: E402
from harness import markdown_table, median_ms  # noqa: E402
from distsnn.config.schema import MethodConfig, SSCLConfig, TCLConfig  # noqa: E402
from distsnn.losses import build_objective, nce_critic_loss, temporal_supcon_loss  # noqa: E402
from distsnn.losses.global_cka import global_linear_cka  # noqa: E402
from distsnn.models.output import ModelOutput  # noqa: E402

T, D_EMB = 4, 128
# ResNet-18 stage widths (the SSCL/TCL recipes' student and teacher).
CHANNELS = {"stage1": 64, "stage2": 128, "stage3": 256, "stage4": 512, "pooled": 512}


def timed(fn, device, repeats, barrier=True):
    def call():
        if barrier and D.world_size() > 1:
            torch.distributed.barrier()       # every rank starts together: rank 0 times the slowest
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
    return median_ms(call, repeats, warmup=1)


def loss_cases(n_local: int, device: torch.device):
    """name -> closure running one forward + backward on this rank's ``n_local`` rows."""
    g = torch.Generator(device="cpu").manual_seed(D.rank())
    labels = torch.randint(0, 1000, (n_local,), generator=g).to(device)

    def leaf(*shape):
        return torch.randn(*shape, generator=g).to(device).requires_grad_()

    z4, z8, zs, za = leaf(T, n_local, D_EMB), leaf(2 * T, n_local, D_EMB), leaf(n_local, D_EMB), leaf(n_local, D_EMB)
    f_s, f_a = torch.randn(n_local, 512, generator=g).to(device), torch.randn(n_local, 512, generator=g).to(device)
    cases = {
        "all_gather_with_grad [S*B, 128], S=8": lambda: D.all_gather_with_grad(z8.view(-1, D_EMB)).sum().backward(),
        "temporal_supcon, TCL (S=T=4), 1 layer": lambda: temporal_supcon_loss(
            F.normalize(z4, dim=-1), labels, validate=False).backward(),
        "temporal_supcon, STCL (S=2T=8), 1 layer": lambda: temporal_supcon_loss(
            F.normalize(z8, dim=-1), labels, validate=False).backward(),
        "nce_critic (D=128), 1 layer": lambda: nce_critic_loss(
            F.normalize(zs, dim=-1), F.normalize(za, dim=-1), num_data=1_281_167, log_z=5.0, validate=False).backward(),
        "CKA [N, 512] pair, Gram form (gather, [N, N] float64)": lambda: global_linear_cka([(f_s, f_a)], "gram"),
        "CKA [N, 512] pair, moment form (all-reduce)": lambda: global_linear_cka([(f_s, f_a)], "moments"),
    }
    for name in ("tcl", "stcl", "sscl+stcl"):
        fn, terms = _objective_case(name, n_local, device, g, labels)
        cases[f"objective {name}: {terms} layer terms, ResNet-18 widths, 2x2 maps"] = fn
    return cases


def _objective_case(name, n_local, device, g, labels, map_px=None):
    """(closure, number of per-layer loss terms) for the recipe defaults of method ``name``. Stage maps are 2x2
    unless ``map_px`` gives ResNet-18's map sizes at that input size (stage 1 = map_px / 4, halving per stage):
    SSCL's CKA is taken on the whole maps (Eq.8-9), so their size is part of the loss's cost."""
    cfg = MethodConfig(name=name, tcl=TCLConfig(weight=5.0 if "stcl" in name else 0.5), sscl=SSCLConfig())
    torch.manual_seed(0)
    obj = build_objective(cfg, CHANNELS, CHANNELS if "sscl" in name else None, num_data=1_281_167,
                          timesteps=T).to(device).train()
    terms = (len(cfg.sscl.layers) if "sscl" in name else 0) + (len(cfg.tcl.layers) if "tcl" in name else 0)
    sizes = {f"stage{i + 1}": (map_px // 4 >> i if map_px else 2) for i in range(4)}

    def feats(time_major):
        lead = (T, n_local) if time_major else (n_local,)
        f = {k: torch.randn(*lead, c, sizes[k], sizes[k], generator=g).to(device)
             for k, c in CHANNELS.items() if k != "pooled"}
        f["pooled"] = torch.randn(*lead, 512, generator=g).to(device)
        return {k: v.requires_grad_(time_major) for k, v in f.items()}

    views = [ModelOutput(torch.randn(T, n_local, 1000, generator=g).to(device).requires_grad_(), feats(True))
             for _ in range(obj.num_views)]
    teacher = ModelOutput(torch.randn(n_local, 1000, generator=g).to(device), feats(False)) if obj.requires_teacher else None
    return (lambda: obj(views, labels, teacher).total.backward()), terms


def resnet18_step_ms(device, batch, repeats):
    from torchvision.models import resnet18

    model = resnet18(weights=None).to(device)
    x = torch.randn(batch, 3, 224, 224, device=device)
    y = torch.randint(0, 1000, (batch,), device=device)
    # Rank 0 alone (no barrier): the others wait at the first loss's barrier.
    return timed(lambda: F.cross_entropy(model(x), y).backward(), device, repeats, barrier=False)


def run(rank_id, args, tmp):
    torch.set_num_threads(max(1, int(os.environ.get("OMP_NUM_THREADS", "1"))))
    if args.world > 1:
        torch.distributed.init_process_group("gloo", init_method=f"file://{tmp}/rdzv", rank=rank_id,
                                             world_size=args.world)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    rows = []
    ref = resnet18_step_ms(device, args.model_batch, args.repeats) if D.is_main() else 0.0
    for n in args.rows:
        if n % args.world:
            raise SystemExit(f"--rows {n} is not divisible by --world {args.world}")
        for name, fn in loss_cases(n // args.world, device).items():
            if args.world == 1 and name.startswith("all_gather"):
                continue
            ms = timed(fn, device, args.repeats)
            rows.append([name, str(n), str(args.world), f"{ms:.1f}", f"{ms / ref:.2f}" if ref else ""])
    for n in args.map_rows:
        if n % args.world:
            raise SystemExit(f"--map-rows {n} is not divisible by --world {args.world}")
        g = torch.Generator(device="cpu").manual_seed(D.rank())
        labels = torch.randint(0, 1000, (n // args.world,), generator=g).to(device)
        fn, terms = _objective_case("sscl", n // args.world, device, g, labels, map_px=args.map_px)
        ms = timed(fn, device, args.repeats)
        rows.append([f"objective sscl: {terms} layer terms, whole ResNet-18 maps at {args.map_px} px (CKA on "
                     f"{T}x64x{args.map_px // 4}^2 student values per row at stage 1)", str(n), str(args.world),
                     f"{ms:.1f}", f"{ms / ref:.2f}" if ref else ""])
    if D.is_main():
        load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
        print(f"{datetime.date.today()}, torch {torch.__version__}, device {device}, torch threads "
              f"{torch.get_num_threads()}, {os.cpu_count()} CPUs, load average {load}")
        print(f"\nreference: torchvision resnet18 forward+backward, batch {args.model_batch}, 224x224: {ref:.1f} ms\n")
        print(markdown_table(["loss (forward + backward)", "global rows N", "ranks W", "ms / call (rank 0)",
                              "x resnet18 step"], rows))
    if args.world > 1:
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", type=int, nargs="+", default=[256, 1024], help="global batch sizes N")
    p.add_argument("--world", type=int, default=1, help="gloo ranks (CPU); each holds N/W rows")
    p.add_argument("--device", default="auto", help="auto (cuda if present), cpu or cuda (world 1 only)")
    p.add_argument("--model-batch", type=int, default=8, help="batch of the resnet18 reference step")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--map-rows", type=int, nargs="*", default=[64],
                   help="global batch sizes of the SSCL objective on whole stage maps (none: skip it)")
    p.add_argument("--map-px", type=int, default=224, help="input size whose ResNet-18 stage maps that case uses")
    args = p.parse_args()
    if args.world == 1:
        run(0, args, None)
    else:
        args.device = "cpu"
        with tempfile.TemporaryDirectory() as tmp:
            torch.multiprocessing.spawn(run, args=(args, tmp), nprocs=args.world, join=True)


if __name__ == "__main__":
    main()
