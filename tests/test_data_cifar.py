"""CIFAR-10/100 archives -> PNG shards: every pixel and label round-trips through a real DALI pipeline; damaged
archives are refused naming the file; the CIFAR crop and Cutout in the train pipeline do what they say.

The archives are built here in the real format: Python pickles (protocol 2, bytes keys) of dicts with
``b"data"`` = uint8 [N, 3072] (R plane, G plane, B plane) and the label lists, in ``cifar-10-batches-py`` /
``cifar-100-python`` folders, tarred and gzipped like the downloads."""
import io
import json
import os
import pickle
import tarfile

import numpy as np
import pytest
import torch
from nvidia.dali import pipeline_def

from distsnn.config import ConfigError, load
from distsnn.config.schema import AugmentConfig
from distsnn.data import cifar, pipelines
from distsnn.data.dataset_info import prepare_dataset
from distsnn.data.integrity import scan_shards
from distsnn.data.loader import build_val_loader
from launchers import make_shards
from tests.data_helpers import data_cfg

RNG = np.random.default_rng(7)


def _pickle(obj) -> bytes:
    return pickle.dumps(obj, protocol=2)


def _planes(images: np.ndarray) -> np.ndarray:
    """[N, 32, 32, 3] -> the archive's [N, 3072] rows: 1024 red, 1024 green, 1024 blue, each row-major."""
    return np.stack([images[..., c].reshape(len(images), -1) for c in range(3)], axis=1).reshape(len(images), -1)


def _images(n: int, low: int = 0) -> np.ndarray:
    return RNG.integers(low, 256, size=(n, 32, 32, 3), dtype=np.uint8)


def cifar10_members(per_batch=3, n_test=4, num_classes=10):
    """Member name -> bytes of a small CIFAR-10 archive, and the images/labels per split."""
    names = [f"class{c}".encode() for c in range(num_classes)]
    members = {"cifar-10-batches-py/batches.meta": _pickle({b"label_names": names, b"num_cases_per_batch": per_batch})}
    truth = {"train": ([], []), "test": ([], [])}
    for i, member in enumerate([f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]):
        n = n_test if member == "test_batch" else per_batch
        imgs, labs = _images(n), RNG.integers(0, num_classes, n).tolist()
        members[f"cifar-10-batches-py/{member}"] = _pickle(
            {b"batch_label": member.encode(), b"labels": labs, b"data": _planes(imgs),
             b"filenames": [f"img_{i}_{j}.png".encode() for j in range(n)]})
        split = "test" if member == "test_batch" else "train"
        truth[split][0].append(imgs)
        truth[split][1].extend(labs)
    return members, {k: (np.concatenate(v[0]), np.array(v[1])) for k, v in truth.items()}


def cifar100_members(n_train=6, n_test=3, low=0):
    fine = [f"fine{c}".encode() for c in range(100)]
    coarse = [f"coarse{c}".encode() for c in range(20)]
    members = {"cifar-100-python/meta": _pickle({b"fine_label_names": fine, b"coarse_label_names": coarse})}
    truth = {}
    for split, n in (("train", n_train), ("test", n_test)):
        imgs = _images(n, low)
        f = RNG.permutation(100)[:n].tolist()  # distinct fine labels: the label identifies the image
        c = [x // 5 for x in f]
        members[f"cifar-100-python/{split}"] = _pickle({b"filenames": [b"x.png"] * n, b"batch_label": split.encode(),
                                                        b"fine_labels": f, b"coarse_labels": c, b"data": _planes(imgs)})
        truth[split] = (imgs, np.array(f), np.array(c))
    return members, truth


def write_tar_gz(path, members: dict) -> str:
    with tarfile.open(path, "w:gz") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return str(path)


def write_folder(root, members: dict) -> str:
    for name, data in members.items():
        os.makedirs(os.path.join(root, os.path.dirname(name)), exist_ok=True)
        with open(os.path.join(root, name), "wb") as f:
            f.write(data)
    return str(root)


@pipeline_def(batch_size=8, num_threads=1, device_id=None, seed=0)
def _decoded(files, index):
    """The project's reader and decoder, no augmentation: [HWC uint8 image, cls bytes]."""
    enc, cls = pipelines.read_shards(files, index, 0, 1, shuffle=False, buffer=1, stick=True)
    return pipelines.decode(enc, "cpu"), cls


def read_back(out, split):
    """Every (image, label) in ``out/<split>-*.tar``, decoded by DALI."""
    info = prepare_dataset(data_cfg(train=f"{out}/train-*.tar", val=f"{out}/{split}-*.tar"))
    pipe = _decoded(info.val_files, info.val_index)
    pipe.build()
    images, labels = [], []
    while len(labels) < info.num_val:
        img, cls = pipe.run()
        for j in range(len(img)):
            images.append(np.array(img[j]))
            labels.append(int(bytes(np.array(cls[j])).decode()))
    return images[:info.num_val], labels[:info.num_val]


def assert_same_samples(got_images, got_labels, images, labels):
    """The shards hold exactly the archive's (image, label) pairs, in any order."""
    want = sorted((im.tobytes(), int(lab)) for im, lab in zip(images, labels))
    got = sorted((im.tobytes(), lab) for im, lab in zip(got_images, got_labels))
    assert len(got) == len(want) and got == want


def test_cifar10_archive_round_trips_every_pixel_and_label(tmp_path):
    members, truth = cifar10_members()
    archive = write_tar_gz(tmp_path / "cifar-10-python.tar.gz", members)
    out = tmp_path / "shards"
    assert make_shards.main(["cifar", archive, str(out), "--workers", "1", "--no-progress", "--max-count", "4"]) == 0
    assert json.loads((out / "classes.json").read_text()) == [f"class{c}" for c in range(10)]
    manifest = json.loads((out / "manifest.json").read_text())["shards"]
    for split, (images, labels) in truth.items():
        assert sum(e["count"] for k, e in manifest.items() if k.startswith(split)) == len(labels)
        assert all((out / k).with_suffix(".idx").exists() for k in manifest)
        assert_same_samples(*read_back(out, split), images, labels)
    with tarfile.open(out / "train-000000.tar") as tf:  # lossless members
        assert {os.path.splitext(m.name)[1] for m in tf.getmembers()} == {".png", ".cls"}
    assert scan_shards(sorted(str(p) for p in out.glob("*.tar"))) == []  # check_shards.py accepts .png samples


def test_val_loader_sees_the_test_image_unchanged(tmp_path):
    """At val_resize = image_size = 32 the evaluation sees every pixel as stored (no resampling)."""
    members, truth = cifar100_members(n_train=8, n_test=10)
    out = tmp_path / "shards"
    assert make_shards.main(["cifar", write_tar_gz(tmp_path / "c.tar.gz", members), str(out), "--workers", "1",
                             "--no-progress"]) == 0
    images, fine, _ = truth["test"]
    by_label = dict(zip(fine.tolist(), images))
    cfg = data_cfg(train=f"{out}/train-*.tar", val=f"{out}/test-*.tar", image_size=32, val_resize=32,
                   augment=AugmentConfig(mean=[0.5, 0.25, 0.0], std=[0.5, 0.25, 1.0]))
    seen = 0
    for batch in build_val_loader(cfg, prepare_dataset(cfg), 0, 1):
        mean, std = torch.tensor(cfg.augment.mean).view(3, 1, 1), torch.tensor(cfg.augment.std).view(3, 1, 1)
        for view, label in zip(batch.views[0], batch.labels.tolist()):
            pixels = torch.round((view * std + mean) * 255.0).permute(1, 2, 0).to(torch.uint8).numpy()
            assert np.array_equal(pixels, by_label[label])
            seen += 1
    assert seen == 10


def test_cifar100_folder_fine_and_coarse_labels(tmp_path):
    members, truth = cifar100_members()
    root = write_folder(tmp_path / "extracted", members)
    fine, coarse = tmp_path / "fine", tmp_path / "coarse"
    assert make_shards.main(["cifar", os.path.join(root, "cifar-100-python"), str(fine), "--workers", "1",
                             "--no-progress"]) == 0
    assert make_shards.main(["cifar", root, str(coarse), "--labels", "coarse", "--workers", "1", "--no-progress"]) == 0
    assert json.loads((fine / "classes.json").read_text()) == [f"fine{c}" for c in range(100)]
    assert json.loads((coarse / "classes.json").read_text()) == [f"coarse{c}" for c in range(20)]
    for split, (images, f, c) in truth.items():
        assert_same_samples(*read_back(fine, split), images, f)
        assert_same_samples(*read_back(coarse, split), images, c)


def test_cifar10_has_no_coarse_labels(tmp_path):
    archive = write_tar_gz(tmp_path / "c10.tar.gz", cifar10_members(per_batch=1, n_test=1)[0])
    with pytest.raises(ValueError, match="'coarse' is not available for cifar10"):
        cifar.load(archive, "coarse")


def _damaged(tmp_path, kind):
    members, _ = cifar10_members(per_batch=2, n_test=2)
    batch = "cifar-10-batches-py/data_batch_3"
    if kind == "truncated gzip":
        path = write_tar_gz(tmp_path / "cifar-10-python.tar.gz", members)
        data = open(path, "rb").read()
        open(path, "wb").write(data[: len(data) // 2])
        return path, path
    if kind == "missing batch":
        del members[batch]
    elif kind == "garbage pickle":
        members[batch] = b"\x80\x02}q\x00(X\x04\x00\x00\x00data" + b"\x00" * 50
    elif kind == "code in pickle":
        members[batch] = pickle.dumps(os.system, protocol=2)
    elif kind == "wrong shape":
        obj = pickle.loads(members[batch], encoding="bytes")
        obj[b"data"] = obj[b"data"][:, :1000]
        members[batch] = _pickle(obj)
    elif kind == "label out of range":
        obj = pickle.loads(members[batch], encoding="bytes")
        obj[b"labels"] = [3, 10]
        members[batch] = _pickle(obj)
    root = write_folder(tmp_path / "x", members)
    return os.path.join(root, "cifar-10-batches-py"), os.path.join(root, batch)


@pytest.mark.parametrize("kind,why", [
    ("truncated gzip", "damaged or not a tar"), ("missing batch", "missing"), ("garbage pickle", "not a readable"),
    ("code in pickle", "refusing to load posix.system"), ("wrong shape", "expected uint8 [N, 3072]"),
    ("label out of range", "outside [0, 10)"),
])
def test_damaged_archive_is_refused_naming_the_file(tmp_path, capsys, kind, why):
    src, culprit = _damaged(tmp_path, kind)
    with pytest.raises(ValueError) as e:
        cifar.load(src)
    assert str(e.value).startswith(culprit) and why in str(e.value), str(e.value)
    assert make_shards.main(["cifar", src, str(tmp_path / "out"), "--no-progress"]) == 2
    assert culprit in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


# --- the CIFAR crop and Cutout in the real train pipeline ------------------------------------------------------
PAD, HOLE = 4, 8


def _train_views(tmp_path, **aug):
    """One epoch of train views (x 255, HWC) and the source image of each (labels identify images)."""
    members, truth = cifar100_members(n_train=24, n_test=2, low=1)  # pixels >= 1: 0 only from padding / Cutout
    out = tmp_path / "shards"
    assert make_shards.main(["cifar", write_tar_gz(tmp_path / "c100.tar.gz", members), str(out), "--workers", "1",
                             "--no-progress"]) == 0
    images, fine, _ = truth["train"]
    by_label = dict(zip(fine.tolist(), images))
    cfg = AugmentConfig(hflip=False, mean=[0.0] * 3, std=[1.0] * 3, color_jitter=0.0, grayscale_p=0.0, **aug)
    info = prepare_dataset(data_cfg(train=f"{out}/train-*.tar", val=f"{out}/test-*.tar"))
    pipe = pipelines.train_pipeline(info.train_files, info.train_index, 0, 1, cfg, 32, 8, 1, "cpu",
                                    batch_size=8, num_threads=1, device_id=None, seed=3)
    pipe.build()
    views, sources = [], []
    for _ in range(3):
        view, cls = pipe.run()
        for j in range(len(view)):
            views.append(np.rint(np.array(view[j]).transpose(1, 2, 0) * 255.0).astype(np.int64))
            sources.append(by_label[int(bytes(np.array(cls[j])).decode())].astype(np.int64))
    return views, sources


def _shift(src, dy, dx):
    """torchvision RandomCrop(32, padding=PAD) at offset (dy, dx) from the top-left corner of the image."""
    padded = np.pad(src, ((PAD, PAD), (PAD, PAD), (0, 0)))
    return padded[PAD + dy:PAD + dy + 32, PAD + dx:PAD + dx + 32]


def _offset(view, src, cutout_allowed):
    """The crop offset that explains ``view`` (pixels not 0 must match exactly; 0 only where Cutout may be)."""
    for dy in range(-PAD, PAD + 1):
        for dx in range(-PAD, PAD + 1):
            want = _shift(src, dy, dx)
            keep = view.any(axis=2)
            if np.array_equal(view[keep], want[keep]) and (cutout_allowed or keep.sum() == want.any(axis=2).sum()):
                return (dy, dx), ~keep & want.any(axis=2)
    raise AssertionError("no CIFAR crop offset in [-4, 4]^2 reproduces this view")


def test_pad_crop_is_torchvisions_random_crop_with_padding(tmp_path):
    views, sources = _train_views(tmp_path, pad_crop=PAD)
    offsets = {_offset(v, s, cutout_allowed=False)[0] for v, s in zip(views, sources)}
    assert len(offsets) > 5  # random offsets, not one fixed window


def _square(cy, cx):
    """DeVries & Taylor's hole: rows [cy - 4, cy + 4) and cols [cx - 4, cx + 4), clipped to the 32 x 32 view."""
    m = np.zeros((32, 32), bool)
    m[max(cy - HOLE // 2, 0):cy + HOLE - HOLE // 2, max(cx - HOLE // 2, 0):cx + HOLE - HOLE // 2] = True
    return m


def test_cutout_erases_one_clipped_square_per_view(tmp_path):
    views, sources = _train_views(tmp_path, pad_crop=PAD, cutout=HOLE)
    centres, holes = [], 0
    for v, s in zip(views, sources):
        (dy, dx), hole = _offset(v, s, cutout_allowed=True)
        image = _shift(s, dy, dx).any(axis=2)  # pixels inside the source image (not padding)
        fits = [(cy, cx) for cy in range(32) for cx in range(32) if np.array_equal(_square(cy, cx) & image, hole)]
        assert fits, "the zeroed pixels are not one (clipped) 8 x 8 square"
        assert (v[hole] == 0).all()
        centres.append(fits[0])
        holes += hole.any()
    assert len(set(centres)) > 5 and holes > len(views) // 2  # a random centre, mostly on the image


def test_cifar_augment_keys_are_checked(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("method: {name: baseline}\ndata: {source: digits, augment: {pad_crop: 4, min_scale: 0.5}}\n")
    with pytest.raises(ConfigError, match=f"{bad}: data.augment.min_scale: .*pad_crop"):
        load(bad)
    bad.write_text("method: {name: baseline}\ndata: {source: digits, image_size: 16, val_resize: 16, "
                   "augment: {cutout: 17}}\n")
    with pytest.raises(ConfigError, match=f"{bad}: data.augment.cutout: 17 exceeds data.image_size"):
        load(bad)
