"""Weights in and out as safetensors only: user-supplied files are never unpickled."""
from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file, save_file


def save_weights(model: torch.nn.Module, path: str | Path) -> None:
    """Write ``model``'s state dict (contiguous CPU tensors) to ``path`` atomically."""
    path = Path(path)
    tmp = path.with_suffix(path.suffix + ".tmp")
    save_file({k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}, str(tmp))
    tmp.replace(path)


def load_weights(model: torch.nn.Module, path: str | Path, what: str = "weights") -> None:
    """Load a ``.safetensors`` file strictly; missing or unexpected keys and shape mismatches are named."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"{what}: {path}: no such file")
    if path.suffix != ".safetensors":
        raise ValueError(f"{what}: {path}: only .safetensors files are loaded (pickled checkpoints can run code)")
    try:
        state = load_file(str(path))
    except Exception as e:
        raise ValueError(f"{what}: {path}: not a readable safetensors file ({e})") from e
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    if missing or unexpected:
        raise ValueError(f"{what}: {path}: missing keys {missing[:8]}{'...' if len(missing) > 8 else ''}; "
                         f"unexpected keys {unexpected[:8]}{'...' if len(unexpected) > 8 else ''}")
    bad = [f"{k} {tuple(state[k].shape)} != {tuple(v.shape)}" for k, v in own.items() if state[k].shape != v.shape]
    if bad:
        raise ValueError(f"{what}: {path}: shape mismatch: {bad[:4]}")
    model.load_state_dict(state)
