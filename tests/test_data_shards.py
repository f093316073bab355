"""Shard writer, DALI index files, manifest and shard patterns, on real files."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile

import numpy as np
import pytest
from data_helpers import image_folder, solid_jpeg

from distsnn.config import ConfigError
from distsnn.data import image_sources, resolve_shards
from distsnn.data.index_file import index_path_for
from distsnn.data.manifest import load_manifest, sha256_file
from distsnn.data.shard_writer import write_split

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def read_tar(path):
    """{key: {ext: bytes}} and keys in file order, read plainly with tarfile."""
    out, order = {}, []
    with tarfile.open(path) as tf:
        for m in tf:
            key, ext = m.name.split(".", 1)
            if key not in out:
                order.append(key)
            out.setdefault(key, {})[ext] = tf.extractfile(m).read()
    return out, order


def make(tmp_path, seed=0, n=20, **kw):
    src = tmp_path / "src"
    if not src.exists():
        image_folder(str(src), n, png_every=7)
    classes, samples = image_sources.image_folder(str(src))
    out = tmp_path / f"out{seed}"
    files = write_split(samples, classes, str(out), "train", seed=seed, max_count=6, progress=False, **kw)
    return src, out, files, samples


def test_writer_round_trip_keeps_jpeg_bytes_labels_and_writes_manifest(tmp_path):
    src, out, files, samples = make(tmp_path)
    assert len(files) == 4  # 20 samples, at most 6 per shard
    seen = {}
    for f in files:
        content, order = read_tar(f)
        for key in order:
            assert key not in seen, f"duplicate key {key}"
            seen[key] = content[key]
        m = load_manifest(str(out))[os.path.basename(f)]
        assert m["count"] == len(order) and m["sha256"] == sha256_file(f)
    assert len(seen) == 20
    by_stem = {os.path.splitext(os.path.basename(p))[0]: (p, c) for p, c in samples}
    for key, comp in seen.items():
        stem = key.split("_", 2)[2]
        path, label = by_stem[stem]
        assert comp["cls"] == str(label).encode()
        if path.endswith(".jpg"):
            assert comp["jpg"] == open(path, "rb").read()  # original JPEG bytes kept
        else:
            assert comp["jpg"][:3] == b"\xff\xd8\xff"  # PNG re-encoded as JPEG
    assert json.load(open(out / "classes.json")) == ["class_0", "class_1", "class_2"]


def test_index_files_equal_dali_wds2idx(tmp_path):
    _, _, files, _ = make(tmp_path)
    wds2idx = os.path.join(os.path.dirname(sys.executable), "wds2idx")
    for f in files:
        ref = str(tmp_path / "ref.idx")
        subprocess.run([wds2idx, f, ref], check=True, capture_output=True)
        assert open(index_path_for(f)).read() == open(ref).read()


def test_shuffle_is_seeded_and_reproducible(tmp_path):
    def order(out_files):
        return [k.split("_", 2)[2] for f in out_files for k in read_tar(f)[1]]

    _, _, a, _ = make(tmp_path, seed=1)
    (tmp_path / "again").mkdir()
    _, _, b, samples = make(tmp_path / "again", seed=1)
    _, _, c, _ = make(tmp_path, seed=2)
    assert order(a) == order(b)
    assert [sha256_file(x) for x in a] == [sha256_file(x) for x in b]  # byte-identical shards
    assert order(a) != order(c)
    assert sorted(order(a)) == sorted(order(c))
    stems = [os.path.splitext(os.path.basename(p))[0] for p, _ in samples]
    assert order(a) != sorted(stems)


def test_rerun_skips_finished_shards_and_redoes_unfinished(tmp_path):
    _, out, files, _ = make(tmp_path)
    stamps = [os.stat(f).st_mtime_ns for f in files]
    os.remove(os.path.splitext(files[2])[0] + ".json")  # shard 2 "crashed" before its receipt
    _, _, again, _ = make(tmp_path, workers=2)
    assert again == files
    new = [os.stat(f).st_mtime_ns for f in files]
    assert new[0] == stamps[0] and new[1] == stamps[1] and new[3] == stamps[3]
    assert new[2] != stamps[2]
    assert not [p for p in os.listdir(out) if ".tmp-" in p]


def test_resolve_shards_globs_braces_and_names_key_and_pattern(tmp_path):
    for i in range(3):
        (tmp_path / f"s-{i:03d}.tar").write_bytes(b"")
        (tmp_path / f"s-{i:03d}.idx").write_bytes(b"")
    assert resolve_shards(str(tmp_path / "s-*"), "k") == [str(tmp_path / f"s-{i:03d}.tar") for i in range(3)]
    assert resolve_shards(str(tmp_path / "s-{000..001}.tar"), "k") == [str(tmp_path / f"s-{i:03d}.tar") for i in range(2)]
    pat = str(tmp_path / "nothing-*.tar")
    with pytest.raises(ConfigError, match=r"data.train_shards: pattern '.*nothing-\*.tar' matches no file"):
        resolve_shards(pat, "data.train_shards")
    with pytest.raises(ConfigError, match="data.val_shards: .*s-003.tar"):
        resolve_shards(str(tmp_path / "s-{000..003}.tar"), "data.val_shards")


def imagenet_tree(root):
    wnids = ["n01440764", "n01443537", "n01484850"]
    for w in wnids:
        os.makedirs(root / "train" / w)
        (root / "train" / w / f"{w}_1.JPEG").write_bytes(solid_jpeg(1, 0))
    os.makedirs(root / "val")
    truth = [2, 0, 1, 1]
    for i in range(4):
        (root / "val" / f"ILSVRC2012_val_{i + 1:08d}.JPEG").write_bytes(solid_jpeg(i, truth[i]))
    return wnids, truth


def test_imagenet_flat_val_with_kaggle_csv_and_devkit(tmp_path):
    from scipy.io import savemat

    wnids, truth = imagenet_tree(tmp_path)
    rows = ["ImageId,PredictionString"] + [
        f"ILSVRC2012_val_{i + 1:08d},{wnids[t]} 1 2 3 4 {wnids[t]} 5 6 7 8" for i, t in enumerate(truth)]
    # rows in another order than the files: labels are matched by ImageId, not by position
    (tmp_path / "LOC_val_solution.csv").write_text("\n".join([rows[0]] + rows[1:][::-1]) + "\n")
    classes, samples = image_sources.imagenet(str(tmp_path), "val", str(tmp_path / "LOC_val_solution.csv"))
    assert classes == wnids and [c for _, c in samples] == truth
    # devkit: ILSVRC IDs are not in WNID order -> map through meta.mat
    ilsvrc_id = {"n01440764": 3, "n01443537": 1, "n01484850": 2}
    syn = np.zeros(3, dtype=[("ILSVRC2012_ID", "O"), ("WNID", "O")])
    for k, w in enumerate(wnids):
        syn[k] = (ilsvrc_id[w], w)
    savemat(str(tmp_path / "meta.mat"), {"synsets": syn})
    (tmp_path / "gt.txt").write_text("".join(f"{ilsvrc_id[wnids[t]]}\n" for t in truth))
    classes, samples = image_sources.imagenet(str(tmp_path), "val", str(tmp_path / "gt.txt"), str(tmp_path / "meta.mat"))
    assert [c for _, c in samples] == truth
    classes, samples = image_sources.imagenet(str(tmp_path), "train")
    assert [c for _, c in samples] == [0, 1, 2]


def test_make_shards_launcher_imagenet(tmp_path):
    wnids, truth = imagenet_tree(tmp_path)
    (tmp_path / "val.csv").write_text("ImageId,PredictionString\n" + "".join(
        f"ILSVRC2012_val_{i + 1:08d},{wnids[t]} 1 2 3 4\n" for i, t in enumerate(truth)))
    r = subprocess.run([sys.executable, os.path.join(ROOT, "launchers/make_shards.py"), "imagenet", str(tmp_path),
                        str(tmp_path / "shards"), "--split", "val", "--val-labels", str(tmp_path / "val.csv"),
                        "--workers", "1", "--no-progress"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    content, order = read_tar(str(tmp_path / "shards" / "val-000000.tar"))
    got = {k.split("_")[-1]: int(content[k]["cls"]) for k in order}
    assert got == {f"{i + 1:08d}": t for i, t in enumerate(truth)}
