"""The run directory ``<out_dir>/<name>/``: resolved config, metrics.jsonl, eval.json, plots, checkpoints."""
from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import yaml

from distsnn import __version__
from distsnn.config import config_hash, to_dict
from distsnn.config.loader import _build
from distsnn.config.schema import Config


def code_version() -> str:
    """distsnn version plus the git commit (and '+dirty') when run from a checkout."""
    root = Path(__file__).resolve().parents[2]
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, timeout=5).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit, dirty = "", ""
    return f"{__version__}" + (f"+g{commit}" if commit else "") + ("+dirty" if dirty else "")


class RunDir:
    """Rank 0 writes; other ranks only read paths."""

    def __init__(self, cfg, write: bool):
        self.path = Path(cfg.run.out_dir).expanduser() / cfg.run.name
        self.checkpoints = self.path / "checkpoints"
        self.write = write
        if write:
            self.checkpoints.mkdir(parents=True, exist_ok=True)
            resolved = {"code_version": code_version(), "config_hash": config_hash(cfg), "config": to_dict(cfg)}
            _atomic_write(self.path / "config.yaml", yaml.safe_dump(resolved, sort_keys=False))

    def log_metrics(self, record: dict) -> None:
        if self.write:
            with open(self.path / "metrics.jsonl", "a") as f:
                f.write(json.dumps({"time": round(time.time(), 3), **record}) + "\n")

    def log_eval(self, record: dict) -> list[dict]:
        """Appends to eval.json (a list, one entry per evaluation) and returns the whole history."""
        path = self.path / "eval.json"
        history = json.loads(path.read_text()) if path.exists() else []
        if self.write:
            history = [h for h in history if h.get("step") != record.get("step")] + [record]
            _atomic_write(path, json.dumps(history, indent=1))
        return history

    def read_metrics(self) -> list[dict]:
        path = self.path / "metrics.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def read_config(run_dir: str | Path) -> Config:
    """The resolved ``config.yaml`` a run wrote (:class:`RunDir`), rebuilt with the schema's checks (not the
    recipe-relevance rule: a resolved file lists every default, as ``distsnn/export/run_model.py`` does)."""
    path = Path(run_dir) / "config.yaml"
    doc = yaml.safe_load(path.read_text())
    if not isinstance(doc, dict) or not isinstance(doc.get("config"), dict):
        raise ValueError(f"{path}: no 'config' mapping: not a resolved run config")
    return _build(Config, doc["config"], "", str(path))


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
