"""YAML -> typed ``Config``: strict keys, types, choices and ranges; ``--set a.b=c`` overrides.

Every error is a ``ConfigError`` whose message starts with ``<file>: <dotted.key>:``.
"""
from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import typing
from pathlib import Path

import yaml

from .relevance import check_relevance, check_tcl_layers
from .schema import FEATURE_LAYERS, Config

CONFIGS_DIR = Path(__file__).resolve().parents[2] / "configs"


class ConfigError(ValueError):
    """A config problem; the message names the file and the dotted key."""


def resolve_path(name: str | Path) -> Path:
    """A path as given if it exists, else a bare file name looked up under ``configs/``."""
    p = Path(name).expanduser()
    if p.exists():
        return p
    for cand in (CONFIGS_DIR / p.name, CONFIGS_DIR / f"{p.name}.yaml"):
        if p.parent == Path(".") and cand.exists():
            return cand
    raise ConfigError(f"{name}: config file not found (looked as a path and under {CONFIGS_DIR})")


def _coerce(value, typ, where: str):
    """Check ``value`` against the annotation ``typ``; ints are accepted where floats are."""
    origin = typing.get_origin(typ)
    if origin is typing.Literal:
        choices = typing.get_args(typ)
        if value not in choices:
            raise ConfigError(f"{where}: {value!r} is not one of {list(choices)}")
        return value
    if typ is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true/false, got {value!r}")
        return value
    if typ is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if typ is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if typ is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    if typ is list:
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        return list(value)
    raise ConfigError(f"{where}: unsupported type {typ}")


def _check_range(value, meta, where: str):
    for key, ok, word in (("ge", lambda v, b: v >= b, ">="), ("gt", lambda v, b: v > b, ">"),
                          ("le", lambda v, b: v <= b, "<="), ("lt", lambda v, b: v < b, "<")):
        if key in meta and not ok(value, meta[key]):
            raise ConfigError(f"{where}: {value!r} must be {word} {meta[key]}")


def _build(cls, data: dict, prefix: str, source: str):
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: {prefix or '<top level>'}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        key = f"{prefix}{unknown[0]}"
        raise ConfigError(f"{source}: {key}: unknown key (known here: {', '.join(sorted(fields))})")
    kwargs = {}
    for name, value in data.items():
        where = f"{source}: {prefix}{name}"
        typ = hints[name]
        if dataclasses.is_dataclass(typ):
            kwargs[name] = _build(typ, value, f"{prefix}{name}.", source)
        else:
            kwargs[name] = _coerce(value, typ, where)
            _check_range(kwargs[name], fields[name].metadata, where)
    return cls(**kwargs)


def _parse_override(text: str, source: str) -> tuple[list[str], object]:
    if "=" not in text:
        raise ConfigError(f"{source}: {text!r}: an override must look like a.b=c")
    key, raw = text.split("=", 1)
    return key.strip().split("."), yaml.safe_load(raw) if raw.strip() else ""


def _semantic_checks(cfg: Config, source: str) -> None:
    """Checks that span several keys."""
    for key, layers in (("method.tcl.layers", cfg.method.tcl.layers), ("method.sscl.layers", cfg.method.sscl.layers)):
        bad = [x for x in layers if x not in FEATURE_LAYERS]
        if bad or not layers:
            raise ConfigError(f"{source}: {key}: {bad or layers!r} not a non-empty subset of {list(FEATURE_LAYERS)}")
    for key, vals in (("data.augment.mean", cfg.data.augment.mean), ("data.augment.std", cfg.data.augment.std)):
        if len(vals) != 3 or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in vals):
            raise ConfigError(f"{source}: {key}: expected 3 numbers, got {vals!r}")
    if any(v <= 0 for v in cfg.data.augment.std):
        raise ConfigError(f"{source}: data.augment.std: every value must be > 0")
    if cfg.data.source == "shards":
        for key in ("train_shards", "val_shards"):
            if not getattr(cfg.data, key):
                raise ConfigError(f"{source}: data.{key}: required when data.source is 'shards'")
    if cfg.data.val_resize < cfg.data.image_size:
        raise ConfigError(f"{source}: data.val_resize: {cfg.data.val_resize} must be >= data.image_size ({cfg.data.image_size})")
    if cfg.data.augment.cutout > cfg.data.image_size:
        raise ConfigError(f"{source}: data.augment.cutout: {cfg.data.augment.cutout} exceeds data.image_size "
                          f"({cfg.data.image_size}): the square would erase the whole view")
    if cfg.method.name in ("sscl", "sscl+stcl") and not cfg.teacher.weights:
        raise ConfigError(f"{source}: teacher.weights: method {cfg.method.name!r} needs a teacher weights file")
    if cfg.deepspeed.precision == "fp16":  # DeepSpeed would halve the weights while DALI's images stay float32
        raise ConfigError(f"{source}: deepspeed.precision: 'fp16' is not supported (it needs autocast plus a "
                          "dynamic loss scaler, which distsnn does not wire in); use bf16 or auto (bf16 on GPU)")
    if cfg.data.train_fraction < 1.0 and cfg.data.source not in ("digits", "event_digits"):
        raise ConfigError(f"{source}: data.train_fraction: only the embedded digits data can be subsampled")


def load(name: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Load and validate a config; ``name`` is a path or a bare file name under ``configs/``."""
    path = resolve_path(name)
    source = str(path)
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{source}: not valid YAML: {e}") from e
    recipe = copy.deepcopy(data)
    for text in overrides:
        keys, value = _parse_override(text, f"{source} (--set {text})")
        node = data
        for k in keys[:-1]:
            node = node.setdefault(k, {})
            if not isinstance(node, dict):
                raise ConfigError(f"{source} (--set {text}): {'.'.join(keys)}: {k} is not a section")
        node[keys[-1]] = value
    cfg = _build(Config, data, "", source)
    _semantic_checks(cfg, source)
    # The recipe may hold no key that its own method (data source, ...) ignores; --set overrides derive variants of
    # it (another method.name, telemetry off) and are not held to that. See distsnn/config/relevance.py.
    check_relevance(_build(Config, recipe, "", source) if overrides else cfg, recipe, source, ConfigError)
    check_tcl_layers(cfg, source, ConfigError)
    return cfg


def to_dict(cfg: Config) -> dict:
    return dataclasses.asdict(cfg)


def config_hash(cfg: Config) -> str:
    """A short stable hash of the resolved config (checkpoints record it)."""
    return hashlib.sha256(json.dumps(to_dict(cfg), sort_keys=True).encode()).hexdigest()[:16]
