"""The offline event demo end to end: digits "recorded" as DVS events -> event shards -> DALI -> a spiking ResNet.

The accuracy the demo recipe reaches (configs/demo_events_baseline.yaml, 2 CPU ranks) is in docs/EVENTS.md; here a
short test proves the path: events are real (ON and OFF along the digit's edges), ``data.source: event_digits``
builds clean shards, the loaders feed [T, B, 2, H, W] into a spiking ResNet, and evaluation counts exactly."""
from __future__ import annotations

import numpy as np
import timm
import torch

import distsnn.models  # noqa: F401  (registers the students with timm)
from distsnn.config import load
from distsnn.data import build_train_loader, build_val_loader, prepare_dataset
from distsnn.data.event_digits import canvases, record, shift_bilinear
from distsnn.data.integrity import scan_shards
from distsnn.data.sharding import shard_size
from distsnn.train.evaluate import evaluate


def test_shift_bilinear_matches_plain_interpolation():
    rng = np.random.default_rng(0)
    img = rng.random((1, 5, 6))
    got = shift_bilinear(img, 0.25, -1.5)[0]
    for y in range(5):
        for x in range(6):
            sy, sx = y - 0.25, x + 1.5  # content moves by (+0.25, -1.5): sample the source there
            want = 0.0
            for yy in (int(np.floor(sy)), int(np.floor(sy)) + 1):
                for xx in (int(np.floor(sx)), int(np.floor(sx)) + 1):
                    w = (1 - abs(sy - yy)) * (1 - abs(sx - xx))
                    if 0 <= yy < 5 and 0 <= xx < 6 and w > 0:
                        want += w * img[0, yy, xx]
            assert abs(got[y, x] - want) < 1e-12


def test_saccades_emit_on_and_off_events_at_edges_only():
    images, _ = canvases()
    ev = record(images[:3])
    for e, img in zip(ev, images[:3]):
        assert 1000 < len(e) and 0.3 < e["p"].mean() < 0.7  # both polarities, about balanced over a closed path
        assert np.all(np.diff(e["t"]) >= 0)
        dark = np.ones_like(img, bool)  # pixels farther than the saccade (3 px) + 1 from any ink never fire
        ys, xs = np.nonzero(img > 0)
        for y, x in zip(ys, xs):
            dark[max(0, y - 4):y + 5, max(0, x - 4):x + 5] = False
        assert not dark[e["y"], e["x"]].any()


def test_event_digits_reach_an_snn_through_dali(tmp_path):
    """data.source: event_digits -> shards (checked clean) -> DALI -> [T, B, 2, H, W] -> SNN forward/backward, and
    an evaluation over one rank's share of val (rank 0 of 16: the exact count, with the padding dropped)."""
    cfg = load("demo_events_baseline.yaml", [f"data.cache_dir={tmp_path}", "data.train_fraction=0.1",
                                             "data.batch_size=8"])
    info = prepare_dataset(cfg.data)
    assert info.events.shape == (4, 2, 32, 32) and info.num_classes == 10 and info.num_val == 359
    assert scan_shards(info.train_files + info.val_files, 10) == []
    torch.manual_seed(0)
    model = timm.create_model("spiking_resnet20", num_classes=10, timesteps=4, in_chans=2, width_multiplier=0.125)
    batch = next(iter(build_train_loader(cfg.data, info, 0, 1, seed=0)))
    x, y = batch.views[0], batch.labels
    assert x.shape == (4, 8, 2, 32, 32) and x.sum() > 0 and (x[:, :, 0].sum() > 0) and (x[:, :, 1].sum() > 0)
    torch.nn.functional.cross_entropy(model(x).mean(0), y).backward()
    assert model.stem_conv[0].weight.grad.abs().sum() > 0
    res = evaluate(model, build_val_loader(cfg.data, info, 0, 16), 4)
    assert res["num_samples"] == shard_size(359, 0, 16) and len(res["top1"]) == 4


def test_anytime_prediction_at_t_uses_frames_up_to_t_only():
    """Evaluation at step t (the mean of logits 1..t) must not see frames after t: change frames 3..T, and the
    logits of steps 1-2 stay bit-identical while later ones move."""
    torch.manual_seed(0)
    model = timm.create_model("spiking_resnet20", num_classes=10, timesteps=4, in_chans=2, width_multiplier=0.125).eval()
    x = (torch.rand(4, 3, 2, 32, 32) < 0.2).float() * 3
    y = x.clone()
    y[2:] = (torch.rand(2, 3, 2, 32, 32) < 0.2).float() * 3
    with torch.no_grad():
        a, b = model(x), model(y)
    assert torch.equal(a[:2], b[:2]) and not torch.equal(a[2:], b[2:])
