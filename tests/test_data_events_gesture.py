"""DVS128 Gesture in its released format -> event shards: ``make_shards.py dvsgesture`` end to end through DALI.

The tests write the released layout: ``user*_<light>.aedat`` in AEDAT 3.1 (ASCII header lines ``#...\\r\\n`` from
``#!AER-DAT3.1`` to ``#!END-HEADER``; then packets: a 28-byte little-endian header, uint16 type, uint16 source,
uint32 event size, ts offset, ts overflow, capacity, number, valid; then capacity x size bytes; a polarity event
(type 1) is uint32 ``x << 17 | y << 2 | p << 1`` and uint32 timestamp), its ``<stem>_labels.csv``
(``class,startTime_usec,endTime_usec``, classes 1..11) and ``trials_to_train.txt`` / ``trials_to_test.txt``.
"""
from __future__ import annotations

import os
import struct
import sys

import numpy as np
import pytest
from data_helpers import data_cfg
from test_data_events import reference_frames

from distsnn.config.schema import AugmentConfig
from distsnn.data import build_val_loader, prepare_dataset
from distsnn.data.events import EVENT_DTYPE, EventSpec

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "launchers"))
import make_shards  # noqa: E402

HEADER = b"#!AER-DAT3.1\r\n#Format: RAW\r\n#Source 1: DVS128\r\n#!END-HEADER\r\n"


def packet(kind: int, events: list[tuple[int, int, int, int]]) -> bytes:
    body = b"".join(struct.pack("<II", (x << 17) | (y << 2) | (p << 1), t) for t, x, y, p in events)
    return struct.pack("<HHIIIIII", kind, 1, 8, 4, 0, len(events), len(events), len(events)) + body


def write_user(root, stem: str, trials: list[tuple[int, int, int]], seed: int) -> dict:
    """One recording with events inside each (class, start, end) trial plus a non-polarity packet; returns
    {(start, end): events} of the polarity events in each trial."""
    rng = np.random.default_rng(seed)
    packets, per_trial = [], {}
    for c, a, b in trials:
        ts = np.sort(rng.choice(np.arange(a, b), 50, replace=False))
        ev = [(int(t), int(rng.integers(0, 128)), int(rng.integers(0, 128)), int(rng.integers(0, 2))) for t in ts]
        per_trial[(a, b)] = ev
        packets += [packet(1, ev[:20]), packet(2, [(a, 1, 1, 0)]), packet(1, ev[20:])]  # type 2 (frames): skipped
    open(os.path.join(root, stem + ".aedat"), "wb").write(HEADER + b"".join(packets))
    with open(os.path.join(root, stem + "_labels.csv"), "w") as f:
        f.write("class,startTime_usec,endTime_usec\n" + "".join(f"{c},{a},{b}\n" for c, a, b in trials))
    return per_trial


def as_events(raw) -> np.ndarray:
    ev = np.empty(len(raw), EVENT_DTYPE)
    for k, (t, x, y, p) in enumerate(raw):
        ev[k] = (t, x, y, p)
    return ev


def gesture_tree(root) -> dict:
    os.makedirs(root, exist_ok=True)
    want = {}
    users = {"user01_fluorescent": [(1, 1000, 5000), (5, 6000, 9000), (11, 9500, 12000)],
             "user24_led": [(2, 100, 3000), (10, 4000, 8000)]}
    for seed, (stem, trials) in enumerate(users.items()):
        for (a, b), ev in write_user(root, stem, trials, seed).items():
            want[(stem, a, b)] = (ev, next(c for c, s, e in trials if (s, e) == (a, b)) - 1)
    open(os.path.join(root, "trials_to_train.txt"), "w").write("user01_fluorescent.aedat\n")
    open(os.path.join(root, "trials_to_test.txt"), "w").write("user24_led.aedat\n")
    return want


def test_gesture_trials_round_trip_through_make_shards_and_dali(tmp_path):
    want = gesture_tree(str(tmp_path / "DvsGesture"))
    out = str(tmp_path / "shards")
    assert make_shards.main(["dvsgesture", str(tmp_path / "DvsGesture"), out, "--timesteps", "3", "--size", "32",
                             "--workers", "1", "--no-progress"]) == 0
    spec = EventSpec(timesteps=3, height=32, width=32, sensor_height=128, sensor_width=128, binning="count")
    frames = {reference_frames(as_events(ev), spec).tobytes(): (key, label) for key, (ev, label) in want.items()}
    cfg = data_cfg(f"{out}/train-*.tar", f"{out}/test-*.tar", image_size=32, batch_size=2,
                   augment=AugmentConfig(pad_crop=0, hflip=False, color_jitter=0.0, grayscale_p=0.0))
    info = prepare_dataset(cfg)
    assert (info.num_train, info.num_val, info.num_classes) == (3, 2, 11)
    seen = []
    for b in build_val_loader(cfg, info, 0, 1):
        for j in range(b.views[0].shape[1]):
            key = b.views[0][:, j].numpy().astype(np.uint8).tobytes()
            assert key in frames, "a test trial's frames differ from the reference binning of its window"
            (stem, _, _), label = frames[key]
            assert stem == "user24_led" and int(b.labels[j]) == label  # the official split: user 24 is test
            seen.append(key)
    assert len(set(seen)) == 2


@pytest.mark.parametrize("case", ["truncated", "foreign", "empty", "labels_outside", "labels_bad_class",
                                  "labels_missing", "listed_missing"])
def test_bad_gesture_input_is_refused_naming_the_file(tmp_path, capsys, case):
    root = tmp_path / "DvsGesture"
    gesture_tree(str(root))
    aedat, csv = root / "user01_fluorescent.aedat", root / "user01_fluorescent_labels.csv"
    culprit = {"truncated": aedat, "foreign": aedat, "empty": aedat, "labels_outside": aedat, "labels_bad_class": csv, "labels_missing": csv,
               "listed_missing": root / "user02_lab.aedat"}[case]
    if case == "truncated":
        aedat.write_bytes(aedat.read_bytes()[:-5])
    elif case == "foreign":  # an AEDAT 2.0 file (CIFAR10-DVS's format) under a gesture name
        aedat.write_bytes(b"#!AER-DAT2.0\r\n" + struct.pack(">II", 5, 100))
    elif case == "empty":  # the header alone: a recording without events, so its labelled windows are empty
        aedat.write_bytes(HEADER)
    elif case == "labels_outside":  # a trial window where the recording has no events
        csv.write_text(csv.read_text() + "3,50000,60000\n")
    elif case == "labels_bad_class":
        csv.write_text(csv.read_text() + "12,13000,14000\n")
    elif case == "labels_missing":
        csv.unlink()
    else:
        (root / "trials_to_train.txt").write_text("user01_fluorescent.aedat\nuser02_lab.aedat\n")
    rc = make_shards.main(["dvsgesture", str(root), str(tmp_path / "out"), "--workers", "1", "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and str(culprit) in err, err
