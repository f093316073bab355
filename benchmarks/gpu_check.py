"""Everything GPU-side in one run on one GPU (about 8 minutes on an H100/H200): a JSON file and a markdown table
for benchmarks/RESULTS.md, one row per check with a verdict (ok / FAIL / info). Nothing GPU-side has run yet: the
project is developed on CPU machines.

Checks, in the order they run (a check that raises becomes a FAIL row with the exception text; the others go on):

- ``env``: GPU name and capability, torch / CUDA / cuDNN / NCCL, DALI, DeepSpeed, SpikingJelly, Triton versions.
- ``flops``: FLOPs per image of the SSCL-R34 train step at 224 px (``imagenet_sscl_r34.yaml``): student forward +
  backward + teacher forward, counted with ``torch.utils.flop_counter`` on meta tensors (conv/matmul only; the
  same count as ``comm_model.py``, docs/PERFORMANCE.md: 92.9 GFLOP).
- ``lif_agreement``, ``lif_time_*``: the LIF forward + backward of ``lif.py`` on the device: distsnn's fused kernel
  (Triton on CUDA) and reference loop vs SpikingJelly 2.0 ``LIFNode`` (its automatic kernel choice), spikes and
  dL/dx against the reference loop, median ms (interleaved).
- ``dali_decode``: images/s of the train pipeline with DALI ``mixed`` (GPU) vs ``cpu`` JPEG decode, batches landing
  on the training device, on ImageNet-sized JPEGs made by ``data.py``.
- ``dali_resume``: a ``mixed``-decode loader checkpointed after k batches and restored gives the same next batch.
- ``bf16_engine``, ``bf16_fit``, ``lif_compiled``: a real ``Trainer`` (world of 1, NCCL, bf16): every student conv
  output inside DeepSpeed's forward is bfloat16; a 2-step ``fit()`` whose probe and ``metrics.jsonl`` agree; the
  fused LIF ran compiled.
- ``deepspeed_run``: ``deepspeed --num_gpus 1 launchers/train.py --config demo_sscl.yaml`` (SSCL with a random
  teacher, bf16, mixed decode, ``run.device=cuda``) for a few steps; from its log and ``metrics.jsonl``: exit 0, every
  step logged with a finite loss, the runtime record (precision, conv dtype, LIF compiled) and NCCL really in use
  (``NCCL_DEBUG=INFO`` lines; on the CPU the trainer's ``init_distributed`` takes gloo).
- ``sscl_r34_step_1`` / ``_2``: the ImageNet SSCL-R34 recipe's student + frozen teacher + objective (5 NCE layers,
  CKA weights) at 224 px, bf16 autocast inside ``TrainModule`` as the trainer does, SGD + clipping: images/s and
  ``torch.cuda.max_memory_allocated`` at batch 32 and 64.
- ``share_of_bound``: the batch-32 images/s as a share of the ~8,500 images/s compute bound of one H100 (the
  issue's figure; 989 TFLOP/s dense bf16 / 116 GFLOP per image) and of 989 TFLOP/s / the FLOPs counted here.
- ``fp32_vs_bf16``: the same SSCL-R34 steps from the same initial weights and batches in fp32 (TF32 off) and in
  bf16: the losses side by side, relative differences. ok: all finite and the first step's CE and per-layer NCE
  terms within ``--fp32-bf16-tol`` (0.05). The total is reported, not judged: lambda = 1/CKA of one small batch
  of an untrained net is noise. Measured on the CPU at step 1: CE and NCE terms within 1.4e-2 at width 1/2,
  batch 16, 128 px; the deepest stage's NCE term 4e-2 at width 1/8, batch 8 (few channels, spikes flip).
- ``lif_sj_<backend>``: SpikingJelly's LIF with ``SJ_LIF_CUDA_IMPLEMENTATION`` = torch / triton / cuda, each in a
  child process (the variable is read at import): ms and agreement with distsnn's reference, or why unavailable.
- ``channels_last_*``: fwd + bwd + SGD step of spiking_resnet18 (T = 4, bf16) in both memory formats.

Every check has a time estimate; one that would end past ``--budget-s`` (default 480 s) is not started and
becomes a FAIL row saying so.

Run on the GPU node, from the repository root, with the project's dependencies installed (requirements.lock):

    PY=$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 ); $PY benchmarks/gpu_check.py --out "${OUT:-gpu_check_out}"

It writes ``<out>/gpu_check.json``, ``<out>/gpu_check.md`` and ``<out>/deepspeed_run.log``; exit 1 when a check
fails, 78 when there is no usable GPU. ``--cpu-smoke`` runs the same code on the CPU at tiny sizes (64 px, batch
4-6, width 1/8, CPU decode, gloo): the test suite runs it (tests/test_gpu_check.py) so that the script cannot rot; it
proves nothing about the GPU.
"""
from __future__ import annotations

import argparse
import contextlib
import gc
import json
import math
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [p for p in (str(HERE), str(ROOT)) if p not in sys.path]  # harness, lif, data; distsnn uninstalled

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from harness import deepspeed_command, emit_table_report, free_port, interleaved_median_ms  # noqa: E402

PEAK_BF16_FLOPS = 989e12    # H100 SXM dense bf16 (the H200 has the same tensor cores); comm_model.PEAK_BF16_TFLOPS
BOUND_IMAGES_PER_S = 8500   # the issue's ~8,500 img/s compute bound of one H100 for SSCL-R34
RECIPE = "imagenet_sscl_r34.yaml"
DEMO = "demo_sscl.yaml"
SJ_BACKENDS = ("torch", "triton", "cuda")  # SJ_LIF_CUDA_IMPLEMENTATION values (2.0's "cuda" = its native kernels)


@dataclass
class Sizes:
    """What each check runs at; ``gpu()`` fits the whole run in ~8 minutes on one H100/H200."""
    lif_shape: tuple = (4, 32, 64, 56, 56)   # [T, B, C, H, W]: ResNet-34 stage 1 at 224 px, B = 32
    lif_repeats: int = 20
    lif_warmup: int = 5
    dali_images: int = 512
    dali_batch: int = 64
    dali_epochs: int = 3
    dali_threads: int = 6                    # the ImageNet recipes' data.num_threads
    image: int = 224
    width: float = 1.0
    sscl_batches: tuple = (32, 64)
    sscl_steps: int = 10
    sscl_warmup: int = 3
    cmp_batch: int = 32
    cmp_steps: int = 5
    ds_steps: int = 30
    ds_batch: int = 32
    ds_timeout: int = 240
    sj_backends: tuple = SJ_BACKENDS
    sj_timeout: int = 120
    cl_batch: int = 32
    cl_steps: int = 10
    cl_warmup: int = 3

    @staticmethod
    def cpu() -> "Sizes":
        return Sizes(lif_shape=(4, 2, 4, 8, 8), lif_repeats=2, lif_warmup=1, dali_images=24, dali_batch=8,
                     dali_epochs=1, dali_threads=1, image=64, width=0.125, sscl_batches=(4, 6), sscl_steps=2,
                     sscl_warmup=1, cmp_batch=16, cmp_steps=2, ds_steps=3, ds_batch=8, ds_timeout=240,
                     sj_backends=("torch",), sj_timeout=120, cl_batch=2, cl_steps=2, cl_warmup=1)


# estimated seconds of each check on one H100/H200 (start-up and compilation included): what --budget-s spends
ESTIMATE_S = {"env": 2, "flops": 10, "lif": 40, "dali_decode": 40, "dali_resume": 15, "bf16": 45,
              "deepspeed_run": 100, "sscl_r34_step": 60, "fp32_vs_bf16": 40, "lif_sj": 60, "channels_last": 30,
              "share": 1}


@dataclass
class Row:
    id: str
    check: str
    result: str
    detail: str
    verdict: str  # ok | FAIL | info
    data: dict = field(default_factory=dict)
    seconds: float = 0.0


def fail_row(check_id: str, what: str, err: str) -> Row:
    return Row(check_id, what, "error", err, "FAIL")


class Report:
    """Runs checks under a time budget; an exception in one becomes its FAIL row and the next check runs."""

    def __init__(self, budget_s: float):
        self.rows: list[Row] = []
        self.t0 = time.monotonic()
        self.budget_s = budget_s

    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    def remaining(self) -> float:
        return self.budget_s - self.elapsed()

    def run(self, key: str, ids: list[str], fn, *args) -> list[Row]:
        """``fn(*args)`` -> rows; ``ids``: the row ids it would give, for the FAIL rows if it does not."""
        est = ESTIMATE_S.get(key, 30)
        if self.remaining() < est:
            rows = [fail_row(i, key, f"not run: {self.elapsed():.0f} s spent of the {self.budget_s:.0f} s budget, "
                                     f"this check needs ~{est} s") for i in ids]
        else:
            print(f"[gpu_check] {self.elapsed():6.1f} s: {key}", flush=True)
            t = time.monotonic()
            try:
                rows = fn(*args)
            except BaseException as e:  # noqa: BLE001 - KeyboardInterrupt aside, one check must not lose the others
                if isinstance(e, KeyboardInterrupt):
                    raise
                tb = traceback.format_exc(limit=-3).strip().splitlines()
                msg = f"{type(e).__name__}: {e}".strip()[:600] + " @ " + " / ".join(
                    ln.strip() for ln in tb if ln.strip().startswith("File"))[-300:]
                print(f"[gpu_check] {key} raised:\n{traceback.format_exc()}", file=sys.stderr, flush=True)
                rows = [fail_row(i, key, msg) for i in ids]
            dt = time.monotonic() - t
            for r in rows:
                r.seconds = round(dt / len(rows), 1)
            _release_memory()
        self.rows += rows
        return rows

    def row(self, row_id: str) -> Row | None:
        return next((r for r in self.rows if r.id == row_id), None)


def _release_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def tiny_run(out_dir: str, cache: str, extra: list[str] = ()) -> list[str]:
    return [f"run.out_dir={out_dir}", f"data.cache_dir={cache}", "method.name=baseline",
            "telemetry.enabled=false", "run.plots=false", "data.prefetch=1", "run.log_every_steps=1", *extra]


def random_teacher(model_cfg, path: str) -> str:
    """Untrained weights of the ANN teacher that ``build_teacher`` makes for ``model_cfg`` (teacher.name ''): the
    speed and the dtypes are those of the trained one; no ImageNet teacher is needed."""
    import timm

    from distsnn.models import ann_counterpart, save_weights

    torch.manual_seed(0)
    net = timm.create_model(ann_counterpart(model_cfg.name), num_classes=model_cfg.num_classes,
                            width_multiplier=model_cfg.width_multiplier, in_chans=model_cfg.in_chans)
    save_weights(net, path)
    return path


# ---- env, flops --------------------------------------------------------------------------------------------------
def check_env(dev: torch.device) -> list[Row]:
    from importlib.metadata import PackageNotFoundError, version

    def v(pkg):
        try:
            return version(pkg)
        except PackageNotFoundError:
            return "absent"
    pkgs = {p: v(p) for p in ("nvidia-dali-cuda130", "nvidia-dali-cuda120", "deepspeed", "spikingjelly", "triton",
                              "timm")}
    pkgs = {k: x for k, x in pkgs.items() if not (k.startswith("nvidia-dali") and x == "absent")}
    data = {"torch": torch.__version__, "cuda": torch.version.cuda, "packages": pkgs}
    if dev.type == "cuda":
        p = torch.cuda.get_device_properties(dev)
        data.update(gpu=p.name, capability=f"{p.major}.{p.minor}", memory_gib=round(p.total_memory / 2**30, 1),
                    cudnn=torch.backends.cudnn.version(), nccl=".".join(map(str, torch.cuda.nccl.version())))
        result = f"{p.name} (sm_{p.major}{p.minor}, {data['memory_gib']} GiB)"
    else:
        result = "no GPU (--cpu-smoke)"
    detail = f"torch {torch.__version__}, CUDA {torch.version.cuda}" + (
        f", cuDNN {data['cudnn']}, NCCL {data['nccl']}" if dev.type == "cuda" else "") + "; " + ", ".join(
        f"{k} {x}" for k, x in pkgs.items())
    return [Row("env", "environment", result, detail, "info", data)]


def flops_per_image(model, image: int, timesteps: int | None = None, backward: bool = False) -> float:
    """Conv/matmul FLOPs of one image (forward, + backward), counted on meta tensors: ``comm_model``'s count."""
    from comm_model import flops_per_image as count
    return count(model, image, timesteps, backward)


def sscl_train_flops(recipe: str = RECIPE) -> dict:
    """FLOPs per image of one SSCL train step of ``recipe`` at its image size: student forward + backward and the
    frozen teacher's forward (one view; the objective's heads and the LIF/BN element-wise work are not counted)."""
    import timm

    from distsnn.config import load
    from distsnn.models import ann_counterpart, build_student

    cfg = load(recipe, ["model.neuron.implementation=reference"])  # a plain loop traces on meta tensors
    m = cfg.model
    with torch.device("meta"):
        student = build_student(m)
        teacher = timm.create_model(ann_counterpart(m.name), num_classes=m.num_classes,
                                    width_multiplier=m.width_multiplier, in_chans=m.in_chans)
    s = flops_per_image(student, cfg.data.image_size, None, backward=True)
    with torch.no_grad():
        t = flops_per_image(teacher, cfg.data.image_size, None, backward=False)
    return {"recipe": recipe, "student": m.name, "timesteps": m.timesteps, "image": cfg.data.image_size,
            "student_fwd_bwd": s, "teacher_fwd": t, "total": s + t}


def check_flops() -> list[Row]:
    f = sscl_train_flops()
    g = {k: f[k] / 1e9 for k in ("student_fwd_bwd", "teacher_fwd", "total")}
    return [Row("flops", f"FLOPs per image, SSCL-R34 train step at {f['image']} px", f"{g['total']:.1f} GFLOP",
                f"{f['student']} T={f['timesteps']} fwd+bwd {g['student_fwd_bwd']:.1f} + teacher fwd "
                f"{g['teacher_fwd']:.1f} GFLOP; torch.utils.flop_counter on meta tensors, conv/matmul only "
                f"(docs/PERFORMANCE.md: 92.9); {PEAK_BF16_FLOPS / 1e12:.0f} TFLOP/s / this = "
                f"{PEAK_BF16_FLOPS / f['total']:,.0f} img/s", "info", f)]


# ---- LIF -----------------------------------------------------------------------------------------------------------
def lif_agreement(impls: dict, shape, dev: torch.device) -> dict:
    """name -> (fraction of spikes that differ, max |dL/dx| difference) vs distsnn's reference loop, on ``dev``."""
    from lif import fwd_bwd

    g = torch.Generator().manual_seed(0)
    x = (torch.randn(shape, generator=g) * 0.5 + 0.2).to(dev).requires_grad_()
    grad = torch.randn(shape, generator=g).to(dev)
    ref_out, ref_gx = fwd_bwd(impls["distsnn reference"], x, grad)
    out = {}
    for name, fn in impls.items():
        o, gx = fwd_bwd(fn, x, grad)
        out[name] = ((o != ref_out).float().mean().item(), (gx - ref_gx).abs().max().item())
    return out


def check_lif(dev: torch.device, sz: Sizes) -> list[Row]:
    from lif import fwd_bwd, implementations

    impls = implementations()  # SpikingJelly's LIFNode holds no parameters: it runs on the tensors' device
    broken = {}
    for name, fn in list(impls.items()):  # one implementation that cannot run must not hide the others
        try:
            fwd_bwd(fn, torch.randn(2, 3, device=dev, requires_grad=True), torch.randn(2, 3, device=dev))
        except Exception as e:  # noqa: BLE001
            broken[name] = f"{type(e).__name__}: {e}"[:400]
            if name != "distsnn reference":
                del impls[name]
    agree = lif_agreement(impls, (4, 2, 3, 8, 8), dev)
    bad = {k: v for k, v in agree.items() if v[0] > 1e-4 or v[1] > 1e-3}
    rows = [Row("lif_agreement", "LIF fwd+bwd agree with distsnn's reference loop [4,2,3,8,8]",
                "agree" if not bad and not broken else "DIFFER: " + ", ".join([*bad, *broken]),
                "; ".join([f"{k}: spikes differ {m:.1e}, max|dx diff| {d:.1e}" for k, (m, d) in agree.items()]
                          + [f"{k} raised {e}" for k, e in broken.items()]),
                "ok" if not bad and not broken else "FAIL", {k: list(v) for k, v in agree.items()})]
    x = (torch.randn(sz.lif_shape, device=dev) * 0.5 + 0.2).requires_grad_()
    grad = torch.randn(sz.lif_shape, device=dev)

    def timed(fn):
        def call():
            fwd_bwd(fn, x, grad)
            _sync(dev)
        return call
    ms = interleaved_median_ms({k: timed(fn) for k, fn in impls.items()}, sz.lif_repeats, sz.lif_warmup)
    sj = ms.get("SpikingJelly 2.0 LIFNode")
    gbps = {k: 6 * 4 * x.numel() / (t / 1e3) / 1e9 for k, t in ms.items()}  # lif.py's 6 float32 passes
    from distsnn.spiking.lif_fused import compiled_state
    for name, t in ms.items():
        rid = "lif_time_" + re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")
        rows.append(Row(rid, f"LIF fwd+bwd {list(sz.lif_shape)}: {name}", f"{t:.2f} ms",
                        (f"{sj / t:.2f}x SpikingJelly; " if sj else "") + f"{gbps[name]:.3g} GB/s effective "
                        f"(6 float32 passes); fused compiled {compiled_state()}", "info",
                        {"ms": t, "shape": list(sz.lif_shape)}))
    return rows


def sj_lif_worker(backend: str, shape: tuple, repeats: int, warmup: int, device: str) -> dict:
    """In a child process with SJ_LIF_CUDA_IMPLEMENTATION=backend set before SpikingJelly is imported: agreement
    with distsnn's reference loop and the median ms of SpikingJelly's LIF fwd+bwd."""
    from harness import median_ms
    from lif import fwd_bwd, implementations

    dev = torch.device(device)
    impls = implementations()
    sj = impls["SpikingJelly 2.0 LIFNode"]
    agree = lif_agreement({"distsnn reference": impls["distsnn reference"], "sj": sj}, (4, 2, 3, 8, 8), dev)["sj"]
    x = (torch.randn(shape, device=dev) * 0.5 + 0.2).requires_grad_()
    grad = torch.randn(shape, device=dev)

    def call():
        fwd_bwd(sj, x, grad)
        _sync(dev)
    return {"backend": backend, "ms": median_ms(call, repeats, warmup), "spike_mismatch": agree[0],
            "max_dx_diff": agree[1]}


def check_sj_backends(dev: torch.device, sz: Sizes, deadline: float) -> list[Row]:
    rows = []
    for backend in sz.sj_backends:
        cmd = [sys.executable, str(Path(__file__).resolve()), "--sj-lif-worker", backend, "--device", str(dev),
               "--lif-shape", *map(str, sz.lif_shape), "--repeats", str(sz.lif_repeats),
               "--warmup", str(sz.lif_warmup)]
        env = {**os.environ, "SJ_LIF_CUDA_IMPLEMENTATION": backend, "PYTHONUNBUFFERED": "1"}
        timeout = max(5.0, min(sz.sj_timeout, deadline - time.monotonic()))
        rid, what = f"lif_sj_{backend}", f"SpikingJelly LIF, SJ_LIF_CUDA_IMPLEMENTATION={backend}"
        try:
            p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
        except subprocess.TimeoutExpired:
            rows.append(Row(rid, what, "timeout", f"no answer in {timeout:.0f} s", "FAIL"))
            continue
        chosen = sorted(set(re.findall(r"sj_lif\b.*?implementation=([\w-]+)", p.stdout + p.stderr)))
        lines = [ln for ln in p.stdout.splitlines() if ln.startswith("{")]
        if p.returncode == 0 and lines:
            r = json.loads(lines[-1])
            ok = r["spike_mismatch"] <= 1e-4 and r["max_dx_diff"] <= 1e-3
            rows.append(Row(rid, f"{what} {list(sz.lif_shape)}", f"{r['ms']:.2f} ms",
                            f"vs distsnn reference: spikes differ {r['spike_mismatch']:.1e}, max|dx diff| "
                            f"{r['max_dx_diff']:.1e}; SpikingJelly's log: implementation="
                            f"{','.join(chosen) or 'not logged'}", "info" if ok else "FAIL", r))
        else:
            tail = (p.stderr or p.stdout).strip().splitlines()[-3:]
            unavailable = any("No available" in ln or "unavailable" in ln or "requires" in ln for ln in tail)
            rows.append(Row(rid, what, "unavailable" if unavailable else f"exit {p.returncode}",
                            " / ".join(tail)[-500:], "info" if unavailable else "FAIL"))
    return rows


# ---- DALI ----------------------------------------------------------------------------------------------------------
def check_dali_decode(dev: torch.device, sz: Sizes, tmp: str) -> list[Row]:
    """Images/s of the train pipeline (decode, RandomResizedCrop 224, flip, normalise) with each decoder, batches
    delivered on ``dev`` as training consumes them."""
    from data import make_jpegs

    from distsnn.config.schema import DataConfig
    from distsnn.data import build_train_loader, prepare_dataset
    from distsnn.data.shard_writer import write_split

    d = os.path.join(tmp, "dali_jpegs")
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    write_split(make_jpegs(sz.dali_images), [str(i) for i in range(1000)], d, "train", seed=0,
                max_count=-(-sz.dali_images // 4), progress=False)
    ips = {}
    for decode in (("mixed", "cpu") if dev.type == "cuda" else ("cpu",)):
        cfg = DataConfig(train_shards=os.path.join(d, "train-*.tar"), val_shards=os.path.join(d, "train-*.tar"),
                         image_size=224, batch_size=sz.dali_batch, num_threads=sz.dali_threads, prefetch=2,
                         shuffle_buffer=256, decode_device=decode)
        info = prepare_dataset(cfg)
        loader = build_train_loader(cfg, info, 0, 1, seed=0, device=dev)
        next(iter(loader))  # warm-up: thread pools, nvJPEG handles, first allocations
        _sync(dev)
        n, t = 0, time.perf_counter()
        for _ in range(sz.dali_epochs):
            for b in loader:
                n += b.labels.numel()
        _sync(dev)
        ips[decode] = n / (time.perf_counter() - t)
    res = ", ".join(f"{k} {v:,.0f} img/s" for k, v in ips.items())
    if "mixed" in ips:
        res += f" ({ips['mixed'] / ips['cpu']:.2f}x)"
    return [Row("dali_decode", "DALI train pipeline, mixed (GPU) vs CPU JPEG decode", res,
                f"{sz.dali_images} JPEGs 500x375 (data.make_jpegs), RandomResizedCrop 224 + flip + normalise, batch "
                f"{sz.dali_batch}, {sz.dali_threads} DALI threads, {sz.dali_epochs} epochs after 1 warm-up batch, "
                f"batches on {dev}" + ("" if "mixed" in ips else "; mixed: n/a (no GPU)"), "info",
                {k: round(v, 1) for k, v in ips.items()})]


def check_dali_resume(dev: torch.device, cache: str, out_dir: str, k: int = 3) -> list[Row]:
    from distsnn.config import load
    from distsnn.data import build_train_loader, prepare_dataset

    decode = "mixed" if dev.type == "cuda" else "cpu"
    cfg = load(DEMO, tiny_run(out_dir, cache, [f"data.decode_device={decode}", "data.batch_size=16",
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
    return [Row("dali_resume", f"DALI {decode}: checkpoint after {k} batches, restore -> next batch",
                "same" if same else "DIFFERENT", f"device {want.views[0].device}, max abs diff {diff:.3g}, "
                f"labels equal {torch.equal(want.labels, got.labels)}", "ok" if same else "FAIL")]


# ---- the trainer in this process, and under the deepspeed launcher --------------------------------------------------
def check_bf16(dev: torch.device, cache: str, out_dir: str) -> list[Row]:
    from distsnn.config import load
    from distsnn.spiking.lif_fused import compiled_state
    from distsnn.train.compute_dtype import engine_conv_dtypes
    from distsnn.train.main import _preflight
    from distsnn.train.trainer import Trainer, init_distributed

    cfg = load(DEMO, tiny_run(out_dir, cache, ["run.name=gpu_check_bf16", "run.max_steps=2", "data.batch_size=16",
                                               f"run.device={dev.type}", "deepspeed.precision=bf16"]))
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
    runtime = [json.loads(line) for line in open(os.path.join(tr.run.path, "metrics.jsonl")) if '"runtime"' in line]
    rt = runtime[0] if runtime else {}
    ok_inside = tr.precision == "bf16" and inside == {"bfloat16"}
    ok_fit = rc == 0 and rt.get("conv_output_dtype") == "bfloat16" and rt.get("precision") == "bf16"
    lif = compiled_state()
    return [
        Row("bf16_engine", "bf16: conv outputs inside engine forward", ",".join(sorted(inside)),
            f"plan precision {tr.precision}; autocast only around engine (old set-up): {','.join(sorted(around))}",
            "ok" if ok_inside else "FAIL"),
        Row("bf16_fit", "bf16: fit() probe and metrics.jsonl agree", f"rc {rc}", f"runtime record {rt}",
            "ok" if ok_fit else "FAIL"),
        Row("lif_compiled", "fused LIF compiled (Triton on GPU)", str(lif),
            "False = eager fallback: see the 'LIF: torch.compile' warning", "ok" if lif else "FAIL"),
    ]


def check_deepspeed_run(dev: torch.device, sz: Sizes, cache: str, tmp: str, out: str, deadline: float) -> list[Row]:
    """A short real run: ``deepspeed --num_gpus 1 launchers/train.py --config demo_sscl.yaml`` (SSCL, random
    teacher), then its log and metrics.jsonl say whether it ran on the intended device, precision and backend."""
    from distsnn.config import load

    cuda = dev.type == "cuda"
    name = "gpu_check_deepspeed"
    runs = os.path.join(tmp, "ds_runs")
    shutil.rmtree(os.path.join(runs, name), ignore_errors=True)
    teacher = random_teacher(load(DEMO).model, os.path.join(tmp, "demo_teacher.safetensors"))
    sets = [f"run.out_dir={runs}", f"run.name={name}", f"data.cache_dir={cache}", "telemetry.enabled=false",
            "run.plots=false", "run.log_every_steps=1", f"run.max_steps={sz.ds_steps}", "run.eval_every_epochs=1000",
            f"data.batch_size={sz.ds_batch}", "data.prefetch=1", f"teacher.weights={teacher}",
            "teacher.check_accuracy=false", "checkpoint.every_epochs=1000",
            f"run.device={dev.type}", f"deepspeed.precision={'bf16' if cuda else 'fp32'}",
            f"data.decode_device={'mixed' if cuda else 'cpu'}"]
    cmd = [*deepspeed_command(), "--master_port", str(free_port()), "--num_gpus", "1", "launchers/train.py",
           "--config", DEMO, *[a for s in sets for a in ("--set", s)]]
    env = {k: v for k, v in os.environ.items() if k not in ("MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE",
                                                            "LOCAL_RANK", "LOCAL_WORLD_SIZE")}
    env.update(PATH=f"{Path(sys.executable).parent}:{env.get('PATH', '')}", PYTHONUNBUFFERED="1",
               OMP_NUM_THREADS=env.get("OMP_NUM_THREADS", "1"))
    if cuda:
        env["NCCL_DEBUG"] = "INFO"  # "NCCL INFO" lines: proof that NCCL made a communicator
    timeout = max(10.0, min(sz.ds_timeout, deadline - time.monotonic()))
    log_path = os.path.join(out, "deepspeed_run.log")
    t = time.monotonic()
    with open(log_path, "w") as log:
        log.write("$ " + " ".join(cmd) + "\n")
        log.flush()
        try:
            rc = subprocess.run(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, timeout=timeout,
                                start_new_session=True).returncode
        except subprocess.TimeoutExpired:
            rc = None
    wall = time.monotonic() - t
    text = Path(log_path).read_text(errors="replace")
    run_path = Path(runs) / name
    recs = ([json.loads(ln) for ln in (run_path / "metrics.jsonl").read_text().splitlines() if ln.strip()]
            if (run_path / "metrics.jsonl").exists() else [])
    steps = {r["step"]: r for r in recs if r.get("kind") == "step"}
    rt = next((r for r in recs if r.get("kind") == "runtime"), {})
    finite = all(math.isfinite(r["loss"]["total"]) for r in steps.values())
    plan = re.search(r"plan: .*device=(\w+).*precision=(\w+)", text)
    nccl_lines = len(re.findall(r"NCCL INFO", text))
    backend = "nccl" if nccl_lines else ("gloo" if plan and plan.group(1) == "cpu" else "unknown")
    want = {"device": dev.type, "backend": "nccl" if cuda else "gloo", "precision": "bf16" if cuda else "fp32"}
    problems = []
    if rc != 0:
        problems.append("timed out" if rc is None else f"exit {rc}")
    if sorted(steps) != list(range(1, sz.ds_steps + 1)):
        problems.append(f"steps logged {sorted(steps)[:3]}..{sorted(steps)[-1:]} of {sz.ds_steps}")
    if not finite:
        problems.append("non-finite loss")
    if "[distsnn] done:" not in text:
        problems.append("no 'done:' line")
    if not plan or plan.group(1) != want["device"]:
        problems.append(f"plan device {plan.group(1) if plan else '?'}")
    if backend != want["backend"]:
        problems.append(f"backend {backend}")
    if rt.get("precision") != want["precision"] or (cuda and rt.get("conv_output_dtype") != "bfloat16"):
        problems.append(f"runtime record {rt}")
    if cuda and rt.get("lif_compiled") is not True:
        problems.append("fused LIF not compiled")
    ips = [r["images_per_s"] for s, r in sorted(steps.items()) if s > 2]
    ips_med = statistics.median(ips) if ips else float("nan")
    where = ("NCCL (" + str(nccl_lines) + " 'NCCL INFO' lines)" if backend == "nccl"
             else "gloo (device cpu: init_distributed takes gloo)" if backend == "gloo" else "backend unknown")
    return [Row("deepspeed_run", f"deepspeed --num_gpus 1 launchers/train.py --config {DEMO} (SSCL, random teacher)",
                "finished" if not problems else "; ".join(problems),
                f"{len(steps)} steps of batch {sz.ds_batch} in {wall:.0f} s wall (launch included), {where}, "
                f"runtime {({k: rt.get(k) for k in ('precision', 'conv_output_dtype', 'lif_compiled')})}, "
                f"median {ips_med:,.0f} img/s after step 2 (16 px digits), last loss "
                f"{steps[max(steps)]['loss']['total'] if steps else float('nan'):.4f}; log: deepspeed_run.log",
                "ok" if not problems else "FAIL",
                {"rc": rc, "steps": len(steps), "backend": backend, "runtime": rt, "images_per_s": ips_med,
                 "wall_s": round(wall, 1), "log_tail": text[-2000:]})]


# ---- SSCL-R34 step, fp32 vs bf16, share of the bound ----------------------------------------------------------------
class SSCLStep:
    """The ImageNet SSCL-R34 recipe's train step outside DeepSpeed: student + frozen teacher + objective, the
    trainer's ``TrainModule`` (autocast inside), the recipe's SGD and gradient clipping. ``step(x, y)`` -> loss."""

    def __init__(self, dev: torch.device, sz: Sizes, teacher_path: str, bf16: bool, seed: int = 0):
        from distsnn.config import load
        from distsnn.losses import build_objective
        from distsnn.models import build_student, build_teacher
        from distsnn.train.optim import build_optimizer
        from distsnn.train.trainer import TrainModule

        self.cfg = cfg = load(RECIPE, [f"model.width_multiplier={sz.width}", f"data.image_size={sz.image}",
                                       f"teacher.weights={teacher_path}", f"run.device={dev.type}"])
        self.dev, self.bf16 = dev, bf16
        torch.manual_seed(seed)
        self.student = build_student(cfg.model).to(dev)
        self.teacher = build_teacher(cfg.teacher, cfg.model).to(dev)
        objective = build_objective(cfg.method, self.student.feature_channels, self.teacher.feature_channels,
                                    num_data=1_281_167, timesteps=cfg.model.timesteps).to(dev)
        self.module = TrainModule(self.student, objective, dev.type, torch.bfloat16 if bf16 else None).train()
        self.opt = build_optimizer([self.module], cfg.optim, cfg.optim.lr)

    def step(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        """One step on images ``x [B, 3, H, W]``, labels ``y [B]`` -> the loss components (detached, on device;
        "total" included)."""
        with torch.no_grad(), torch.autocast(self.dev.type, dtype=torch.bfloat16, enabled=self.bf16):
            t_out = self.teacher(x, return_features=True)
        out = self.module([x], y, t_out)
        out.total.backward()
        torch.nn.utils.clip_grad_norm_(self.module.parameters(), self.cfg.optim.grad_clip)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        return {**out.components, "total": out.total.detach()}


def teacher_file(sz: Sizes, tmp: str) -> str:
    from distsnn.config import load

    path = os.path.join(tmp, f"sscl_r34_teacher_w{sz.width}.safetensors")
    if not os.path.exists(path):
        random_teacher(load(RECIPE, [f"model.width_multiplier={sz.width}"]).model, path)
    return path


def batches(n: int, batch: int, image: int, dev: torch.device, seed: int = 0) -> list[tuple]:
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(batch, 3, image, image, generator=g).to(dev), torch.randint(0, 1000, (batch,), generator=g)
             .to(dev)) for _ in range(n)]


def check_sscl_step(dev: torch.device, sz: Sizes, tmp: str, index: int) -> list[Row]:
    batch = sz.sscl_batches[index]
    rid = f"sscl_r34_step_{index + 1}"
    s = SSCLStep(dev, sz, teacher_file(sz, tmp), bf16=True)
    x, y = batches(1, batch, sz.image, dev)[0]
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    for _ in range(sz.sscl_warmup):
        s.step(x, y)
    _sync(dev)
    times, losses = [], []
    for _ in range(sz.sscl_steps):
        t = time.perf_counter()
        losses.append(s.step(x, y))
        _sync(dev)
        times.append(time.perf_counter() - t)
    ms = 1e3 * statistics.median(times)
    ips = batch / (ms / 1e3)
    peak = torch.cuda.max_memory_allocated(dev) / 2**30 if dev.type == "cuda" else None
    finite = all(math.isfinite(v["total"].item()) for v in losses)
    from distsnn.spiking.lif_fused import compiled_state
    return [Row(rid, f"SSCL-R34 train step, bf16, batch {batch}, {sz.image} px", f"{ips:,.1f} img/s",
                f"median {ms:.1f} ms/step of {sz.sscl_steps} after {sz.sscl_warmup} warm-up; peak memory "
                + (f"{peak:.1f} GiB (max_memory_allocated)" if peak is not None else "n/a (CPU)")
                + f"; width {sz.width}, T={s.cfg.model.timesteps}, fused LIF compiled {compiled_state()}, "
                f"losses finite {finite}", "info" if finite else "FAIL",
                {"batch": batch, "image": sz.image, "ms": ms, "images_per_s": ips, "peak_gib": peak})]


def check_share(report: Report, dev: torch.device) -> list[Row]:
    f, step = report.row("flops"), report.row("sscl_r34_step_1")
    if f is None or f.verdict == "FAIL" or step is None or step.verdict == "FAIL":
        raise RuntimeError("needs the flops and sscl_r34_step_1 rows, which failed")
    flops, ips = f.data["total"], step.data["images_per_s"]
    peak_ips = PEAK_BF16_FLOPS / flops
    share, mfu = ips / BOUND_IMAGES_PER_S, ips * flops / PEAK_BF16_FLOPS
    where = "" if dev.type == "cuda" and step.data["image"] == 224 else " (CPU mode: tiny sizes, meaningless)"
    return [Row("share_of_bound", f"share of the ~{BOUND_IMAGES_PER_S:,} img/s H100 bound (SSCL-R34, batch "
                f"{step.data['batch']})", f"{share:.1%}{where}",
                f"{ips:,.1f} img/s measured; ~{BOUND_IMAGES_PER_S:,} = the issue's figure (989 TFLOP/s at "
                f"{PEAK_BF16_FLOPS / BOUND_IMAGES_PER_S / 1e9:.0f} GFLOP/img); with the {flops / 1e9:.1f} GFLOP/img "
                f"counted here the peak is {peak_ips:,.0f} img/s: {ips / peak_ips:.1%} of it, i.e. "
                f"{mfu * PEAK_BF16_FLOPS / 1e12:.1f} TFLOP/s of 989 (H100 SXM dense bf16; the H200's is the same)",
                "info", {"share_of_8500": share, "flops_per_image": flops, "peak_images_per_s": peak_ips,
                         "mfu": mfu})]


@contextlib.contextmanager
def no_tf32():
    """True fp32 on the GPU: cuDNN convolutions default to TF32 (10-bit mantissa) unless told otherwise."""
    old = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = old


def check_fp32_vs_bf16(dev: torch.device, sz: Sizes, tmp: str, tol: float) -> list[Row]:
    """The verdict rests on the first step (same weights, same batch): the CE and every layer's NCE term within
    ``tol``. The total is reported, not judged: it weighs the NCE terms by lambda = 1/CKA (clipped at 1/cka_min),
    and the unbiased-HSIC CKA of one small batch of an untrained net is noise, which 1/CKA amplifies."""
    data = batches(sz.cmp_steps, sz.cmp_batch, sz.image, dev, seed=1)
    comps = {}
    for name, bf16 in (("fp32", False), ("bf16", True)):
        s = SSCLStep(dev, sz, teacher_file(sz, tmp), bf16=bf16, seed=0)  # same initial weights
        with no_tf32() if not bf16 else contextlib.nullcontext():
            comps[name] = [{k: v.item() for k, v in s.step(x, y).items()} for x, y in data]
        del s
        _release_memory()
    rel = lambda a, b: abs(b - a) / max(abs(a), 1e-12)  # noqa: E731
    first32, first16 = comps["fp32"][0], comps["bf16"][0]
    judged = {k: rel(first32[k], first16[k]) for k in first32 if k == "ce" or k.startswith("nce.")}
    total = [rel(a["total"], b["total"]) for a, b in zip(comps["fp32"], comps["bf16"])]
    finite = all(math.isfinite(v) for c in comps.values() for step in c for v in step.values())
    worst = max(judged, key=judged.get)
    ok = finite and judged[worst] <= tol
    side = " / ".join(f"{a['total']:.4f} vs {b['total']:.4f}" for a, b in zip(comps["fp32"], comps["bf16"]))
    rels = ", ".join(f"{r:.1e}" for r in total)
    return [Row("fp32_vs_bf16", f"SSCL-R34 losses, fp32 (TF32 off) vs bf16, same init and {sz.cmp_steps} batches "
                f"of {sz.cmp_batch}", f"step 1: CE and NCE terms within {judged[worst]:.1e} (worst {worst}); total "
                f"{total[0]:.1e}", f"total loss per step fp32 vs bf16: {side} (rel {rels}); step 1 CE "
                f"{first32['ce']:.4f} vs {first16['ce']:.4f}; ok: all finite and step 1's CE and NCE "
                f"terms within {tol:g} (the total weighs them by 1/CKA, noisy at small batches; later steps drift "
                "as the weights part)", "ok" if ok else "FAIL",
                {"fp32": comps["fp32"], "bf16": comps["bf16"], "rel_judged_step1": judged, "rel_total": total})]


# ---- channels_last ---------------------------------------------------------------------------------------------------
def check_channels_last(dev: torch.device, sz: Sizes) -> list[Row]:
    from distsnn.config.schema import ModelConfig
    from distsnn.models import build_student
    from distsnn.spiking.lif_fused import compiled_state

    cfg = ModelConfig(name="spiking_resnet18", num_classes=1000, timesteps=4)
    x = torch.randn(sz.cl_batch, 3, sz.image, sz.image, device=dev)
    y = torch.randint(0, 1000, (sz.cl_batch,), device=dev)
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
            _sync(dev)
        fns[fmt] = step
    ms = interleaved_median_ms(fns, repeats=sz.cl_steps, warmup=sz.cl_warmup)
    ratio = ms["contiguous"] / ms["channels_last"]
    return [Row(f"channels_last_{fmt}", f"step time spiking_resnet18 T=4 B={sz.cl_batch} {sz.image}px bf16: {fmt}",
                f"{ms[fmt]:.1f} ms", f"contiguous / channels_last = {ratio:.2f}x; fused LIF compiled "
                f"{compiled_state()}", "info", {"ms": ms[fmt]}) for fmt in ms]


# ---- report ----------------------------------------------------------------------------------------------------------
def cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def write_outputs(report: Report, dev: torch.device, mode: str, json_path: str, md_path: str, sz: Sizes) -> None:
    gpu = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "none (--cpu-smoke)"
    for path in (json_path, md_path):
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    doc = {"mode": mode, "device": gpu, "torch": torch.__version__, "cuda": torch.version.cuda,
           "elapsed_s": round(report.elapsed(), 1),
           "budget_s": report.budget_s if math.isfinite(report.budget_s) else None, "sizes": asdict(sz),
           "failed": [r.id for r in report.rows if r.verdict == "FAIL"], "checks": [asdict(r) for r in report.rows]}
    with open(json_path, "w") as f:
        json.dump(doc, f, indent=1, default=str)
    notes = [f"GPU: {gpu}; torch {torch.__version__} (CUDA {torch.version.cuda}); mode {mode}; "
             f"{report.elapsed():.0f} s in all (" + (f"budget {report.budget_s:.0f} s" if math.isfinite(report.budget_s)
                                                    else "no time budget") + ").",
             "`benchmarks/gpu_check.py` (checks and method: its docstring); JSON: gpu_check.json."]
    rows = [[cell(r.id), cell(r.check), cell(r.result), cell(r.detail), r.verdict, f"{r.seconds:.0f}"]
            for r in report.rows]
    emit_table_report(notes, ["id", "check", "result", "detail", "verdict", "s"], rows, md_path)


def run_all(dev: torch.device, sz: Sizes, a) -> Report:
    rep = Report(a.budget_s)
    cache = os.path.join(a.cache, "data")
    out_dir = os.path.join(a.cache, "runs")
    tmp = os.path.join(a.cache, "tmp")
    os.makedirs(tmp, exist_ok=True)
    os.makedirs(a.out, exist_ok=True)
    deadline = lambda: rep.t0 + rep.budget_s  # noqa: E731
    rep.run("env", ["env"], check_env, dev)
    rep.run("flops", ["flops"], check_flops)
    rep.run("lif", ["lif_agreement"], check_lif, dev, sz)
    rep.run("dali_decode", ["dali_decode"], check_dali_decode, dev, sz, tmp)
    rep.run("dali_resume", ["dali_resume"], check_dali_resume, dev, cache, out_dir)
    rep.run("bf16", ["bf16_engine", "bf16_fit", "lif_compiled"], check_bf16, dev, cache, out_dir)
    rep.run("deepspeed_run", ["deepspeed_run"], check_deepspeed_run, dev, sz, cache, tmp, a.out, deadline())
    for i in range(len(sz.sscl_batches)):
        rep.run("sscl_r34_step", [f"sscl_r34_step_{i + 1}"], check_sscl_step, dev, sz, tmp, i)
    rep.run("share", ["share_of_bound"], check_share, rep, dev)
    rep.run("fp32_vs_bf16", ["fp32_vs_bf16"], check_fp32_vs_bf16, dev, sz, tmp, a.fp32_bf16_tol)
    rep.run("lif_sj", [f"lif_sj_{b}" for b in sz.sj_backends], check_sj_backends, dev, sz, deadline())
    rep.run("channels_last", ["channels_last_contiguous", "channels_last_channels_last"], check_channels_last,
            dev, sz)
    return rep


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=None, help="folder for gpu_check.json, gpu_check.md, deepspeed_run.log "
                   "(default <cache>/report)")
    p.add_argument("--json", default=None, help="write the JSON here instead of <out>/gpu_check.json")
    p.add_argument("--markdown", default=None, help="write the markdown here instead of <out>/gpu_check.md")
    p.add_argument("--cache", default=os.path.join(tempfile.gettempdir(), "distsnn-gpu-check"),
                   help="data (digits shards, JPEGs), run folders, teacher files")
    p.add_argument("--budget-s", type=float, default=None, help="stop starting checks past this (default 480 on "
                   "the GPU, unlimited with --cpu-smoke)")
    p.add_argument("--fp32-bf16-tol", type=float, default=0.05, help="largest relative difference of the first "
                   "step's loss, bf16 vs fp32")
    p.add_argument("--cpu-smoke", action="store_true", help="the same code on the CPU at tiny sizes (CPU decode, "
                   "gloo), to check the script itself; proves nothing about the GPU")
    # the SpikingJelly backend worker (a child process of the lif_sj check)
    p.add_argument("--sj-lif-worker", default=None, help=argparse.SUPPRESS)
    p.add_argument("--device", default="cpu", help=argparse.SUPPRESS)
    p.add_argument("--lif-shape", type=int, nargs="+", default=None, help=argparse.SUPPRESS)
    p.add_argument("--repeats", type=int, default=10, help=argparse.SUPPRESS)
    p.add_argument("--warmup", type=int, default=3, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.sj_lif_worker:
        print(json.dumps(sj_lif_worker(a.sj_lif_worker, tuple(a.lif_shape), a.repeats, a.warmup, a.device)))
        return 0
    if a.cpu_smoke:
        dev, sz, mode = torch.device("cpu"), Sizes.cpu(), "cpu-smoke"
    elif not torch.cuda.is_available():
        print("gpu_check: no usable GPU (torch.cuda.is_available() is False); run it on a GPU node, or use "
              "--cpu-smoke", file=sys.stderr)
        return 78
    else:
        dev, sz, mode = torch.device("cuda", 0), Sizes(), "gpu"
        torch.cuda.set_device(dev)
    a.budget_s = a.budget_s if a.budget_s is not None else (math.inf if a.cpu_smoke else 480.0)
    a.out = a.out or os.path.join(a.cache, "report")
    json_path = a.json or os.path.join(a.out, "gpu_check.json")
    md_path = a.markdown or os.path.join(a.out, "gpu_check.md")
    rep = run_all(dev, sz, a)
    write_outputs(rep, dev, mode, json_path, md_path, sz)
    print(f"\nwrote {json_path} and {md_path}; {rep.elapsed():.0f} s", flush=True)
    return 1 if any(r.verdict == "FAIL" for r in rep.rows) else 0


if __name__ == "__main__":
    sys.exit(main())
