"""Event recordings (DVS) as frames: events -> ``[T, 2, H, W]`` uint8 counts, stored once per sample.

An event is ``(t, x, y, p)``: time in microseconds, pixel column and row on the sensor, polarity (1 = ON, the log
intensity rose; 0 = OFF). ``bin_events`` splits a recording into ``T`` slices, either of equal duration
(``binning: time``) or of equal event count (``binning: count``: SpikingJelly's ``split_by='number'``, used by TET
and TCL for DVS-CIFAR10), and counts the events of each polarity per pixel. The resize (TCL: 128 -> 48) maps sensor
pixel ``x`` to ``x * W // sensor_W``: a frame pixel sums the events of the sensor pixels it covers, so no event is
lost or counted twice. Counts saturate at 255 (uint8).

Shards hold ``<key>.evt``: the ``T*2*H*W`` bytes of those counts (C order, ``[T, 2, H, W]``, polarity 0 = OFF first)
and ``<key>.cls``. ``events.json`` beside them records the :class:`EventSpec` (T, binning, size, sensor, source
format) and, where the shard tool made one, the split with its file list.
"""
from __future__ import annotations

import io
import json
import os
from dataclasses import asdict, dataclass

import numpy as np

EVENTS_JSON = "events.json"
EVENT_EXT = "evt"
# the in-memory event record: what every reader returns
EVENT_DTYPE = np.dtype([("t", "<i8"), ("x", "<i2"), ("y", "<i2"), ("p", "u1")])
BINNINGS = ("time", "count")


@dataclass(frozen=True)
class EventSpec:
    """How recordings become frames: ``timesteps`` slices by ``binning``, sensor ``sensor_height x sensor_width``
    resized to ``height x width``; ``format``: the recording format the shard writer reads (``npy``: an
    ``EVENT_DTYPE`` array saved with ``np.save``; see ``READERS``)."""
    timesteps: int
    height: int
    width: int
    sensor_height: int
    sensor_width: int
    binning: str = "count"
    format: str = "npy"

    def __post_init__(self):
        if self.binning not in BINNINGS:
            raise ValueError(f"binning: {self.binning!r} is not one of {BINNINGS}")
        if min(self.timesteps, self.height, self.width, self.sensor_height, self.sensor_width) < 1:
            raise ValueError(f"event spec: every size must be >= 1 ({self})")

    @property
    def shape(self) -> tuple[int, int, int, int]:
        """``[T, 2, H, W]`` of one stored sample."""
        return self.timesteps, 2, self.height, self.width

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape))


def bin_events(ev: np.ndarray, spec: EventSpec) -> np.ndarray:
    """``ev`` (``EVENT_DTYPE``, any order) -> ``[T, 2, H, W]`` uint8 event counts (module docstring)."""
    ev = ev[np.argsort(ev["t"], kind="stable")]
    n, T = len(ev), spec.timesteps
    if spec.binning == "count":  # slice j holds events [j*n//T, (j+1)*n//T)
        slot = (np.arange(n) * T) // max(n, 1)
    else:  # equal durations over [t_first, t_last]; the last event belongs to the last slice
        t = ev["t"] - ev["t"][0] if n else ev["t"]
        span = int(t[-1]) + 1 if n else 1
        slot = (t * T) // span
    x = ev["x"].astype(np.int64) * spec.width // spec.sensor_width
    y = ev["y"].astype(np.int64) * spec.height // spec.sensor_height
    flat = ((slot * 2 + ev["p"].astype(np.int64)) * spec.height + y) * spec.width + x
    counts = np.bincount(flat, minlength=spec.nbytes)
    return np.minimum(counts, 255).astype(np.uint8).reshape(spec.shape)


def check_events(ev: np.ndarray, spec: EventSpec, name: str) -> None:
    """Refuse what cannot be a recording of this sensor, naming ``name``: empty, coordinates off the sensor,
    polarity other than 0/1."""
    if len(ev) == 0:
        raise ValueError(f"{name}: empty recording (no events)")
    bad = (ev["x"] < 0) | (ev["x"] >= spec.sensor_width) | (ev["y"] < 0) | (ev["y"] >= spec.sensor_height)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(f"{name}: event {i} at (x={ev['x'][i]}, y={ev['y'][i]}) is outside the "
                         f"{spec.sensor_width}x{spec.sensor_height} sensor (another sensor's file, or damaged)")
    if (ev["p"] > 1).any():
        raise ValueError(f"{name}: polarities other than 0/1")


def read_npy(data: bytes, name: str) -> np.ndarray:
    """An ``EVENT_DTYPE`` array saved with ``np.save`` (the format of the offline digit recordings)."""
    try:
        ev = np.load(io.BytesIO(data), allow_pickle=False)
    except Exception as e:  # numpy raises ValueError/EOFError/... on truncated or foreign bytes
        raise ValueError(f"{name}: not an event .npy file ({type(e).__name__}: {e})") from None
    if ev.dtype.names is None or not set("txyp") <= set(ev.dtype.names) or ev.ndim != 1:
        raise ValueError(f"{name}: not an event array (dtype {ev.dtype}, shape {ev.shape}; "
                         "expected fields t, x, y, p)")
    out = np.empty(len(ev), EVENT_DTYPE)
    for f in "txyp":
        out[f] = ev[f]
    return out


AEDAT2_MAGIC = b"#!AER-DAT2.0"


def read_aedat2(data: bytes, name: str) -> np.ndarray:
    """jAER AEDAT 2.0 of a DVS128 (CIFAR10-DVS's released files): ``#`` header lines (the first ``#!AER-DAT2.0``),
    then 8-byte events, two big-endian uint32: address, timestamp (us). Address bits: x = (a & 0xFE) >> 1,
    y = (a & 0x7F00) >> 8, polarity = a & 1 (jAER: 1 = OFF); no bit above 0x7FFF. Returned in SpikingJelly's
    orientation for CIFAR10-DVS (x' = 127 - y, y' = 127 - x, p' = 1 - p: ON = 1)."""
    if not data.startswith(AEDAT2_MAGIC):
        raise ValueError(f"{name}: not an AEDAT 2.0 file (does not start with {AEDAT2_MAGIC.decode()})")
    i = 0
    while data.startswith(b"#", i):
        j = data.find(b"\n", i)
        if j < 0:
            raise ValueError(f"{name}: AEDAT 2.0 header does not end (truncated file?)")
        i = j + 1
    body = data[i:]
    if len(body) % 8:
        raise ValueError(f"{name}: truncated AEDAT 2.0 file ({len(body)} data bytes, not whole 8-byte events)")
    words = np.frombuffer(body, ">u4").reshape(-1, 2)
    addr, ts = words[:, 0], words[:, 1]
    if (addr > 0x7FFF).any():
        k = int(np.flatnonzero(addr > 0x7FFF)[0])
        raise ValueError(f"{name}: event {k} has address 0x{int(addr[k]):08x}, not a DVS128 event (another sensor?)")
    ev = np.empty(len(addr), EVENT_DTYPE)
    ev["t"] = ts
    ev["x"] = 127 - ((addr & 0x7F00) >> 8)
    ev["y"] = 127 - ((addr & 0xFE) >> 1)
    ev["p"] = 1 - (addr & 1)
    return ev


AEDAT3_MAGIC = b"#!AER-DAT3.1"
AEDAT3_END = b"#!END-HEADER\r\n"
PACKET = np.dtype([("type", "<u2"), ("source", "<u2"), ("size", "<u4"), ("ts_offset", "<u4"),
                   ("ts_overflow", "<u4"), ("capacity", "<u4"), ("number", "<u4"), ("valid", "<u4")])


def read_aedat3(data: bytes, name: str) -> np.ndarray:
    """AEDAT 3.1 (DVS128 Gesture's released files): ASCII header ending in ``#!END-HEADER\\r\\n``, then packets of a
    28-byte little-endian header (``PACKET``) and ``capacity * size`` event bytes. Polarity packets (type 1) hold
    8-byte events: uint32 data (polarity bit 1, y bits 2-16, x bits 17-31), int32 timestamp (us; + overflow << 31).
    Other packet types are skipped."""
    if not data.startswith(AEDAT3_MAGIC):
        raise ValueError(f"{name}: not an AEDAT 3.1 file (does not start with {AEDAT3_MAGIC.decode()})")
    i = data.find(AEDAT3_END)
    if i < 0:
        raise ValueError(f"{name}: AEDAT 3.1 header has no #!END-HEADER (truncated file?)")
    i += len(AEDAT3_END)
    parts = []
    while i < len(data):
        if len(data) - i < PACKET.itemsize:
            raise ValueError(f"{name}: truncated AEDAT 3.1 file (a packet header cut at byte {i})")
        h = np.frombuffer(data, PACKET, 1, i)[0]
        i += PACKET.itemsize
        n = int(h["capacity"]) * int(h["size"])
        if len(data) - i < n:
            raise ValueError(f"{name}: truncated AEDAT 3.1 file (a packet of {n} bytes cut at byte {len(data)})")
        if h["type"] == 1:
            if h["size"] != 8:
                raise ValueError(f"{name}: polarity packet with {int(h['size'])}-byte events (expected 8)")
            ev = np.frombuffer(data, np.dtype([("d", "<u4"), ("t", "<u4")]), int(h["capacity"]), i)
            e = np.empty(len(ev), EVENT_DTYPE)
            e["t"] = ev["t"].astype(np.int64) | (int(h["ts_overflow"]) << 31)
            e["x"], e["y"], e["p"] = (ev["d"] >> 17) & 0x7FFF, (ev["d"] >> 2) & 0x7FFF, (ev["d"] >> 1) & 1
            parts.append(e)
        i += n
    return np.concatenate(parts) if parts else np.empty(0, EVENT_DTYPE)


READERS = {"npy": read_npy, "aedat2": read_aedat2, "aedat3": read_aedat3}
WINDOW = "#t="  # "<file>#t=<start>-<end>": the events of <file> with start <= t < end (a trial of a recording)


def window_source(path: str, start: int, end: int) -> str:
    return f"{path}{WINDOW}{start}-{end}"


def read_recording(src, spec: EventSpec) -> np.ndarray:
    """The events of ``src`` (a path, or bytes) in ``spec.format``, checked (``check_events``)."""
    name = src if isinstance(src, str) else "<bytes>"
    window = None
    if isinstance(src, str) and WINDOW in src:
        src, w = src.rsplit(WINDOW, 1)
        window = tuple(int(v) for v in w.split("-"))
    data = open(src, "rb").read() if isinstance(src, str) else bytes(src)
    if spec.format not in READERS:
        raise ValueError(f"event format {spec.format!r} is not one of {sorted(READERS)}")
    ev = READERS[spec.format](data, name)
    if window is not None:
        ev = ev[(ev["t"] >= window[0]) & (ev["t"] < window[1])]
        if len(ev) == 0:
            raise ValueError(f"{name}: no events in the labelled window [{window[0]}, {window[1]}) us: the label "
                             "file does not match this recording")
    check_events(ev, spec, name)
    return ev


def encode_recording(src, spec: EventSpec) -> bytes:
    """The ``.evt`` member of a recording: its ``[T, 2, H, W]`` uint8 counts as bytes."""
    return bin_events(read_recording(src, spec), spec).tobytes()


def decode_frames(data: bytes, spec: EventSpec) -> np.ndarray:
    """``.evt`` bytes -> ``[T, 2, H, W]`` uint8 (the inverse of ``encode_recording``'s last step)."""
    if len(data) != spec.nbytes:
        raise ValueError(f".evt holds {len(data)} bytes, the event spec {spec.shape} needs {spec.nbytes}")
    return np.frombuffer(data, np.uint8).reshape(spec.shape)


def write_event_info(directory: str, spec: EventSpec, extra: dict | None = None) -> None:
    """``events.json``: the spec, plus e.g. the split and its file list; merged with what is there."""
    from .manifest import write_json_atomic

    path = os.path.join(directory, EVENTS_JSON)
    info = json.load(open(path)) if os.path.exists(path) else {}
    if info.get("spec", asdict(spec)) != asdict(spec):
        raise ValueError(f"{path}: written for another event spec {info['spec']}, not {asdict(spec)}; "
                         "use another output directory")
    info["spec"] = asdict(spec)
    info.update(extra or {})
    write_json_atomic(path, info)


def load_event_spec(directory: str) -> EventSpec | None:
    """The ``EventSpec`` of the shards in ``directory``, ``None`` for image shards (no ``events.json``)."""
    path = os.path.join(directory, EVENTS_JSON)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        info = json.load(f)
    try:
        return EventSpec(**info["spec"])
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"{path}: not a distsnn event spec ({e})") from None
