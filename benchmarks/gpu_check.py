"""The checks that need a GPU, in one run on one GPU node (they cannot run on the CPU machines this project is
developed on, and have not been run yet): prints one table, exits 1 if a check fails.

1. DALI with the GPU ("mixed") decoder: a train loader checkpointed after k batches and restored into a fresh
   loader gives the same next batch (images and labels) as the loader that kept going.
2. bf16 really active: a real ``Trainer`` (a world of 1, NCCL, ``deepspeed.precision: auto`` -> bf16) runs
   ``engine(...)``; the dtype of every student convolution output seen inside DeepSpeed's forward must be
   bfloat16 (and, for contrast, float32 in the old set-up where autocast was entered only around the engine);
   then a 2-step ``fit()`` whose first-forward probe and ``metrics.jsonl`` must agree; the fused LIF's compile state.
3. channels_last vs contiguous: fwd + bwd + SGD step of spiking_resnet18 (T = 4, fused LIF, bf16 autocast),
   median ms of each memory format, timed round-robin.

Data: the embedded digits shards (built on first use under ``--cache``), so no ImageNet is needed.
Run: ``python benchmarks/gpu_check.py [--cache /tmp/distsnn-gpu-check] [--batch 32] [--image 224] [--steps 10]
[--markdown out.md]``. ``--cpu-smoke`` runs the same code on the CPU (CPU decode, small sizes) to check the
script itself: done on a 2-core CPU machine, all rows ok; it proves nothing about the GPU.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile

import torch
import torch.nn.functional as F

from harness import emit_table_report, interleaved_median_ms

from distsnn.config import load
from distsnn.config.schema import ModelConfig
from distsnn.data import build_train_loader, prepare_dataset
from distsnn.models import build_student
from distsnn.spiking.lif_fused import compiled_state


def tiny_run(out_dir: str, cache: str, extra: list[str] = ()) -> list[str]:
    return [f"run.out_dir={out_dir}", f"data.cache_dir={cache}", "method.name=baseline",
            "telemetry.enabled=false", "run.plots=false", "data.prefetch=1", "run.log_every_steps=1", *extra]


def check_dali_resume(dev: torch.device, cache: str, out_dir: str, k: int = 3) -> list[str]:
    decode = "mixed" if dev.type == "cuda" else "cpu"
    cfg = load("demo_sscl.yaml", tiny_run(out_dir, cache, [f"data.decode_device={decode}", "data.batch_size=16",
                                                           f"run.device={dev.type}"]))
    info = prepare_dataset(cfg.data)
    a = build_train_loader(cfg.data, info, 0, 1, cfg.run.seed, 1, device=dev)
    it = iter(a)
    for _ in range(k):
        next(it)
    state = a.state()
    want = next(it)
    b = build_train_loader(cfg.data, info, 0, 1, cfg.run.seed, 1, device=dev, checkpoint=state)
    got = next(iter(b))
    same = torch.equal(want.views[0], got.views[0]) and torch.equal(want.labels, got.labels)
    diff = (want.views[0].float() - got.views[0].float()).abs().max().item()
    return [f"DALI {decode}: checkpoint after {k} batches, restore -> next batch", "same" if same else "DIFFERENT",
            f"device {want.views[0].device}, max abs diff {diff:.3g}, "
            f"labels equal {torch.equal(want.labels, got.labels)}",
            "ok" if same else "FAIL"]


def check_bf16(dev: torch.device, cache: str, out_dir: str) -> list[list[str]]:
    from distsnn.train.compute_dtype import engine_conv_dtypes
    from distsnn.train.main import _preflight
    from distsnn.train.trainer import Trainer, init_distributed

    cfg = load("demo_sscl.yaml", tiny_run(out_dir, cache, ["run.name=gpu_check_bf16", "run.max_steps=2",
                                                           "data.batch_size=16", f"run.device={dev.type}",
                                                           "deepspeed.precision=bf16"]))
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    init_distributed(dev, 1)
    tr = Trainer(cfg, _preflight(cfg), dev, 0, 1, 0)
    batch = next(iter(tr.train_loader))
    inside = set(engine_conv_dtypes(tr, batch, outer_autocast=False))
    tr.engine.module.autocast_dtype = None  # the old set-up, for contrast
    around = set(engine_conv_dtypes(tr, batch, outer_autocast=True))
    tr.engine.module.autocast_dtype = torch.bfloat16
    try:
        rc = tr.fit()
    finally:
        tr.close()
    runtime = [json.loads(line) for line in open(os.path.join(tr.run.path, "metrics.jsonl"))
               if '"runtime"' in line]
    rt = runtime[0] if runtime else {}
    ok_inside = tr.precision == "bf16" and inside == {"bfloat16"}
    ok_fit = rc == 0 and rt.get("conv_output_dtype") == "bfloat16" and rt.get("precision") == "bf16"
    lif = compiled_state()
    return [
        ["bf16: conv outputs inside engine forward", ",".join(sorted(inside)),
         f"plan precision {tr.precision}; autocast only around engine (old set-up): {','.join(sorted(around))}",
         "ok" if ok_inside else "FAIL"],
        ["bf16: fit() probe and metrics.jsonl agree", f"rc {rc}", f"runtime record {rt}", "ok" if ok_fit else "FAIL"],
        ["fused LIF compiled (Triton on GPU)", str(lif), "False = eager fallback: see the 'LIF: torch.compile' warning",
         "ok" if lif else "FAIL"],
    ]


def check_channels_last(dev: torch.device, batch: int, image: int, steps: int, warmup: int) -> list[list[str]]:
    cfg = ModelConfig(name="spiking_resnet18", num_classes=1000, timesteps=4)
    x = torch.randn(batch, 3, image, image, device=dev)
    y = torch.randint(0, 1000, (batch,), device=dev)
    fns = {}
    for fmt in ("contiguous", "channels_last"):
        torch.manual_seed(0)
        model = build_student(cfg).to(dev)
        xf = x
        if fmt == "channels_last":
            model = model.to(memory_format=torch.channels_last)
            xf = x.contiguous(memory_format=torch.channels_last)
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

        def step(model=model, opt=opt, xf=xf):
            with torch.autocast(dev.type, dtype=torch.bfloat16):
                logits = model(xf)  # [T, B, K]
            loss = F.cross_entropy(logits.float().mean(0), y)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            if dev.type == "cuda":
                torch.cuda.synchronize()
        fns[fmt] = step
    ms = interleaved_median_ms(fns, repeats=steps, warmup=warmup)
    ratio = ms["contiguous"] / ms["channels_last"]
    return [[f"step time spiking_resnet18 T=4 B={batch} {image}px bf16: {fmt}", f"{ms[fmt]:.1f} ms",
             f"contiguous / channels_last = {ratio:.2f}x; fused LIF compiled {compiled_state()}", "info"]
            for fmt in ms]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cache", default=os.path.join(tempfile.gettempdir(), "distsnn-gpu-check"))
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--image", type=int, default=224)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--markdown", default=None)
    p.add_argument("--cpu-smoke", action="store_true", help="run the same code on the CPU (CPU decode) to check the "
                   "script itself; proves nothing about the GPU")
    a = p.parse_args()
    if a.cpu_smoke:
        dev = torch.device("cpu")
    elif not torch.cuda.is_available():
        print("gpu_check: no usable GPU (torch.cuda.is_available() is False); run it on a GPU node", file=sys.stderr)
        return 78
    else:
        dev = torch.device("cuda", 0)
    out_dir = os.path.join(a.cache, "runs")
    rows = [check_dali_resume(dev, os.path.join(a.cache, "data"), out_dir)]
    rows += check_bf16(dev, os.path.join(a.cache, "data"), out_dir)
    rows += check_channels_last(dev, a.batch, a.image, a.steps, a.warmup)
    gpu = torch.cuda.get_device_name(0) if dev.type == "cuda" else "none (--cpu-smoke)"
    notes = [f"GPU: {gpu}; torch {torch.__version__} (CUDA {torch.version.cuda}).",
             "Checks: DALI mixed-decode resume, bf16 inside the DeepSpeed forward, channels_last vs contiguous."]
    emit_table_report(notes, ["check", "result", "detail", "verdict"], rows, a.markdown)
    return 1 if any(r[3] == "FAIL" for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
