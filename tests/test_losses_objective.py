"""build_objective: every method's composition, components, CKA weights state, log Z, bad input."""
import math

import pytest
import torch
import torch.nn.functional as F

from distsnn.config.schema import MethodConfig, SSCLConfig, TCLConfig
from distsnn.losses import (build_objective, linear_cka, mean_ce_loss, nce_critic_loss, temporal_supcon_loss,
                            tet_loss)
from distsnn.models.output import ModelOutput

T, B, K = 2, 6, 3
S_CH = {"stage1": 4, "stage2": 5, "pooled": 5}
A_CH = {"stage1": 3, "stage2": 6, "pooled": 6}


def student(seed, zero_stage1=False):
    g = torch.Generator().manual_seed(seed)
    feats = {"stage1": torch.randn(T, B, 4, 4, 4, generator=g), "stage2": torch.randn(T, B, 5, 2, 2, generator=g),
             "pooled": torch.randn(T, B, 5, generator=g)}
    if zero_stage1:
        feats["stage1"] = torch.zeros(T, B, 4, 4, 4)
    feats = {k: v.requires_grad_() for k, v in feats.items()}
    return ModelOutput(torch.randn(T, B, K, generator=g, requires_grad=True), feats)


def teacher(seed):
    g = torch.Generator().manual_seed(seed)
    return ModelOutput(torch.randn(B, K, generator=g), {"stage1": torch.randn(B, 3, 4, 4, generator=g),
                                                         "stage2": torch.randn(B, 6, 2, 2, generator=g),
                                                         "pooled": torch.randn(B, 6, generator=g)})


LABELS = torch.tensor([0, 1, 2, 0, 1, 1])


def method(name, classification="mean", **sscl):
    return MethodConfig(name=name, classification=classification,
                        tcl=TCLConfig(layers=["stage2", "pooled"], proj_hidden=8, proj_dim=4, weight=0.5),
                        sscl=SSCLConfig(layers=["stage1", "pooled"], embed_dim=4, pool_grid=2, **sscl))


def build(m):
    torch.manual_seed(0)
    return build_objective(m, S_CH, A_CH if m.name.startswith("sscl") else None, num_data=100)


def test_ann_baseline_tet():
    ann = build(method("ann"))
    logits = torch.randn(B, K)
    out = ann([ModelOutput(logits, {})], LABELS)
    assert out.total.item() == pytest.approx(F.cross_entropy(logits, LABELS).item())
    v = student(1)
    out = build(method("baseline"))([v], LABELS)
    assert set(out.components) == {"ce"} and out.total.item() == pytest.approx(mean_ce_loss(v.logits, LABELS).item())
    out = build(method("tet"))([v], LABELS)
    assert set(out.components) == {"tet"} and out.total.item() == pytest.approx(tet_loss(v.logits, LABELS).item())


@pytest.mark.parametrize("classification", ["mean", "tet"])
def test_tcl_composition(classification):
    obj = build(method("tcl", classification))
    v = student(2)
    out = obj([v], LABELS)
    name = "tet" if classification == "tet" else "ce"
    assert set(out.components) == {name, "tcl", "tcl.stage2", "tcl.pooled"}
    assert obj.num_views == 1 and not obj.requires_teacher
    # Each term from the public loss on the head's z of the spatially pooled feature.
    z2 = obj.heads["stage2"](v.features["stage2"].mean(dim=(3, 4)))
    want2 = temporal_supcon_loss(z2, LABELS, 0.07)
    assert out.components["tcl.stage2"].item() == pytest.approx(want2.item(), rel=1e-6)
    cls = tet_loss(v.logits, LABELS) if classification == "tet" else mean_ce_loss(v.logits, LABELS)
    want = cls + 0.5 * (out.components["tcl.stage2"] + out.components["tcl.pooled"])
    assert out.total.item() == pytest.approx(want.item(), rel=1e-6)
    assert all(not c.requires_grad for c in out.components.values())
    out.total.backward()
    assert all(p.grad is not None for p in obj.parameters())


def test_stcl_stacks_both_views_on_s():
    obj = build(method("stcl"))
    v1, v2 = student(3), student(4)
    out = obj([v1, v2], LABELS)
    assert {"ce.view1", "ce.view2", "tcl"} <= set(out.components) and obj.num_views == 2
    z = torch.cat([obj.heads["pooled"](v1.features["pooled"]), obj.heads["pooled"](v2.features["pooled"])])
    assert z.shape == (2 * T, B, 4)
    assert out.components["tcl.pooled"].item() == pytest.approx(temporal_supcon_loss(z, LABELS).item(), rel=1e-6)
    want = mean_ce_loss(v1.logits, LABELS) + mean_ce_loss(v2.logits, LABELS) + 0.5 * out.components["tcl"]
    assert out.total.item() == pytest.approx(want.item(), rel=1e-6)


def _pooled(f, time_major):
    if time_major:
        f = f.mean(0)
    return F.adaptive_avg_pool2d(f, 2).flatten(1) if f.dim() == 4 else f


def test_sscl_composition_cka_and_log_z():
    obj = build(method("sscl", cka_momentum=0.5, cka_min=0.05))
    obj.train()
    v, a = student(5), teacher(6)
    out = obj([v], LABELS, a)
    assert obj.requires_teacher
    total_nce = 0.0
    for k, layer in enumerate(["stage1", "pooled"]):
        s_feat, a_feat = _pooled(v.features[layer], True), _pooled(a.features[layer], False)
        cka = linear_cka(s_feat, a_feat).item()
        assert out.components[f"cka.{layer}"].item() == pytest.approx(cka, rel=1e-5)
        assert out.components[f"lambda.{layer}"].item() == pytest.approx(1 / max(cka, 0.05), rel=1e-5)
        zs, za = obj.embed_s[layer](s_feat), obj.embed_a[layer](a_feat)
        sims = (zs @ za.T / 0.07).double()
        log_z = math.log(100) + torch.logsumexp(sims.flatten(), 0).item() - math.log(B * B)
        assert obj.log_z[k].item() == pytest.approx(log_z, rel=1e-6) and bool(obj.log_z_ready[k])
        nce = nce_critic_loss(zs, za, 0.07, num_data=100, log_z=log_z)
        assert out.components[f"nce.{layer}"].item() == pytest.approx(nce.item(), rel=1e-5)
        total_nce += out.components[f"lambda.{layer}"].item() * nce.item()
    assert out.total.item() == pytest.approx(mean_ce_loss(v.logits, LABELS).item() + total_nce, rel=1e-5)
    out.total.backward()
    assert all(p.grad is not None for p in obj.parameters())
    assert v.features["stage1"].grad is not None

    # Second batch: log Z stays frozen, CKA is the EMA with momentum 0.5.
    frozen = obj.log_z.clone()
    cka1 = out.components["cka.pooled"].item()
    v2, a2 = student(7), teacher(8)
    out2 = obj([v2], LABELS, a2)
    assert torch.equal(obj.log_z, frozen)
    cka2 = linear_cka(v2.features["pooled"].mean(0), a2.features["pooled"]).item()
    assert out2.components["cka.pooled"].item() == pytest.approx(0.5 * cka1 + 0.5 * cka2, rel=1e-5)

    # Eval mode changes no state; the state survives a state_dict round trip.
    obj.eval()
    before = {k: v.clone() for k, v in obj.state_dict().items()}
    obj([student(9)], LABELS, teacher(10))
    assert all(torch.equal(before[k], v) for k, v in obj.state_dict().items())
    fresh = build(method("sscl", cka_momentum=0.5))
    fresh.load_state_dict(obj.state_dict())
    assert torch.equal(fresh.log_z, frozen) and bool(fresh.log_z_ready.all())
    assert torch.equal(fresh.cka.cka, obj.cka.cka)


def test_sscl_literal_eq19_and_plain_weights():
    obj = build(method("sscl", normalizer="none", cka_weights=False))
    v, a = student(11), teacher(12)
    out = obj([v], LABELS, a)
    zs, za = obj.embed_s["pooled"](v.features["pooled"].mean(0)), obj.embed_a["pooled"](a.features["pooled"])
    want = nce_critic_loss(zs, za, 0.07, num_data=100, log_z=0.0)
    assert out.components["nce.pooled"].item() == pytest.approx(want.item(), rel=1e-6)
    assert out.components["lambda.pooled"].item() == 1.0 and not bool(obj.log_z_ready.any())


def test_silent_layer_gets_the_clamped_weight_and_no_nan():
    obj = build(method("sscl", cka_min=0.1))
    out = obj([student(13, zero_stage1=True)], LABELS, teacher(14))
    assert out.components["cka.stage1"].item() == 0.0
    assert out.components["lambda.stage1"].item() == pytest.approx(10.0)
    assert torch.isfinite(out.total)


def test_sscl_plus_stcl_has_both_families():
    obj = build(method("sscl+stcl"))
    out = obj([student(15), student(16)], LABELS, teacher(17))
    assert {"ce.view1", "ce.view2", "tcl", "nce", "cka.stage1", "lambda.pooled"} <= set(out.components)
    assert obj.num_views == 2 and obj.requires_teacher


def test_bad_input_names_the_culprit():
    with pytest.raises(ValueError, match="needs the teacher"):
        build(method("sscl"))([student(1)], LABELS)
    with pytest.raises(ValueError, match="2 student view"):
        build(method("stcl"))([student(1)], LABELS)
    with pytest.raises(ValueError, match="method.tcl.layers"):
        build_objective(method("tcl"), {"pooled": 5}, None)
    with pytest.raises(ValueError, match="method.sscl.num_data"):
        build_objective(method("sscl"), S_CH, A_CH, num_data=0)
    with pytest.raises(ValueError, match="teacher_channels"):
        build_objective(method("sscl"), S_CH, None, num_data=10)
    short = teacher(2)
    short = ModelOutput(short.logits[:4], {k: v[:4] for k, v in short.features.items()})
    with pytest.raises(ValueError, match="student batch 6 != teacher batch 4"):
        build(method("sscl"))([student(1)], LABELS, short)
    broken = student(1)
    del broken.features["stage2"]
    with pytest.raises(ValueError, match="no feature 'stage2'"):
        build(method("tcl"))([broken], LABELS)
