"""DALI pipelines reading webdataset shards: ``fn.readers.webdataset`` with ``shard_id = rank``,
``num_shards = world``, ``pad_last_batch=True`` (every rank runs the same number of batches per
epoch; see ``sharding.py``), checkpointing enabled (reader position + RNG states).

Samples are ``<key>.jpg`` or ``<key>.png`` (either, per sample) + ``<key>.cls``; event shards hold ``<key>.evt``
(``[T, 2, H, W]`` uint8 counts, ``events.py``) instead of the image and have their own pipelines (views
[B, T, 2, S, S] float32; the loader makes them time-major). Outputs: the views ([B, 3, S, S] float32 each) and the raw ``.cls`` bytes, parsed on the host by the
loader so that a bad label names its shard and key (``source_info()``).
"""
from __future__ import annotations

from nvidia.dali import fn, pipeline_def, types

from .augment import event_frames, event_train_view, event_val_view, train_view, val_view

READER = "Reader"
IMAGE_EXT = "jpg;png;evt"  # one per sample: JPEG, or PNG (lossless, e.g. CIFAR); or event frames (.evt)


def read_shards(files, index, rank, world, shuffle, buffer, stick):
    """The webdataset reader; ``dont_use_mmap`` so that a short tar is reported with its path."""
    return fn.readers.webdataset(
        paths=list(files), index_paths=list(index) if index else None, ext=[IMAGE_EXT, "cls"],
        missing_component_behavior="error", shard_id=rank, num_shards=world, random_shuffle=shuffle,
        initial_fill=buffer, pad_last_batch=True, stick_to_shard=stick, dont_use_mmap=True, name=READER)


def decode(jpegs, decode_device: str):
    return fn.decoders.image(jpegs, device=decode_device, output_type=types.RGB)


@pipeline_def(enable_checkpointing=True)
def train_pipeline(files, index, rank, world, aug, size, buffer, num_views, decode_device):
    """[views..., cls bytes]: ``num_views`` independent augmentations of each image; the colour jitter and random
    grayscale of ``aug`` only with two views (STCL), the loader refuses them in one-view recipes."""
    jpegs, cls = read_shards(files, index, rank, world, shuffle=True, buffer=buffer, stick=False)
    images = decode(jpegs, decode_device)
    views = [train_view(images, aug, size, with_colour=num_views > 1) for _ in range(num_views)]
    return (*views, cls)


@pipeline_def(enable_checkpointing=True)
def val_pipeline(files, index, rank, world, aug, resize, size, decode_device):
    """[view, cls bytes], deterministic; ``stick_to_shard`` so a rank evaluates the same samples every pass."""
    jpegs, cls = read_shards(files, index, rank, world, shuffle=False, buffer=1, stick=True)
    return val_view(decode(jpegs, decode_device), aug, resize, size), cls


@pipeline_def(enable_checkpointing=True)
def raw_pipeline(files, index, rank, world, shuffle, buffer, stick):
    """[jpeg bytes, cls bytes]: the reader alone, to replay a failed batch and find the bad sample."""
    jpegs, cls = read_shards(files, index, rank, world, shuffle=shuffle, buffer=buffer, stick=stick)
    return jpegs, cls


@pipeline_def(enable_checkpointing=True)
def event_train_pipeline(files, index, rank, world, aug, size, buffer, num_views, shape):
    """[views..., cls bytes] of event shards: ``num_views`` independent crops/flips of each sample's frames."""
    raw, cls = read_shards(files, index, rank, world, shuffle=True, buffer=buffer, stick=False)
    frames = event_frames(raw, shape)
    return (*[event_train_view(frames, aug, size) for _ in range(num_views)], cls)


@pipeline_def(enable_checkpointing=True)
def event_val_pipeline(files, index, rank, world, size, shape):
    """[view, cls bytes] of event shards, deterministic (centre window), ``stick_to_shard`` as ``val_pipeline``."""
    raw, cls = read_shards(files, index, rank, world, shuffle=False, buffer=1, stick=True)
    return event_val_view(event_frames(raw, shape), shape, size), cls
