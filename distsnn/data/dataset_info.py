"""``prepare_dataset(data_cfg)``: the shard files of both splits, their sizes and the class count."""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass

from distsnn.config import ConfigError

from .index_file import index_count, index_path_for, tar_samples
from .manifest import load_classes, load_manifest
from .shard_patterns import resolve_shards


@dataclass
class DatasetInfo:
    """Resolved shards: ``train_files`` / ``val_files`` (sorted tar paths), their DALI index files
    (``None`` when the shards have none), sample counts and the class count (``None`` if unknown); ``events``:
    the ``EventSpec`` of event shards."""
    train_files: list[str]
    val_files: list[str]
    num_classes: int | None
    num_train: int
    num_val: int
    train_index: list[str] | None = None
    val_index: list[str] | None = None
    classes: list[str] | None = None
    events: object = None  # EventSpec of event shards (events.json beside them); None for images


def index_files(files: list[str], key: str) -> list[str] | None:
    """The ``.idx`` of every shard, ``None`` if no shard has one; an error if only some have."""
    idx = [index_path_for(f) for f in files]
    have = [os.path.exists(i) for i in idx]
    if all(have):
        return idx
    if any(have):
        missing = files[have.index(False)]
        raise ConfigError(f"{key}: shard {missing} has no DALI index {index_path_for(missing)} while others do "
                          "(write it with `python launchers/make_shards.py index <tar>` or DALI's wds2idx)")
    warnings.warn(f"{key}: shards have no DALI index files; DALI will scan every tar at start-up "
                  "and cannot name a truncated tar", stacklevel=3)
    return None


def count_samples(files: list[str], index: list[str] | None) -> int:
    """Samples in ``files``: from ``manifest.json`` beside them, else the index headers, else the tars."""
    total = 0
    manifests: dict[str, dict] = {}
    for n, f in enumerate(files):
        d, name = os.path.split(f)
        if d not in manifests:
            manifests[d] = load_manifest(d)
        entry = manifests[d].get(name)
        if entry is not None:
            total += int(entry["count"])
        elif index is not None:
            total += index_count(index[n])
        else:
            total += len(tar_samples(f))
    return total


def prepare_dataset(data_cfg) -> DatasetInfo:
    """Resolve (and for ``source: digits`` build) the shards of ``data_cfg`` (a ``DataConfig``)."""
    if data_cfg.source in ("digits", "event_digits"):
        if data_cfg.source == "digits":
            from .digits import digits_dir
        else:
            from .event_digits import event_digits_dir as digits_dir

        root = digits_dir(data_cfg.cache_dir, data_cfg.train_fraction)
        train_pat, val_pat = os.path.join(root, "train-*.tar"), os.path.join(root, "val-*.tar")
    else:
        train_pat, val_pat = data_cfg.train_shards, data_cfg.val_shards
    train = resolve_shards(train_pat, "data.train_shards")
    val = resolve_shards(val_pat, "data.val_shards")
    tidx, vidx = index_files(train, "data.train_shards"), index_files(val, "data.val_shards")
    classes = load_classes(os.path.dirname(train[0]))
    events = _event_spec(train, val)
    return DatasetInfo(train_files=train, val_files=val, num_classes=len(classes) if classes else None,
                       num_train=count_samples(train, tidx), num_val=count_samples(val, vidx),
                       train_index=tidx, val_index=vidx, classes=classes, events=events)


def _event_spec(train: list[str], val: list[str]):
    """The one ``EventSpec`` of all shard directories, ``None`` if none has ``events.json``; mixing is refused."""
    from .events import load_event_spec

    specs = {}
    for key, files in (("data.train_shards", train), ("data.val_shards", val)):
        for d in sorted({os.path.dirname(f) for f in files}):
            try:
                specs[d] = (key, load_event_spec(d))
            except ValueError as e:
                raise ConfigError(f"{key}: {e}") from None
    found = {s for _, s in specs.values()}
    if len(found) > 1:
        detail = "; ".join(f"{k} {d}: {s.shape if s else 'images'}" for d, (k, s) in specs.items())
        raise ConfigError(f"data: train and val shards differ in kind or event format ({detail})")
    return found.pop()


def check_model_input(info: DatasetInfo, model_cfg, ann: bool = False) -> None:
    """The model reads what the shards hold: 3 channels for images; for event frames 2 channels (polarities) and,
    for a spiking model, ``model.timesteps`` = the T the frames were binned into (an ANN sums the frames)."""
    if info.events is None:
        if model_cfg.in_chans != 3:
            raise ConfigError(f"model.in_chans: {model_cfg.in_chans} but the shards hold RGB images (3 channels)")
        return
    if model_cfg.in_chans != 2:
        raise ConfigError(f"model.in_chans: {model_cfg.in_chans} but the shards hold event frames of 2 polarities "
                          "(set model.in_chans: 2)")
    if not ann and model_cfg.timesteps != info.events.timesteps:
        raise ConfigError(f"model.timesteps: {model_cfg.timesteps} but the event shards were binned into "
                          f"T = {info.events.timesteps} frames (events.json); re-bin them or set model.timesteps")
