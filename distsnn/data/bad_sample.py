"""Find the sample that broke a DALI pipeline, so the error can name its shard and key.

DALI's decoder fails naming neither file nor sample, and a failed pipeline yields nothing. The
loader keeps the DALI checkpoint taken before the failing batch; here the reader alone is restored
from it (the checkpoint is cut down to the reader's operators: a DALI checkpoint is a protobuf
``{1: [{1: op name, 2: op state}], 2: external context}`` and a pipeline refuses entries for
operators it does not have, or lacks entries for its own), the batches in flight are replayed without decoding, and every JPEG
is decoded with PIL and every ``.cls`` parsed, each bad one named by ``source_info()``.
"""
from __future__ import annotations

import io
import os
import re


def _varint(buf: bytes, i: int) -> tuple[int, int]:
    shift = value = 0
    while True:
        b = buf[i]
        i += 1
        value |= (b & 0x7F) << shift
        if b < 0x80:
            return value, i
        shift += 7


def _fields(buf: bytes):
    """Top-level protobuf fields ``(field number, wire type, payload, raw bytes)``; only varint and
    length-delimited fields occur in DALI checkpoints."""
    i = 0
    while i < len(buf):
        start = i
        tag, i = _varint(buf, i)
        num, wire = tag >> 3, tag & 7
        if wire == 2:
            n, i = _varint(buf, i)
            payload, i = buf[i:i + n], i + n
        elif wire == 0:
            payload, i = _varint(buf, i)
        else:
            raise ValueError(f"unexpected protobuf wire type {wire} in a DALI checkpoint")
        yield num, wire, payload, buf[start:i]


def _op_name(entry: bytes) -> str:
    return next(p.decode() for num, _, p, _ in _fields(entry) if num == 1)


def transplant(saved: bytes, fresh: bytes) -> bytes:
    """A checkpoint for the pipeline that wrote ``fresh``: each of its operators takes its state from
    ``saved`` where ``saved`` has it (the reader), else keeps its fresh state (stateless copies);
    non-operator fields (external context) come from ``saved``."""
    saved_ops = {_op_name(p): raw for num, _, p, raw in _fields(saved) if num == 1}
    ops = [saved_ops.get(_op_name(p), raw) for num, _, p, raw in _fields(fresh) if num == 1]
    return b"".join(ops) + b"".join(raw for num, _, _, raw in _fields(saved) if num != 1)


def sample_problems(jpegs, cls, num_classes: int | None) -> list[str]:
    """``shard:key: problem`` for each undecodable JPEG or bad label in one raw batch."""
    import numpy as np
    from PIL import Image

    out = []
    for j in range(len(jpegs)):
        where = jpegs[j].source_info()
        shard, key = where.split(":")[0], where.rsplit(":", 1)[-1].rsplit(".", 1)[0]
        if where.endswith(".evt"):  # event frames: right size for the events.json beside the shard?
            from .events import load_event_spec

            spec = load_event_spec(os.path.dirname(shard))
            got = np.asarray(jpegs[j]).size
            if spec is not None and got != spec.nbytes:
                out.append(f"{shard}:{key}: .evt holds {got} bytes, events.json's {spec.shape} needs {spec.nbytes}")
        else:
            try:
                with Image.open(io.BytesIO(np.asarray(jpegs[j]).tobytes())) as im:
                    im.load()
            except Exception as e:  # PIL raises many types
                out.append(f"{shard}:{key}: undecodable image ({re.sub(r' <_io.*?>', '', str(e))})")
        text = np.asarray(cls[j]).tobytes()
        try:
            label = int(text.decode("ascii").strip())
            if num_classes is not None and not 0 <= label < num_classes:
                out.append(f"{shard}:{key}: label {label} out of range [0, {num_classes})")
        except (UnicodeDecodeError, ValueError):
            out.append(f"{shard}:{key}: .cls is not an integer ({text[:20]!r})")
    return out


def replay(make_raw_pipe, checkpoint: bytes | None, batches: int, num_classes: int | None) -> list[str]:
    """Replay ``batches`` reader batches from ``checkpoint`` (``None``: from the start) and list the bad samples.

    ``make_raw_pipe(checkpoint=...)`` builds ``pipelines.raw_pipeline`` with the loader's reader settings."""
    if checkpoint is not None:
        probe = make_raw_pipe(checkpoint=None)
        probe.build()
        checkpoint = transplant(checkpoint, probe.checkpoint())
        del probe
    pipe = make_raw_pipe(checkpoint=checkpoint)
    pipe.build()
    problems: list[str] = []
    for _ in range(batches):
        jpegs, cls = pipe.run()
        problems += sample_problems(jpegs, cls, num_classes)
    return list(dict.fromkeys(problems))
