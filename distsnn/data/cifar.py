"""CIFAR-10 / CIFAR-100 from the standard python archives, as lossless PNG samples for the shard writer.

Accepted sources: ``cifar-10-python.tar.gz`` / ``cifar-100-python.tar.gz``, their extracted folders
(``cifar-10-batches-py`` / ``cifar-100-python``), or a folder holding one of those. Layout of the pickles
(Krizhevsky's page): a dict with ``b"data"`` = uint8 ``[N, 3072]`` (the 1024 red, then green, then blue values
of a 32x32 image, row-major) and the labels (CIFAR-10 ``b"labels"``; CIFAR-100 ``b"fine_labels"`` and
``b"coarse_labels"``); class names in ``batches.meta`` (``b"label_names"``) / ``meta`` (``b"fine_label_names"``,
``b"coarse_label_names"``).

Pickles are read with an unpickler that only builds numpy arrays and plain containers, so an archive cannot run
code. Any damage (unreadable gzip/tar, missing member, bad pickle, wrong shape, label out of range) raises
``ValueError`` naming the file (and the member inside an archive).
"""
from __future__ import annotations

import io
import os
import pickle
import tarfile

import numpy as np

SIDE = 32
PIXELS = 3 * SIDE * SIDE
# variant -> (folder inside the archive, train members, test member, meta member, label keys by label set, name keys)
LAYOUTS = {
    "cifar10": ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], "test_batch", "batches.meta",
                {"fine": b"labels"}, {"fine": b"label_names"}),
    "cifar100": ("cifar-100-python", ["train"], "test", "meta",
                 {"fine": b"fine_labels", "coarse": b"coarse_labels"},
                 {"fine": b"fine_label_names", "coarse": b"coarse_label_names"}),
}
_ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
            ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
            ("numpy._core.multiarray", "scalar"), ("_codecs", "encode")}


class _SafeUnpickler(pickle.Unpickler):
    """Builds numpy arrays, dicts, lists, bytes and numbers; refuses any other global (no code from the file)."""

    def find_class(self, module, name):
        if (module, name) in _ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} (a CIFAR pickle holds only numpy arrays)")


def _unpickle(data: bytes, where: str) -> dict:
    try:
        obj = _SafeUnpickler(io.BytesIO(data), encoding="bytes").load()
    except Exception as e:  # pickle raises many types on damaged input
        raise ValueError(f"{where}: not a readable CIFAR pickle ({type(e).__name__}: {e})") from None
    if not isinstance(obj, dict):
        raise ValueError(f"{where}: not a CIFAR pickle (a {type(obj).__name__}, expected a dict)")
    return obj


class _Source:
    """Member files of one CIFAR variant, from a .tar.gz or a folder; ``read(member)`` -> (bytes, name for errors)."""

    def __init__(self, path: str):
        self.path = path
        if os.path.isdir(path):
            self.variant, self.folder = self._find_folder(path)
            self._members = None
        else:
            self._members = self._read_archive(path)
            self.variant = next((v for v, lay in LAYOUTS.items() if f"{lay[0]}/{lay[3]}" in self._members), None)
            if self.variant is None:
                raise ValueError(f"{path}: no CIFAR meta file in the archive (expected cifar-10-batches-py/"
                                 f"batches.meta or cifar-100-python/meta); found {sorted(self._members)[:5]}")

    @staticmethod
    def _read_archive(path: str) -> dict[str, bytes]:
        try:
            with tarfile.open(path, "r:*") as tf:
                return {m.name.lstrip("./"): tf.extractfile(m).read() for m in tf.getmembers() if m.isfile()}
        except FileNotFoundError:
            raise ValueError(f"{path}: no such file or folder") from None
        except (tarfile.TarError, EOFError, OSError) as e:  # gzip/zlib errors are OSError / EOFError
            raise ValueError(f"{path}: damaged or not a tar(.gz) archive ({type(e).__name__}: {e})") from None

    @staticmethod
    def _find_folder(path: str) -> tuple[str, str]:
        for variant, lay in LAYOUTS.items():
            for folder in (path, os.path.join(path, lay[0])):
                if os.path.isfile(os.path.join(folder, lay[3])):
                    return variant, folder
        raise ValueError(f"{path}: not an extracted CIFAR folder (no batches.meta or meta here or in "
                         f"cifar-10-batches-py/ or cifar-100-python/)")

    def read(self, member: str) -> tuple[bytes, str]:
        if self._members is None:
            name = os.path.join(self.folder, member)
            if not os.path.isfile(name):
                raise ValueError(f"{name}: missing (a complete {self.variant} folder has "
                                 f"{', '.join(self.members())})")
            with open(name, "rb") as f:
                return f.read(), name
        full = f"{LAYOUTS[self.variant][0]}/{member}"
        if full not in self._members:
            raise ValueError(f"{self.path}:{full}: missing from the archive")
        return self._members[full], f"{self.path}:{full}"

    def members(self) -> list[str]:
        _, train, test, meta, _, _ = LAYOUTS[self.variant]
        return [*train, test, meta]


def _images_labels(obj: dict, key: bytes, num_classes: int, where: str) -> tuple[np.ndarray, np.ndarray]:
    """[N, 32, 32, 3] uint8 (HWC) and [N] int64 from one batch dict, checked."""
    if b"data" not in obj or key not in obj:
        raise ValueError(f"{where}: no {b'data'!r} / {key!r} entry (keys: {sorted(obj)[:6]})")
    data, labels = obj[b"data"], np.asarray(obj[key])
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != PIXELS:
        shape = getattr(data, "shape", None)
        raise ValueError(f"{where}: data is {type(data).__name__} {getattr(data, 'dtype', '')} {shape}, "
                         f"expected uint8 [N, {PIXELS}]")
    if labels.ndim != 1 or len(labels) != len(data) or labels.dtype.kind not in "iu":
        raise ValueError(f"{where}: {len(labels)} {key.decode()} for {len(data)} images (expected one integer each)")
    if len(labels) and not (0 <= labels.min() and labels.max() < num_classes):
        raise ValueError(f"{where}: {key.decode()} outside [0, {num_classes}): min {labels.min()}, max {labels.max()}")
    # [N, 3072] = per image 1024 R, 1024 G, 1024 B, each row-major 32x32 -> [N, 3, 32, 32] -> HWC
    return data.reshape(-1, 3, SIDE, SIDE).transpose(0, 2, 3, 1), labels.astype(np.int64)


def load(path: str, labels: str = "fine") -> tuple[str, list[str], dict[str, tuple[np.ndarray, np.ndarray]]]:
    """``(variant, class names, {"train": (images [N, 32, 32, 3] uint8, labels [N]), "test": (...)})``;
    ``labels``: ``fine`` (CIFAR-100's 100 classes; CIFAR-10's only set) or ``coarse`` (CIFAR-100's 20)."""
    src = _Source(path)
    folder, train, test, meta, label_keys, name_keys = LAYOUTS[src.variant]
    if labels not in label_keys:
        raise ValueError(f"labels: {labels!r} is not available for {src.variant} (choose {sorted(label_keys)})")
    data, where = src.read(meta)
    m = _unpickle(data, where)
    names = m.get(name_keys[labels])
    if not isinstance(names, list) or not names:
        raise ValueError(f"{where}: no {name_keys[labels]!r} list of class names")
    classes = [n.decode() if isinstance(n, bytes) else str(n) for n in names]
    out = {}
    for split, members in (("train", train), ("test", [test])):
        parts = []
        for mem in members:
            data, where = src.read(mem)
            parts.append(_images_labels(_unpickle(data, where), label_keys[labels], len(classes), where))
        out[split] = (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]))
    return src.variant, classes, out


def png_bytes(image: np.ndarray) -> bytes:
    """[32, 32, 3] uint8 -> PNG bytes (lossless: every pixel decodes back exactly)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image, "RGB").save(buf, "PNG")
    return buf.getvalue()


def samples(images: np.ndarray, labels: np.ndarray) -> list[tuple[bytes, int]]:
    """``[(png bytes, label)]`` for the shard writer (``write_split(..., keep_png=True)``), in archive order."""
    return [(png_bytes(img), int(lab)) for img, lab in zip(images, labels)]
