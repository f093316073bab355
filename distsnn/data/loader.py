"""Train and val loaders: DALI pipelines driven batch by batch, outputs as torch tensors.

The loaders run the pipelines themselves (no ``DALIGenericIterator``) because the epoch has to be
cut the same way on every rank: with ``pad_last_batch=True`` each rank runs
``R = ceil(ceil(N/W)/B)`` batches per epoch (``sharding.py``). Train yields the first
``floor(floor(N/W)/B)`` of them, full batches of real samples on every rank, and runs the rest
without yielding; val yields the real samples of its fixed shard and drops the padding, so every
val sample is seen exactly once per pass across ranks.

Resuming on another world size (``resize_from``: the states of all W old ranks): the interrupted epoch is
finished in the old world's order. Its samples form one stream, old global batch after old global batch, each
the old ranks' batches in rank order; rank r' of W' takes its B' samples of every new global batch (W'·B') from
that stream, running the old ranks' own pipelines from their checkpoints (same shards, shuffle and augmentation
draws as the uninterrupted run). So no sample is seen twice in that epoch, none is skipped except a final
remainder smaller than one new global batch (W'·B'), and where W'·B' = W·B the batches are the uninterrupted
run's. A rank decodes every old batch it takes a slice of: growing the world costs up to W'/W times the decoding
for the rest of that epoch. From the next epoch on, the new world reads its own shards.
"""
from __future__ import annotations

import base64
import json
import re
from dataclasses import dataclass

import numpy as np
import torch

from distsnn.config import ConfigError

from . import bad_sample, pipelines
from .sharding import runs_per_epoch, shard_size, train_steps

STATE_VERSION = 2  # 2: + the replay of an epoch begun on another world size


class DataError(RuntimeError):
    """A shard could not be read or decoded; the message names the shard file and sample key."""


@dataclass
class Batch:
    """``views``: ``num_views`` tensors [B, 3, H, W] float32 (normalised), or for event shards time-major
    [T, B, 2, H, W] float32 event counts; ``labels``: [B] int64."""
    views: list[torch.Tensor]
    labels: torch.Tensor


def decode_device(data_cfg, device: torch.device) -> str:
    """``data.decode_device`` resolved: DALI ``mixed`` (GPU JPEG decode) on a CUDA device under ``auto``."""
    if data_cfg.decode_device == "auto":
        return "mixed" if device.type == "cuda" else "cpu"
    if data_cfg.decode_device == "mixed" and device.type != "cuda":
        raise ConfigError(f"data.decode_device: 'mixed' needs a CUDA training device, got {device}")
    return data_cfg.decode_device


def parse_labels(cls, num_classes: int | None, n: int) -> np.ndarray:
    """[n] int64 from the first ``n`` raw ``.cls`` samples; ``DataError`` naming shard:key if one is bad."""
    out = np.empty(n, np.int64)
    for j in range(n):
        text = np.asarray(cls[j]).tobytes()
        try:
            out[j] = int(text.decode("ascii").strip())
        except (UnicodeDecodeError, ValueError):
            raise DataError(f"{cls[j].source_info()}: .cls is not an integer ({text[:20]!r})") from None
        if num_classes is not None and not 0 <= out[j] < num_classes:
            raise DataError(f"{cls[j].source_info()}: label {out[j]} out of range [0, {num_classes})")
    return out


def to_torch(tl, device: torch.device, n: int) -> torch.Tensor:
    """A dense DALI TensorList [B, ...] -> its first ``n`` rows as a torch tensor on ``device`` (a copy)."""
    from nvidia.dali.backend import TensorListGPU
    from nvidia.dali.plugin.pytorch import feed_ndarray

    t = tl.as_tensor()
    if isinstance(tl, TensorListGPU):
        out = torch.empty(t.shape(), dtype=torch.float32, device=device)
        feed_ndarray(t, out, cuda_stream=torch.cuda.current_stream(device))
    else:
        out = torch.from_numpy(np.array(t, copy=True))
    return out[:n].to(device, non_blocking=True)


class _PipelineLoader:
    """Shared driving of one DALI pipeline: build, run with error translation, convert outputs."""

    def __init__(self, key, files, index, num_samples, num_classes, rank, world, batch, device,
                 make_pipe, make_raw, prefetch, checkpoint=None):
        if num_samples < world:
            raise ConfigError(f"{key}: {num_samples} samples cannot be split over {world} ranks")
        self.key, self.files, self.num_classes = key, files, num_classes
        self.rank, self.world, self.batch, self.device = rank, world, batch, device
        self.num_samples = num_samples
        self._make_raw, self._prefetch = make_raw, prefetch
        self.runs = runs_per_epoch(num_samples, world, batch)
        self.pipe = make_pipe(checkpoint=checkpoint)
        try:
            self.pipe.build()
        except RuntimeError as e:
            raise DataError(f"{key}: DALI could not open the shards ({files[0]} ...): {e}") from e
        got = self.pipe.reader_meta(pipelines.READER)["epoch_size"]
        if got != num_samples:
            raise DataError(f"{key}: the shards hold {got} samples but manifest/index say {num_samples}; "
                            "the manifest is stale, rewrite it with launchers/make_shards.py")
        # DALI state before the next run: where a replay of a failed batch starts
        self._ckpt = checkpoint if checkpoint is not None else self.pipe.checkpoint()

    def _run(self):
        try:
            outs = self.pipe.run()
        except RuntimeError as e:
            raise self._diagnose(e) from e
        self._ckpt = self.pipe.checkpoint()
        return outs

    def _diagnose(self, err: RuntimeError) -> DataError:
        first = str(err).strip().splitlines()
        head = f"{self.key}: reading the shards failed on rank {self.rank}"
        try:
            problems = bad_sample.replay(self._make_raw, self._ckpt, self._prefetch + 2, self.num_classes)
        except RuntimeError as e2:  # the reader itself fails, e.g. a truncated tar: its message names the file
            text = " ".join(str(e2).split())
            m = re.search(r"(Error reading from a file \S+|Underful sample detected[^.]*)", text)
            return DataError(f"{head}: {m.group(1)} (a truncated or damaged tar? run launchers/check_shards.py)"
                             if m else f"{head}: {text[:800]}")
        if problems:
            return DataError(f"{head}: " + "; ".join(problems))
        return DataError(f"{head} and the failing sample could not be isolated: {' '.join(first)[:800]}")

    def _batch(self, outs, n: int) -> Batch:
        *views, cls = outs
        labels = parse_labels(cls, self.num_classes, n)
        views = [to_torch(v, self.device, n) for v in views]
        # event frames come batch-major from DALI ([B, T, 2, H, W]); the models walk time on dim 0
        views = [v.transpose(0, 1).contiguous() if v.dim() == 5 else v for v in views]
        return Batch(views,
                     torch.from_numpy(labels).to(self.device, non_blocking=True))


class TrainLoader(_PipelineLoader):
    """Iterating yields one epoch of ``len(self)`` batches (identical on every rank); a loop that
    stops early resumes mid-epoch on the next ``iter``. ``state()`` between steps saves the position."""

    def __init__(self, data_cfg, info, rank, world_size, seed, num_views, device, checkpoint=None,
                 resize_from=None):
        B, N = data_cfg.batch_size, info.num_train
        self.steps = train_steps(N, world_size, B)
        if self.steps < 1:
            raise ConfigError(f"data.batch_size: {B} exceeds the {N // world_size} train samples per rank "
                              f"({N} samples over {world_size} ranks)")
        self.num_views, self.epoch, self.pos = num_views, 0, 0
        self._fingerprint = {"num_train": N, "world": world_size, "rank": rank, "batch": B, "num_views": num_views,
                             "files": [f.rsplit("/", 1)[-1] for f in info.train_files]}
        self._replay: _OldRanks | None = None
        self.resize_note = ""  # what a resume on another world size did with the interrupted epoch
        self._data_cfg, self._info, self._seed, self._device = data_cfg, info, seed, device
        dali_ckpt = self._restore(checkpoint) if checkpoint is not None else None
        make_pipe, make_raw = self._pipeline_makers(rank, world_size, B)
        super().__init__("data.train_shards", info.train_files, info.train_index, N, info.num_classes, rank,
                         world_size, B, device, make_pipe, make_raw, data_cfg.prefetch, dali_ckpt)
        if resize_from is not None:
            self._resize(resize_from)

    def _pipeline_makers(self, rank: int, world: int, batch: int):
        data_cfg, info = self._data_cfg, self._info
        dev = decode_device(data_cfg, self._device)
        common = dict(batch_size=batch, num_threads=data_cfg.num_threads, seed=self._seed + rank,
                      device_id=(self._device.index or 0) if self._device.type == "cuda" else None)
        args = (info.train_files, info.train_index, rank, world)

        def make_pipe(checkpoint):
            if info.events is not None:
                return pipelines.event_train_pipeline(
                    *args, data_cfg.augment, data_cfg.image_size, data_cfg.shuffle_buffer, self.num_views,
                    info.events.shape, prefetch_queue_depth=data_cfg.prefetch, checkpoint=checkpoint, **common)
            return pipelines.train_pipeline(*args, data_cfg.augment, data_cfg.image_size, data_cfg.shuffle_buffer,
                                            self.num_views, dev, prefetch_queue_depth=data_cfg.prefetch,
                                            checkpoint=checkpoint, **common)

        def make_raw(checkpoint):
            return pipelines.raw_pipeline(*args, True, data_cfg.shuffle_buffer, False, checkpoint=checkpoint,
                                          **{**common, "device_id": None})

        return make_pipe, make_raw

    def _old_rank_loader(self, rank: int, world: int, batch: int, dali_ckpt: bytes) -> _PipelineLoader:
        make_pipe, make_raw = self._pipeline_makers(rank, world, batch)
        return _PipelineLoader("data.train_shards", self.files, self._info.train_index, self.num_samples,
                               self.num_classes, rank, world, batch, self.device, make_pipe, make_raw,
                               self._prefetch, dali_ckpt)

    def __len__(self) -> int:
        return self.steps

    def __iter__(self):
        if self._replay is not None:
            yield from self._iter_replay()
            return
        while self.pos < self.steps:
            batch = self._batch(self._run(), self.batch)
            self.pos += 1
            if self.pos == self.steps:
                # run the padded tail now, so that state() after the last step is the next epoch's start
                for _ in range(self.runs - self.steps):
                    cls = self._run()[-1]
                    parse_labels(cls, self.num_classes, len(cls))  # dropped, yet never silently bad
                self.epoch, self.pos = self.epoch + 1, 0
                yield batch
                return
            yield batch

    def _replay_steps(self) -> int:
        return self._replay.samples() // (self.world * self.batch)

    def _iter_replay(self):
        """The rest of an epoch begun on another world size: this rank's slices of the old ranks' stream."""
        n = self._replay_steps()
        while self.pos < n:
            batch = self._replay.take((self.pos * self.world + self.rank) * self.batch, self.batch, self.num_views)
            self.pos += 1
            if self.pos == n:
                self._replay = None
                self.epoch, self.pos = self.epoch + 1, 0
                yield batch
                return
            yield batch

    def state(self) -> bytes:
        """Reader position, augmentation RNG and epoch counters; pass as ``checkpoint=`` to resume."""
        s = {"version": STATE_VERSION, "epoch": self.epoch, "pos": self.pos, "fingerprint": self._fingerprint,
             "dali": base64.b64encode(self._ckpt).decode()}
        if self._replay is not None:
            s["replay"] = self._replay.state()
        return json.dumps(s).encode()

    def _parse(self, checkpoint: bytes) -> dict:
        try:
            s = json.loads(checkpoint)
            assert s["version"] in (1, STATE_VERSION)
        except Exception as e:
            raise ConfigError(f"data loader checkpoint: not a distsnn train-loader state ({e})") from None
        return s

    def _restore(self, checkpoint: bytes) -> bytes:
        s = self._parse(checkpoint)
        if s["fingerprint"] != self._fingerprint:
            diff = [k for k in self._fingerprint if s["fingerprint"].get(k) != self._fingerprint[k]]
            raise ConfigError(f"data loader checkpoint: saved for another data set-up (differs in {diff})")
        self.epoch, self.pos = s["epoch"], s["pos"]
        if s.get("replay"):
            r = s["replay"]
            self._replay = _OldRanks(self._old_rank_loader, r["world"], r["batch"], r["rounds"],
                                     [(rnd, base64.b64decode(ck)) for rnd, ck in r["pipes"]])
        return base64.b64decode(s["dali"])

    def _resize(self, states: list[bytes]) -> None:
        """Take over an epoch that ``len(states)`` ranks (their ``state()``s, in rank order) had begun."""
        old = [self._parse(b) for b in states]
        world = len(old)
        fp = [o["fingerprint"] for o in old]
        same = ("num_train", "num_views", "files")
        for r, f in enumerate(fp):
            diff = [k for k in same if f.get(k) != self._fingerprint[k]]
            if diff:
                raise ConfigError(f"data loader checkpoint of old rank {r}: saved for another data set-up "
                                  f"(differs in {diff})")
            if f["world"] != world or f["rank"] != r or f["batch"] != fp[0]["batch"] or \
                    (old[r]["epoch"], old[r]["pos"]) != (old[0]["epoch"], old[0]["pos"]):
                raise ConfigError(f"data loader checkpoint of old rank {r}: not one of {world} ranks at one "
                                  "position (world, rank, batch or position differ)")
        self.epoch, self.pos, old_batch = old[0]["epoch"], 0, fp[0]["batch"]
        if old[0].get("replay"):  # it was itself finishing an epoch of a third world size: not chained
            self.epoch += 1
            self.resize_note = (f"the checkpoint was taken while finishing epoch {old[0]['epoch']} of an earlier "
                                f"world size; the rest of that epoch is skipped, epoch {self.epoch} starts")
            return
        if old[0]["pos"] == 0:
            self.resize_note = f"epoch {self.epoch} starts on the new world size (no epoch was interrupted)"
            return
        rounds = train_steps(self.num_samples, world, old_batch) - old[0]["pos"]
        self._replay = _OldRanks(self._old_rank_loader, world, old_batch, rounds,
                                 [(0, base64.b64decode(o["dali"])) for o in old])
        total, n = self._replay.samples(), self._replay_steps()
        skipped = total - n * self.world * self.batch
        self.resize_note = (f"epoch {self.epoch}: its remaining {total} samples are read in the order of the "
                            f"{world} old ranks: {n} batches of {self.world} x {self.batch}"
                            + (f", the last {skipped} samples skipped (less than one global batch)" if skipped else ""))
        if n == 0:
            self._replay = None
            self.epoch += 1


class _OldRanks:
    """The rest of an epoch that ``world`` ranks with batch ``batch`` had begun: ``rounds`` old global batches,
    read by the old ranks' own pipelines (their DALI checkpoints: shard, shuffle, augmentation RNG) and seen as one
    stream of samples, old global batch after old global batch, each in old-rank order. ``take(start, n)`` builds
    a batch from stream samples [start, start + n); starts only ever grow. A pipeline is built on first use and
    runs only as far as the last batch taken from it."""

    def __init__(self, make, world: int, batch: int, rounds: int, pipes: list[tuple[int, bytes]]):
        self.world, self.batch, self.rounds = world, batch, rounds
        self._make = make
        # per old rank: (round that the next run of a pipeline built from ckpt yields, ckpt)
        self._saved = list(pipes)
        self._pipes: dict[int, tuple[_PipelineLoader, int]] = {}   # old rank -> (loader, round its next run yields)
        self._cache: dict[int, tuple[int, Batch]] = {}

    def samples(self) -> int:
        return self.rounds * self.world * self.batch

    def take(self, start: int, n: int, num_views: int) -> Batch:
        parts = []
        s = start
        while s < start + n:
            g = s // self.batch  # the old per-rank batch, counted in global order
            rnd, r = divmod(g, self.world)
            off = s - g * self.batch
            k = min(self.batch - off, start + n - s)
            parts.append((self._get(r, rnd), off, k))
            s += k
        views = []
        for v in range(num_views):
            dim = 1 if parts[0][0].views[v].dim() == 5 else 0  # time-major [T, B, ...] views: batch on dim 1
            views.append(torch.cat([b.views[v].narrow(dim, o, k) for b, o, k in parts], dim=dim))
        return Batch(views, torch.cat([b.labels[o:o + k] for b, o, k in parts]))

    def _get(self, r: int, rnd: int) -> Batch:
        if r in self._cache and self._cache[r][0] == rnd:
            return self._cache[r][1]
        if r not in self._pipes:
            first, ckpt = self._saved[r]
            self._pipes[r] = (self._make(r, self.world, self.batch, ckpt), first)
        pipe, nxt = self._pipes[r]
        if rnd < nxt:
            raise RuntimeError(f"old rank {r}: batch {rnd} was requested after batch {nxt - 1}")
        while True:
            before = pipe._ckpt
            outs = pipe._run()
            if nxt == rnd:
                break
            nxt += 1  # a batch of this old rank that other new ranks take
        batch = pipe._batch(outs, self.batch)
        self._pipes[r] = (pipe, rnd + 1)
        self._saved[r] = (rnd, before)  # a restore re-runs this batch: the rest of it may still be taken
        self._cache[r] = (rnd, batch)
        return batch

    def state(self) -> dict:
        return {"world": self.world, "batch": self.batch, "rounds": self.rounds,
                "pipes": [[rnd, base64.b64encode(ck).decode()] for rnd, ck in self._saved]}


class ValLoader(_PipelineLoader):
    """One pass = this rank's fixed share of the val set, each sample once, final batch partial."""

    def __init__(self, data_cfg, info, rank, world_size, device):
        B = data_cfg.batch_size
        self.local = shard_size(info.num_val, rank, world_size)
        self.pos = 0
        dev = decode_device(data_cfg, device)
        common = dict(batch_size=B, num_threads=data_cfg.num_threads, seed=0,
                      device_id=(device.index or 0) if device.type == "cuda" else None)
        args = (info.val_files, info.val_index, rank, world_size)

        def make_pipe(checkpoint):
            if info.events is not None:
                return pipelines.event_val_pipeline(*args, data_cfg.image_size, info.events.shape,
                                                    prefetch_queue_depth=data_cfg.prefetch, checkpoint=checkpoint,
                                                    **common)
            return pipelines.val_pipeline(*args, data_cfg.augment, data_cfg.val_resize, data_cfg.image_size, dev,
                                          prefetch_queue_depth=data_cfg.prefetch, checkpoint=checkpoint, **common)

        def make_raw(checkpoint):
            return pipelines.raw_pipeline(*args, False, 1, True, checkpoint=checkpoint, **{**common, "device_id": None})

        super().__init__("data.val_shards", info.val_files, info.val_index, info.num_val, info.num_classes, rank,
                         world_size, B, device, make_pipe, make_raw, data_cfg.prefetch)

    def __len__(self) -> int:
        return -(-self.local // self.batch)

    def __iter__(self):
        while self.pos:  # a pass left unfinished: run to the pass boundary first
            self._run()
            self.pos = (self.pos + 1) % self.runs
        for j in range(self.runs):
            outs = self._run()
            self.pos = (j + 1) % self.runs
            real = min(self.batch, self.local - j * self.batch)
            if real > 0:  # the rest is DALI's padding (repeats of the last sample)
                yield self._batch(outs, real)


def build_train_loader(data_cfg, info, rank: int, world_size: int, seed: int, num_views: int = 1,
                       device: torch.device | None = None, checkpoint: bytes | None = None,
                       resize_from: list[bytes] | None = None) -> TrainLoader:
    """Train loader of rank ``rank`` of ``world_size``; ``num_views`` = 2 for STCL's two augmented views.
    ``checkpoint``: this rank's ``state()`` (same world); ``resize_from``: every rank's ``state()`` of a world of
    another size, whose interrupted epoch this loader finishes in their order (module docstring)."""
    if num_views not in (1, 2):
        raise ValueError(f"num_views: {num_views} (1, or 2 for STCL)")
    if checkpoint is not None and resize_from is not None:
        raise ValueError("checkpoint and resize_from exclude each other")
    return TrainLoader(data_cfg, info, rank, world_size, seed, num_views, device or torch.device("cpu"), checkpoint,
                       resize_from)


def build_val_loader(data_cfg, info, rank: int, world_size: int, device: torch.device | None = None) -> ValLoader:
    """Val loader of rank ``rank``: resize + centre crop, every val sample once across ranks per pass."""
    return ValLoader(data_cfg, info, rank, world_size, device or torch.device("cpu"))
