"""CIFAR10-DVS in its released format -> event shards: ``make_shards.py cifar10dvs`` end to end through DALI.

The tests write recordings in the released byte layout (jAER AEDAT 2.0, as CIFAR10-DVS ships them): ASCII header
lines starting with ``#`` (the first ``#!AER-DAT2.0``), then per event two big-endian uint32, address and timestamp
(us); address = y << 8 | x << 1 | polarity (jAER polarity 1 = OFF). Expected frames: the events mapped plainly
(x' = 127 - y, y' = 127 - x, ON = 1 - bit, as SpikingJelly reads CIFAR10-DVS) and binned by ``reference_frames``.
"""
from __future__ import annotations

import json
import os
import struct
import sys

import numpy as np
import pytest
from data_helpers import data_cfg
from test_data_events import reference_frames

from distsnn.config.schema import AugmentConfig
from distsnn.data import build_val_loader, prepare_dataset
from distsnn.data.dvs_sources import CIFAR10DVS_CLASSES, cifar10dvs_split
from distsnn.data.events import EVENT_DTYPE, EventSpec

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "launchers"))
import make_shards  # noqa: E402

HEADER = b"#!AER-DAT2.0\r\n# This is a raw AE data file - do not edit\r\n# Data format is int32 address, int32 timestamp\r\n"


def aedat2(events: list[tuple[int, int, int, int]]) -> bytes:
    """(t, x, y, jAER polarity bit) -> file bytes, one event at a time."""
    body = b"".join(struct.pack(">II", (y << 8) | (x << 1) | p, t) for t, x, y, p in events)
    return HEADER + body


def raw_events(seed: int, n: int = 60) -> list[tuple[int, int, int, int]]:
    rng = np.random.default_rng(seed)
    ts = np.sort(rng.choice(100_000, n, replace=False))
    return [(int(t), int(rng.integers(0, 128)), int(rng.integers(0, 128)), int(rng.integers(0, 2))) for t in ts]


def as_events(raw) -> np.ndarray:
    ev = np.empty(len(raw), EVENT_DTYPE)
    for k, (t, x, y, p) in enumerate(raw):
        ev[k] = (t, 127 - y, 127 - x, 1 - p)
    return ev


def tree(root, per_class: int = 3) -> dict[str, list]:
    files = {}
    for c, name in enumerate(CIFAR10DVS_CLASSES):
        os.makedirs(os.path.join(root, name), exist_ok=True)
        for i in range(per_class):
            path = os.path.join(root, name, f"cifar10_{name}_{i}.aedat")
            raw = raw_events(100 * c + i)
            open(path, "wb").write(aedat2(raw))
            files[path] = raw
    return files


def test_split_is_fixed_per_class_and_the_same_on_every_machine(tmp_path):
    tree(str(tmp_path), per_class=10)
    classes, splits = cifar10dvs_split(str(tmp_path))
    assert classes == list(CIFAR10DVS_CLASSES)
    assert len(splits["val"]) == 10 and len(splits["train"]) == 90
    assert {lbl for _, lbl in splits["val"]} == set(range(10))  # one val recording per class (9:1)
    assert cifar10dvs_split(str(tmp_path)) == (classes, splits)
    # PCG64(0) over the sorted names, written down once: a changed draw or order would move these
    got = [os.path.basename(p) for p, _ in splits["val"]][:3]
    assert got == ["cifar10_airplane_4.aedat", "cifar10_automobile_2.aedat", "cifar10_bird_5.aedat"], got


def test_cifar10dvs_round_trip_through_make_shards_and_dali(tmp_path):
    files = tree(str(tmp_path / "raw"))
    out = str(tmp_path / "shards")
    assert make_shards.main(["cifar10dvs", str(tmp_path / "raw"), out, "--timesteps", "2", "--size", "48",
                             "--val-fraction", "0.34", "--workers", "1", "--no-progress"]) == 0
    info_json = json.load(open(os.path.join(out, "events.json")))
    assert info_json["spec"]["timesteps"] == 2 and info_json["spec"]["height"] == 48
    assert len(info_json["split"]["val"]) == 10 and len(info_json["split"]["train"]) == 20
    spec = EventSpec(timesteps=2, height=48, width=48, sensor_height=128, sensor_width=128, binning="count")
    want = {reference_frames(as_events(raw), spec).tobytes(): (path, CIFAR10DVS_CLASSES.index(path.split("/")[-2]))
            for path, raw in files.items()}
    cfg = data_cfg(f"{out}/train-*.tar", f"{out}/val-*.tar", image_size=48, batch_size=4,
                   augment=AugmentConfig(pad_crop=0, hflip=False, color_jitter=0.0, grayscale_p=0.0))
    info = prepare_dataset(cfg)
    assert info.num_val == 10 and info.num_train == 20 and info.events.shape == (2, 2, 48, 48)
    seen = []
    for b in build_val_loader(cfg, info, 0, 1):
        x = b.views[0]
        for j in range(x.shape[1]):
            key = x[:, j].numpy().astype(np.uint8).tobytes()
            assert key in want, "frames differ from the recording's reference binning"
            path, label = want[key]
            assert int(b.labels[j]) == label
            seen.append(os.path.relpath(path, tmp_path / "raw"))
    assert sorted(seen) == sorted(info_json["split"]["val"])


@pytest.mark.parametrize("case", ["truncated", "foreign", "empty", "davis"])
def test_bad_recordings_are_refused_naming_the_file(tmp_path, capsys, case):
    tree(str(tmp_path / "raw"), per_class=1)
    bad = str(tmp_path / "raw" / "cat" / "cifar10_cat_9.aedat")
    good = aedat2(raw_events(1))
    data = {"truncated": good[:-3], "foreign": b"\x89PNG\r\n\x1a\n" + bytes(40), "empty": HEADER,
            "davis": HEADER + struct.pack(">II", 1 << 22, 5)}[case]
    open(bad, "wb").write(data)
    rc = make_shards.main(["cifar10dvs", str(tmp_path / "raw"), str(tmp_path / "out"), "--val-fraction", "0.5",
                           "--workers", "1", "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and bad in err, err


def test_a_tree_that_is_not_cifar10dvs_is_refused(tmp_path, capsys):
    tree(str(tmp_path / "raw"), per_class=1)
    os.rename(tmp_path / "raw" / "cat", tmp_path / "raw" / "kitten")
    assert make_shards.main(["cifar10dvs", str(tmp_path / "raw"), str(tmp_path / "out"), "--no-progress"]) == 2
    assert "kitten" in capsys.readouterr().err
