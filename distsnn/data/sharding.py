"""How DALI's webdataset reader splits one epoch over ranks, measured (DEPENDENCY-FACTS.md):

samples are split by global count, shard ``i`` of ``W`` holding ``[floor(i*N/W), floor((i+1)*N/W))``;
with ``pad_last_batch=True`` every shard yields ``ceil(ceil(N/W)/B)`` batches per epoch (the tail of
each is padded with its last sample, real samples come first); without ``stick_to_shard`` rank ``r``
reads shard ``(r + epoch) % W`` in a given epoch.
"""
from __future__ import annotations


def shard_size(num_samples: int, shard: int, world: int) -> int:
    """Real samples of DALI shard ``shard`` (of ``world``) in a set of ``num_samples``."""
    return (shard + 1) * num_samples // world - shard * num_samples // world


def runs_per_epoch(num_samples: int, world: int, batch: int) -> int:
    """Pipeline runs (batches, padded) per rank and epoch with ``pad_last_batch=True``."""
    return -(-(-(-num_samples // world)) // batch)


def train_steps(num_samples: int, world: int, batch: int) -> int:
    """Full batches every rank has in every epoch: the smallest shard, rounded down to ``batch``."""
    return (num_samples // world) // batch
