"""A finished run directory -> the trained network: ``<run>/config.yaml`` (resolved) + ``<run>/model.safetensors``."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml
from torch import nn

from distsnn.config import ConfigError
from distsnn.config.loader import _build
from distsnn.config.schema import Config
from distsnn.models import build_student, load_weights


class ExportError(ValueError):
    """An input that cannot be exported as asked; the message names the culprit (file, key or module)."""


@dataclass
class RunModel:
    """The trained network of a run, in eval mode, with what an exporter needs to know about its input."""

    model: nn.Module        # distsnn ResNet, eval mode, float32, on the CPU
    name: str               # model.name of the run (e.g. spiking_resnet20)
    image_size: int         # data.image_size: the network's input is [B, in_chans, image_size, image_size]
    in_chans: int
    timesteps: int          # T (1 for an ANN)
    spiking: bool
    run_dir: Path


def load_run(run_dir: str | Path, implementation: str | None = None) -> RunModel:
    """Build the run's student from its resolved ``config.yaml`` and load ``model.safetensors`` strictly.

    ``implementation`` overrides ``model.neuron.implementation`` (``"reference"``: the plain LIF loop, any dtype).
    The resolved file holds every key, so it is rebuilt with the schema's type and range checks but without the
    recipe-relevance rule (that rule is for hand-written recipes; a resolved file lists defaults too).
    """
    run_dir = Path(run_dir).expanduser()
    if not run_dir.is_dir():
        raise ExportError(f"{run_dir}: not a run directory (no such directory)")
    cfg_path, weights = run_dir / "config.yaml", run_dir / "model.safetensors"
    if not cfg_path.is_file():
        raise ExportError(f"{run_dir}: no config.yaml (the resolved config a training run writes first)")
    if not weights.is_file():
        raise ExportError(f"{run_dir}: no model.safetensors (a run writes it when training ends; "
                          "an unfinished run has only checkpoints/)")
    try:
        doc = yaml.safe_load(cfg_path.read_text())
    except yaml.YAMLError as e:
        raise ExportError(f"{cfg_path}: not valid YAML: {e}") from e
    if not isinstance(doc, dict) or not isinstance(doc.get("config"), dict):
        raise ExportError(f"{cfg_path}: no 'config' mapping: not a resolved run config (code_version, config_hash, "
                          "config)")
    try:
        cfg: Config = _build(Config, doc["config"], "", str(cfg_path))
    except ConfigError as e:
        raise ExportError(str(e)) from e
    if implementation is not None:
        cfg.model.neuron.implementation = implementation
    ann = cfg.method.name == "ann"
    model = build_student(cfg.model, ann=ann)
    try:
        load_weights(model, weights, what="model.safetensors")
    except ValueError as e:
        raise ExportError(str(e)) from e
    model.eval()
    return RunModel(model=model, name=cfg.model.name, image_size=cfg.data.image_size, in_chans=model.in_chans,
                    timesteps=model.timesteps, spiking=model.spiking, run_dir=run_dir)
