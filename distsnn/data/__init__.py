"""The data path: webdataset shards (writer, DALI index, manifest), the embedded digits set, DALI
train/val loaders and the shard integrity scan.

Names are imported lazily so that the shard tools (``launchers/make_shards.py``) do not pay for
torch and DALI."""
from __future__ import annotations

import importlib

_EXPORTS = {
    "Batch": "loader", "DataError": "loader", "build_train_loader": "loader", "build_val_loader": "loader",
    "DatasetInfo": "dataset_info", "prepare_dataset": "dataset_info", "resolve_shards": "shard_patterns",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
