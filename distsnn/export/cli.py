"""``launchers/export.py RUN_DIR --format nir|onnx [--out PATH]``: a finished run -> a deployable artefact.

Writes ``RUN_DIR/model.nir`` (NIR, HDF5) or ``RUN_DIR/model.onnx`` unless ``--out`` says where, then prints what
it wrote and how close the artefact is to the trained network on random images. Exit codes as the trainer's:
0 written, 78 the run cannot be exported as asked (no weights, an ANN to NIR, an unsupported construct: named).
"""
from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

import numpy as np
import torch

from distsnn.train.exit_codes import CONFIG_ERROR, OK

from .run_model import ExportError, load_run

FORMATS = {"nir": "model.nir", "onnx": "model.onnx"}


def _size(path: Path) -> str:
    n = path.stat().st_size
    return f"{n / 1e6:.1f} MB" if n >= 1e6 else f"{n / 1e3:.0f} kB"


def export_run(run_dir: str | Path, fmt: str, out: str | Path | None = None, images: int = 4, seed: int = 0) -> Path:
    """Export the run and print two lines: what was written, and the equivalence figure on ``images`` images."""
    if fmt not in FORMATS:
        raise ExportError(f"--format: {fmt!r} is not one of {list(FORMATS)}")
    run = load_run(run_dir, implementation="reference")  # same dynamics as the fused kernel, no compile step
    out = Path(out) if out is not None else run.run_dir / FORMATS[fmt]
    x = torch.randn(images, run.in_chans, run.image_size, run.image_size, generator=torch.Generator().manual_seed(seed))
    if fmt == "nir":
        import nir

        from .equivalence import nir_equivalence, nir_figure
        from .nir_export import DT, export_nir, to_nir

        graph = export_nir(run.model, run.image_size, out, metadata={"model": run.name})
        kinds = [type(n).__name__ for n in graph.nodes.values()]
        neurons = ", ".join(f"{kinds.count(k)} {k}" for k in ("LIF", "IF", "Threshold") if k in kinds)
        print(f"wrote {out} (NIR {nir.version}, {len(graph.nodes)} nodes, {len(graph.edges)} edges: {neurons}; "
              f"dt = {DT:g} step, forward Euler, T = {run.timesteps}; {_size(out)})")
        exact64 = copy.deepcopy(run.model).double()
        exact = nir_equivalence(exact64, to_nir(exact64, run.image_size, np.float64), x.double())
        print(nir_figure(exact, nir_equivalence(run.model, nir.read(out), x)))
    else:
        from .equivalence import onnx_equivalence
        from .onnx_export import OPSET, export_onnx

        export_onnx(run.model, run.image_size, out)
        k = run.model.num_classes
        shape = f"[{run.timesteps}, batch, {k}]" if run.spiking else f"[batch, {k}]"
        print(f"wrote {out} (ONNX opset {OPSET}, input image [batch, {run.in_chans}, {run.image_size}, "
              f"{run.image_size}], output logits {shape}; {_size(out)})")
        print(onnx_equivalence(run.model, out, x)[1])
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="launchers/export.py", description=__doc__.split("\n\n")[0])
    p.add_argument("run_dir", metavar="RUN_DIR", help="a finished run: config.yaml + model.safetensors")
    p.add_argument("--format", required=True, choices=sorted(FORMATS), help="nir: neuromorphic hardware; onnx: "
                   "inference servers")
    p.add_argument("--out", default=None, help="output file (default RUN_DIR/model.nir or RUN_DIR/model.onnx)")
    args = p.parse_args(argv)
    try:
        export_run(args.run_dir, args.format, args.out)
    except ExportError as e:
        print(f"export: error: {e}", file=sys.stderr)
        return CONFIG_ERROR
    return OK
