"""LIF forward+backward on CPU: distsnn fast kernel vs reference loop vs SpikingJelly 2.0, in one run.

All three run the same dynamics (SSCL Eq.2-3): U_pre[t] = 0.25 U[t-1] + x[t], spike at U_pre >= 0.5, hard reset
to 0, gradient through the reset, sigmoid surrogate with alpha = 4 (SpikingJelly's ``surrogate.Sigmoid()``, our
``surrogate="sigmoid", width=4``). SpikingJelly: ``LIFNode(tau=4/3, decay_input=False, v_threshold=0.5,
v_reset=0.0)`` in multi-step mode, its state reset with ``functional.reset_net`` before every call.

Reported per implementation and shape ``[T, B, C, H, W]``: median ms of one forward+backward (after warm-up;
the fast kernel compiles on its first call), bytes saved for backward (unique storages, inputs included when an
implementation saves them), and the distance to the memory-traffic bound: 6 float32 passes over ``[T, N]``
(forward reads x, writes spikes and U_pre; backward reads dL/dO and U_pre, writes dL/dx) at the memcpy bandwidth
measured at the start of the run.

Run: ``.venv/bin/python benchmarks/lif.py [--repeats 10] [--warmup 3] [--markdown out.md]``
"""
from __future__ import annotations

import argparse
import sys

import torch

from harness import SavedBytes, emit_table_report, interleaved_median_ms, memcpy_bandwidth

from distsnn.spiking import lif_fused, lif_reference

DECAY, THRESHOLD, SURROGATE, ALPHA = 0.25, 0.5, "sigmoid", 4.0
SHAPES = [(4, 32, 64, 32, 32), (4, 8, 64, 56, 56)]  # second: ResNet-34 layer 1 at 224x224, B = 8
TRAFFIC_PASSES = 6  # float32 [T, N] passes of one fwd+bwd of a kernel that saves only U_pre


def implementations() -> dict:
    """name -> fn(x [T, ...]) -> spikes [T, ...]; SpikingJelly only when it is installed."""
    impls = {
        "distsnn fast": lambda x: lif_fused(x, DECAY, THRESHOLD, SURROGATE, ALPHA),
        "distsnn reference": lambda x: lif_reference(x, DECAY, THRESHOLD, SURROGATE, ALPHA),
    }
    try:
        from spikingjelly.activation_based import functional, neuron, surrogate
    except ImportError:
        print("spikingjelly is not installed: its row is left out", file=sys.stderr)
        return impls
    # tau = 4/3 with decay_input=False: H = V - V/tau + X = 0.25 V + X
    node = neuron.LIFNode(tau=4.0 / 3.0, decay_input=False, v_threshold=THRESHOLD, v_reset=0.0,
                          surrogate_function=surrogate.Sigmoid(alpha=ALPHA), detach_reset=False, step_mode="m")

    def sj(x):
        functional.reset_net(node)  # the membrane of the previous call must not leak into this one
        return node(x)

    impls["SpikingJelly 2.0 LIFNode"] = sj
    return impls


def fwd_bwd(fn, x: torch.Tensor, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    out = fn(x)
    (gx,) = torch.autograd.grad(out, x, grad)
    return out, gx


def check_agreement(impls: dict, shape) -> str:
    """Spike mismatch fraction and max |dL/dx| difference of every implementation vs the reference loop."""
    g = torch.Generator().manual_seed(0)
    x = (torch.randn(shape, generator=g) * 0.5 + 0.2).requires_grad_()
    grad = torch.randn(shape, generator=g)
    ref_out, ref_gx = fwd_bwd(impls["distsnn reference"], x, grad)
    notes = []
    for name, fn in impls.items():
        out, gx = fwd_bwd(fn, x, grad)
        mismatch = (out != ref_out).float().mean().item()
        notes.append(f"{name}: spikes differ on {mismatch:.1e} of elements, max|dx diff| "
                     f"{(gx - ref_gx).abs().max().item():.1e}")
    return "; ".join(notes)


def main(argv=None) -> str:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    p.add_argument("--markdown", default=None, help="also write the report (markdown) to this file")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    impls = implementations()
    bandwidth = memcpy_bandwidth()
    print(f"memcpy bandwidth: {bandwidth / 1e9:.2f} GB/s (read + write)", flush=True)
    agreement = check_agreement(impls, (4, 2, 3, 8, 8))
    print("agreement vs reference:", agreement, flush=True)

    rows = []
    for shape in SHAPES:
        x = (torch.randn(shape) * 0.5 + 0.2).requires_grad_()
        grad = torch.randn(shape)
        numel = x.numel()
        bound_ms = 1e3 * TRAFFIC_PASSES * 4 * numel / bandwidth
        saved = {}
        for name, fn in impls.items():
            with SavedBytes() as counter:
                out = fn(x)
            saved[name] = counter.nbytes
            del out
        ms = interleaved_median_ms({name: (lambda fn=fn: fwd_bwd(fn, x, grad)) for name, fn in impls.items()},
                                   args.repeats, args.warmup)
        results = {name: (ms[name], saved[name]) for name in impls}
        for name, (t, nbytes) in results.items():
            print(f"{name:26s} {str(list(shape)):22s} {t:9.2f} ms  saved {nbytes / 2**20:8.1f} MiB", flush=True)
        sj = results.get("SpikingJelly 2.0 LIFNode")
        for name, (ms, nbytes) in results.items():
            rows.append([name, str(list(shape)), f"{ms:.2f}",
                         f"{sj[0] / ms:.2f}x" if sj else "n/a",
                         f"{nbytes / 2**20:.1f}",
                         f"{nbytes / sj[1]:.2f}" if sj else "n/a",
                         f"{ms / bound_ms:.1f}x ({bound_ms:.2f} ms)"])

    header = ["implementation", "shape [T,B,C,H,W]", "fwd+bwd ms (median)", "speed-up vs SJ",
              "saved for bwd (MiB)", "saved / SJ", "time / traffic bound (bound ms)"]
    return emit_table_report([
        f"memcpy bandwidth {bandwidth / 1e9:.2f} GB/s; bound = {TRAFFIC_PASSES} float32 passes over [T, N]; "
        f"median of {args.repeats} rounds (implementations interleaved) after {args.warmup} warm-up rounds; "
        "sigmoid surrogate alpha 4; saved = unique storages packed by autograd, inputs included.",
        f"Agreement on a small input: {agreement}.",
    ], header, rows, args.markdown)


if __name__ == "__main__":
    main()
