"""Event shards: recordings -> [T, 2, H, W] frames -> webdataset -> DALI -> time-major [T, B, 2, H, W] batches.

Recordings are written by the tests as NumPy ``.npy`` files (format 1.0: magic ``\\x93NUMPY``, header dict with
``descr`` = the structured dtype ``t <i8, x <i2, y <i2, p u1``, then the records), the format the shard writer reads
for ``format: npy``. Every expected frame comes from ``reference_frames`` below: plain loops, not the code under test.
"""
from __future__ import annotations

import io
import os
import subprocess
import sys
import tarfile

import numpy as np
import pytest
import torch
from data_helpers import data_cfg

from distsnn.config.schema import AugmentConfig
from distsnn.data import build_train_loader, build_val_loader, prepare_dataset
from distsnn.data.events import EVENT_DTYPE, EventSpec, bin_events
from distsnn.data.integrity import scan_shards
from distsnn.data.shard_writer import write_split

SPEC = EventSpec(timesteps=3, height=6, width=6, sensor_height=12, sensor_width=10, binning="count")


def recording(seed: int, n: int = 40, spec: EventSpec = SPEC) -> np.ndarray:
    rng = np.random.default_rng(seed)
    ev = np.empty(n, EVENT_DTYPE)
    ev["t"] = np.sort(rng.choice(10_000 + 10 * n, n, replace=False))  # distinct: ties make the order ambiguous
    ev["x"], ev["y"] = rng.integers(0, spec.sensor_width, n), rng.integers(0, spec.sensor_height, n)
    ev["p"] = rng.integers(0, 2, n)
    return ev


def reference_frames(ev: np.ndarray, spec: EventSpec) -> np.ndarray:
    """Plain loops: slice j of T holds events [j*n/T, (j+1)*n/T) (count) or the j-th equal time span (time)."""
    ev = sorted(ev.tolist(), key=lambda e: e[0])
    n, T = len(ev), spec.timesteps
    out = np.zeros(spec.shape, np.int64)
    t0, t1 = ev[0][0], ev[-1][0]
    for k, (t, x, y, p) in enumerate(ev):
        j = k * T // n if spec.binning == "count" else (t - t0) * T // (t1 - t0 + 1)
        out[j, p, y * spec.height // spec.sensor_height, x * spec.width // spec.sensor_width] += 1
    return np.minimum(out, 255).astype(np.uint8)


def write_recordings(root, count: int, spec: EventSpec = SPEC) -> list[tuple[str, int]]:
    os.makedirs(root, exist_ok=True)
    out = []
    for i in range(count):
        path = os.path.join(root, f"rec_{i:03d}.npy")
        np.save(path, recording(i, 30 + i, spec))
        out.append((path, i % 3))
    return out


@pytest.fixture(scope="module")
def event_shards(tmp_path_factory):
    """11 train and 11 val recordings (same files) as 3 + 3 shards; returns (dir, {frames bytes: sample id})."""
    d = tmp_path_factory.mktemp("ev")
    samples = write_recordings(str(d / "rec"), 11)
    out = str(d / "shards")
    for split in ("train", "val"):
        write_split(samples, ["a", "b", "c"], out, split, max_count=4, progress=False, events=SPEC)
    ids = {reference_frames(np.load(p), SPEC).tobytes(): i for i, (p, _) in enumerate(samples)}
    assert len(ids) == 11
    return out, ids


def cfg_for(out, **kw):
    base = dict(image_size=6, batch_size=2, augment=AugmentConfig(pad_crop=0, hflip=False, color_jitter=0.0,
                                                                  grayscale_p=0.0))
    base.update(kw)
    return data_cfg(f"{out}/train-*.tar", f"{out}/val-*.tar", **base)


@pytest.mark.parametrize("binning", ["count", "time"])
def test_binning_counts_every_event_once_per_frame_and_polarity(binning):
    spec = EventSpec(timesteps=4, height=48, width=48, sensor_height=128, sensor_width=128, binning=binning)
    ev = recording(7, 5000, spec)
    got = bin_events(ev[::-1].copy(), spec)  # any input order
    assert got.dtype == np.uint8 and got.shape == (4, 2, 48, 48)
    np.testing.assert_array_equal(got, reference_frames(ev, spec))
    assert int(got.sum()) == 5000
    if binning == "count":  # equal event counts per frame
        assert got.sum(axis=(1, 2, 3)).tolist() == [1250] * 4
    many = np.zeros(300, EVENT_DTYPE)  # one pixel, 300 ON events: saturates at 255 in the one frame it fills
    many["t"] = 5
    many["p"] = 1
    assert bin_events(many, EventSpec(timesteps=1, height=2, width=2, sensor_height=2, sensor_width=2))[0, 1, 0, 0] == 255


def test_val_round_trip_two_ranks_see_every_sample_once_time_major(event_shards):
    out, ids = event_shards
    cfg = cfg_for(out)
    info = prepare_dataset(cfg)
    assert info.events == SPEC and info.num_val == 11
    seen = []
    for rank in (0, 1):
        for _ in range(2):  # two passes: exact every time
            for b in build_val_loader(cfg, info, rank, 2):
                x = b.views[0]
                assert x.dim() == 5 and x.shape[0] == 3 and x.shape[2:] == (2, 6, 6) and x.dtype == torch.float32
                for j in range(x.shape[1]):
                    frames = x[:, j].numpy().astype(np.uint8).tobytes()
                    assert frames in ids, "a val sample's frames differ from its recording's reference binning"
                    seen.append((rank, ids[frames], int(b.labels[j])))
    ids_seen = [i for _, i, _ in seen]
    assert sorted(ids_seen) == sorted(list(range(11)) * 2)
    assert all(lbl == i % 3 for _, i, lbl in seen)
    assert {i for r, i, _ in seen if r == 0}.isdisjoint({i for r, i, _ in seen if r == 1})


def test_train_crop_and_flip_move_all_frames_together(event_shards):
    out, ids = event_shards
    refs = {i: np.frombuffer(k, np.uint8).reshape(SPEC.shape) for k, i in ids.items()}
    cfg = cfg_for(out, augment=AugmentConfig(pad_crop=1, hflip=True, color_jitter=0.0, grayscale_p=0.0))
    info = prepare_dataset(cfg)
    loader = build_train_loader(cfg, info, 0, 1, seed=3)
    offsets, flips = set(), set()
    for _ in range(4):
        for b in loader:
            x = b.views[0].numpy()
            for j in range(x.shape[1]):
                hits = []
                for i, ref in refs.items():
                    pad = np.pad(ref, ((0, 0), (0, 0), (1, 1), (1, 1)))
                    for dy in range(3):
                        for dx in range(3):
                            win = pad[:, :, dy:dy + 6, dx:dx + 6]
                            for f in (0, 1):
                                if np.array_equal(win[..., ::-1] if f else win, x[:, j]):
                                    hits.append((i, dy, dx, f))
                assert hits, "a train view is no padded crop (+ flip) of any recording's frames"
                offsets |= {h[1:3] for h in hits}
                flips |= {h[3] for h in hits}
    assert len(offsets) > 3 and flips == {0, 1}


def test_train_loader_resumes_bit_identically(event_shards):
    out, _ = event_shards
    cfg = cfg_for(out, augment=AugmentConfig(pad_crop=1, hflip=True, color_jitter=0.0, grayscale_p=0.0))
    info = prepare_dataset(cfg)
    a = build_train_loader(cfg, info, 0, 1, seed=5, num_views=2)
    it = iter(a)
    next(it)
    state = a.state()
    want = next(it)
    b = build_train_loader(cfg, info, 0, 1, seed=5, num_views=2, checkpoint=state)
    got = next(iter(b))
    assert len(got.views) == 2 and not torch.equal(got.views[0], got.views[1])
    for v, w in zip(got.views, want.views):
        assert torch.equal(v, w)
    assert torch.equal(got.labels, want.labels)


def test_bad_recordings_are_refused_naming_the_file(tmp_path):
    good = write_recordings(str(tmp_path / "rec"), 2)
    jpeg = io.BytesIO()
    from PIL import Image

    Image.new("RGB", (4, 4)).save(jpeg, "JPEG")
    bad = {
        "truncated.npy": open(good[0][0], "rb").read()[:-7],
        "foreign.npy": jpeg.getvalue(),
        "empty.npy": None,
        "offsensor.npy": None,
    }
    for name, data in bad.items():
        path = str(tmp_path / "rec" / name)
        if name == "empty.npy":
            np.save(path, np.empty(0, EVENT_DTYPE))
        elif name == "offsensor.npy":  # a recording of a bigger sensor
            ev = recording(1, 20, EventSpec(timesteps=1, height=1, width=1, sensor_height=128, sensor_width=128))
            np.save(path, ev)
        else:
            open(path, "wb").write(data)
        with pytest.raises(ValueError) as e:
            write_split(good + [(path, 0)], ["a", "b", "c"], str(tmp_path / f"out_{name}"), "train", progress=False,
                        events=SPEC)
        assert path in str(e.value), str(e.value)


def test_check_shards_checks_event_frames(event_shards, tmp_path):
    out, _ = event_shards
    assert scan_shards(sorted(str(p) for p in __import__("pathlib").Path(out).glob("*.tar")), 3) == []
    bad = tmp_path / "bad"
    bad.mkdir()
    for f in ("events.json", "classes.json"):
        (bad / f).write_bytes(open(os.path.join(out, f), "rb").read())
    with tarfile.open(bad / "train-000000.tar", "w") as tf:
        for key, data in (("k0.evt", bytes(SPEC.nbytes)), ("k0.cls", b"1"), ("k1.evt", bytes(SPEC.nbytes - 3)),
                          ("k1.cls", b"2"), ("k2.jpg", b"x"), ("k2.cls", b"0")):
            ti = tarfile.TarInfo(key)
            ti.size = len(data)
            tf.addfile(ti, io.BytesIO(data))
    problems = scan_shards([str(bad / "train-000000.tar")], 3, check_sha=False)
    assert any(":k1:" in p and "bytes" in p for p in problems), problems
    assert any(":k2:" in p and "missing .evt" in p for p in problems), problems
    assert not any(":k0:" in p for p in problems), problems
    # the launcher (what docs/EVENTS.md tells users to run): exit 1 naming the shard and key, 0 on clean shards
    check = [sys.executable, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                          "launchers", "check_shards.py"), "--workers", "1", "--no-sha"]
    r = subprocess.run(check + [str(bad / "train-000000.tar")], capture_output=True, text=True)
    assert r.returncode == 1 and f"{bad / 'train-000000.tar'}:k1:" in r.stdout, (r.stdout, r.stderr)
    r = subprocess.run(check + [f"{out}/*.tar"], capture_output=True, text=True)
    assert r.returncode == 0, (r.stdout, r.stderr)
