"""The DVS recipes: each loads, reads 2-channel event frames at 48 px and names the paper's number; an SSCL one
takes a training step on a [T, B, 2, 48, 48] batch with its ANN teacher fed the summed frames."""
import dataclasses
import re
from pathlib import Path

import pytest
import timm
import torch

from distsnn.config import load
from distsnn.config.loader import CONFIGS_DIR
from distsnn.losses import build_objective
from distsnn.models import ann_counterpart, build_student

RECIPES = sorted(Path(CONFIGS_DIR).glob("dvs_*.yaml"))


def test_the_papers_dvs_rows_have_recipes():
    names = {p.stem for p in RECIPES}
    want = {f"dvs_cifar10_{m}_sew{n}" for m in ("baseline", "tcl", "stcl") for n in (18, 34)}
    want |= {f"dvs_cifar10_{m}_r{n}" for m in ("sscl", "ann") for n in (19, 20)}
    assert want <= names


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.stem)
def test_dvs_recipe_loads_with_the_papers_number(path):
    cfg = load(path)
    assert cfg.model.in_chans == 2 and cfg.data.image_size == 48
    if cfg.method.name != "ann":  # the ANN teachers sum whatever T the shards hold
        assert cfg.model.timesteps == (10 if "_r" in path.stem else 4)
        assert re.search(r"\d\d\.\d\d% top-1", path.read_text().split("\nrun:")[0]), "no paper number in the header"


def test_dvs_sscl_recipe_takes_a_step_on_event_frames():
    cfg = load(Path(CONFIGS_DIR) / "dvs_cifar10_sscl_r20.yaml")
    model_cfg = dataclasses.replace(cfg.model, width_multiplier=1 / 16,
                                    neuron=dataclasses.replace(cfg.model.neuron, implementation="reference"))
    torch.manual_seed(0)
    student = build_student(model_cfg)
    teacher = timm.create_model(ann_counterpart(cfg.model.name), num_classes=10, width_multiplier=1 / 16,
                                in_chans=2).eval()
    method = dataclasses.replace(cfg.method, sscl=dataclasses.replace(cfg.method.sscl, embed_dim=16))
    objective = build_objective(method, student.feature_channels, teacher.feature_channels, num_data=9000,
                                timesteps=cfg.model.timesteps)
    x = (torch.rand(10, 4, 2, 48, 48) < 0.1).float()  # [T, B, 2, H, W] event counts
    labels = torch.arange(4)
    with torch.no_grad():
        t_out = teacher(x, return_features=True)  # the ANN sums the frames
        assert torch.equal(t_out.logits, teacher(x.sum(0)))
    out = student(x, return_features=True)
    assert out.logits.shape == (10, 4, 10)
    loss = objective([out], labels, teacher=t_out).total
    loss.backward()
    assert torch.isfinite(loss) and student.stem_conv[0].weight.grad.abs().sum() > 0
