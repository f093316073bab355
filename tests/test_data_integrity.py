"""Corrupt shards: the offline scan names each problem as shard:key, and a corrupt file met during
training stops the loader with an error naming the shard and key (no silent skip, no hang)."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
import webdataset as wds
from data_helpers import data_cfg, solid_jpeg

from distsnn.data import DataError, build_train_loader, build_val_loader, prepare_dataset
from distsnn.data.index_file import write_index
from distsnn.data.integrity import scan_shards
from distsnn.data.manifest import update_manifest, write_json_atomic

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CPU = torch.device("cpu")


def shard(path, samples, index=True, count=None):
    """Write ``samples`` = [(key, {ext: bytes})] as a tar (+ index, + manifest entry with ``count``)."""
    with wds.TarWriter(str(path), encoder=False) as tw:
        for key, comp in samples:
            tw.write({"__key__": key, **comp})
    if index:
        write_index(str(path))
    update_manifest(os.path.dirname(path), {path.name: {"count": count if count is not None else
                                                        len({k for k, _ in samples})}})
    return str(path)


def good(prefix, n, start=0):
    return [(f"{prefix}{i:03d}", {"jpg": solid_jpeg(i, i % 3), "cls": str(i % 3).encode()}) for i in range(start, start + n)]


@pytest.fixture
def corrupt(tmp_path):
    """One good shard and one shard per problem; returns {problem: (shard path, key)}."""
    write_json_atomic(str(tmp_path / "classes.json"), ["a", "b", "c"])
    cases = {}
    shard(tmp_path / "ok.tar", good("ok", 4))
    bad = good("jpg", 3)
    bad[1][1]["jpg"] = b"this is not a jpeg" * 8
    cases["undecodable image"] = (shard(tmp_path / "badjpg.tar", bad), "jpg001")
    cases["missing .cls"] = (shard(tmp_path / "nocls.tar", good("nc", 1) + [("nc009", {"jpg": solid_jpeg(9, 0)})]), "nc009")
    cases["is not an integer"] = (shard(tmp_path / "txtcls.tar", good("tc", 2) + [("tc007", {"jpg": solid_jpeg(7, 0), "cls": b"seven"})]), "tc007")
    cases["out of range"] = (shard(tmp_path / "range.tar", good("rg", 2) + [("rg005", {"jpg": solid_jpeg(5, 0), "cls": b"3"})]), "rg005")
    cases["duplicate key"] = (shard(tmp_path / "zdup.tar", good("ok", 1, start=2)), "ok002")
    cases["manifest says 5"] = (shard(tmp_path / "count.tar", good("ct", 3), count=5), "-")
    trunc = shard(tmp_path / "trunc.tar", good("tr", 4))
    with open(trunc, "r+b") as f:
        f.truncate(os.path.getsize(trunc) - 3000)
    cases["truncated"] = (trunc, "tr003")
    return tmp_path, cases


def test_scan_names_every_problem(corrupt):
    d, cases = corrupt
    files = sorted(str(p) for p in d.glob("*.tar"))
    problems = scan_shards(files)
    for what, (path, key) in cases.items():
        assert any(p.startswith(f"{path}:{key}: ") and what in p for p in problems), (what, problems)
    assert not [p for p in problems if p.startswith(str(d / "ok.tar") + ":") and "duplicate" not in p]


def test_check_shards_launcher_exit_codes(corrupt):
    d, cases = corrupt
    run = lambda *a: subprocess.run([sys.executable, os.path.join(ROOT, "launchers/check_shards.py"), *a,  # noqa: E731
                                     "--workers", "1"], capture_output=True, text=True)
    r = run(str(d / "*.tar"))
    assert r.returncode == 1
    for path, key in cases.values():
        assert f"{path}:{key}: " in r.stdout
    assert run(str(d / "ok.tar")).returncode == 0
    r = run(str(d / "none-*.tar"))
    assert r.returncode == 2 and "none-*.tar' matches no file" in r.stderr


def loader_error(d, train, build):
    cfg = data_cfg(str(d / train), str(d / train), batch_size=2)
    info = prepare_dataset(cfg)
    with pytest.raises(DataError) as e:
        for _ in range(2):
            for _ in build(cfg, info):
                pass
    return str(e.value)


@pytest.mark.parametrize("name", ["badjpg", "txtcls", "range", "trunc"])
def test_training_stops_naming_shard_and_key(corrupt, name):
    d, cases = corrupt
    what = {"badjpg": "undecodable image", "txtcls": "is not an integer", "range": "out of range", "trunc": "truncated"}[name]
    path, key = cases[what]
    msg = loader_error(d, f"{name}.tar", lambda c, i: build_train_loader(c, i, 0, 1, seed=0, device=CPU))
    assert path in msg, msg
    if name != "trunc":  # DALI's reader names the tar but not the sample of a short tar
        assert key in msg, msg
    msg = loader_error(d, f"{name}.tar", lambda c, i: build_val_loader(c, i, 0, 1, CPU))
    assert path in msg, msg


def test_trainer_refuses_an_empty_glob(tmp_path):
    from distsnn.config import ConfigError

    cfg = data_cfg(str(tmp_path / "train-*.tar"), str(tmp_path / "val-*.tar"))
    with pytest.raises(ConfigError, match=r"data.train_shards: pattern '.*train-\*.tar' matches no file"):
        prepare_dataset(cfg)
