"""The CIFAR recipes: each loads and names the paper's number; one of each kind (network x method) takes a training
step on a 32 px batch: student (+ teacher) and objective at 1/16 width, same geometry (stage maps at the recipes'
sizes). The others differ from their kind's only in dataset, depth or T."""
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
from distsnn.models.output import ModelOutput

RECIPES = sorted(Path(CONFIGS_DIR).glob("cifar*.yaml"))
ONE_OF_EACH_KIND = ["cifar10_baseline_sew18", "cifar10_tcl_sew34", "cifar100_stcl_sew18", "cifar100_ann_r20",
                    "cifar100_baseline_r20_t2", "cifar100_nce_r20_t2", "cifar100_sscl_r20_t4", "cifar100_ann_r19",
                    "cifar10_sscl_r19_t1"]


def test_the_papers_tables_have_recipes():
    names = {p.stem for p in RECIPES}
    tcl = {f"{d}_{m}_sew{n}" for d in ("cifar10", "cifar100") for m in ("baseline", "tcl", "stcl") for n in (18, 34)}
    sscl_t3 = {f"cifar100_{m}_r20_t{t}" for m in ("baseline", "nce", "sscl") for t in (2, 4)}
    sscl_t1 = {f"{d}_sscl_r19_t{t}" for d in ("cifar10", "cifar100") for t in (1, 2)}
    teachers = {"cifar100_ann_r20", "cifar10_ann_r19", "cifar100_ann_r19"}
    assert tcl | sscl_t3 | sscl_t1 | teachers <= names


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.stem)
def test_cifar_recipe_loads_with_the_papers_number(path):
    cfg = load(path)
    assert cfg.data.image_size == 32 and cfg.data.augment.pad_crop == 4 and cfg.data.val_resize == 32
    if cfg.method.name != "ann":  # the paper's number is in the header comment
        assert re.search(r"\d\d\.\d\d% top-1", path.read_text().split("\nrun:")[0]), "no paper number in the header"


@pytest.mark.parametrize("name", ONE_OF_EACH_KIND)
def test_cifar_recipe_takes_a_step(name):
    cfg = load(Path(CONFIGS_DIR) / f"{name}.yaml")
    # 1/16 width; the reference LIF (the fused one would be compiled for every new shape)
    model_cfg = dataclasses.replace(cfg.model, width_multiplier=1 / 16,
                                    neuron=dataclasses.replace(cfg.model.neuron, implementation="reference"))
    torch.manual_seed(0)
    student = build_student(model_cfg, ann=cfg.method.name == "ann")
    teacher = None
    if cfg.method.name == "sscl":
        teacher = timm.create_model(ann_counterpart(cfg.model.name), num_classes=cfg.model.num_classes,
                                    width_multiplier=1 / 16).eval()
    method = dataclasses.replace(cfg.method, tcl=dataclasses.replace(cfg.method.tcl, proj_hidden=32, proj_dim=16),
                                 sscl=dataclasses.replace(cfg.method.sscl, embed_dim=16))  # small heads
    objective = build_objective(method, student.feature_channels, teacher and teacher.feature_channels,
                                num_data=50000, timesteps=cfg.model.timesteps)
    B, views = 4, objective.num_views
    x = torch.randn(views * B, 3, 32, 32)
    labels = torch.arange(B) % cfg.model.num_classes
    out = student(x, return_features=True)
    if views == 2:
        dim = 1 if out.logits.dim() == 3 else 0
        outs = [ModelOutput(lg, {k: f.chunk(2, dim)[i] for k, f in out.features.items()})
                for i, lg in enumerate(out.logits.chunk(2, dim))]
    else:
        outs = [out]
    with torch.no_grad():
        t_out = teacher(x[:B], return_features=True) if teacher is not None else None
    loss = objective(outs, labels, teacher=t_out)
    assert torch.isfinite(loss.total)
    loss.total.backward()
    assert all(p.grad is not None for p in student.parameters())
    if cfg.method.name == "sscl":  # every listed layer has an NCE term; no stage is 1x1 at 32 px
        for layer in cfg.method.sscl.layers:
            assert any(layer in k for k in loss.components), (layer, list(loss.components))
        assert all(f.shape[-1] >= 2 for k, f in out.features.items() if k.startswith("stage"))
