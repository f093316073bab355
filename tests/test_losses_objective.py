"""build_objective: every method's composition, components, CKA weights state, log Z, bad input."""
import math

import pytest
import torch
import torch.nn.functional as F

from distsnn.config.schema import MethodConfig, SSCLConfig, TCLConfig
from distsnn.losses import (build_objective, grid_flatten, linear_cka, mean_ce_loss, nce_critic_loss, temporal_supcon_loss,
                            tet_loss)
from distsnn.models.output import ModelOutput
from hsic_reference import cka_of, hsic_triple

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
                        tcl=TCLConfig(layers=["stage1", "pooled"], proj_hidden=8, proj_dim=4, weight=0.5),
                        sscl=SSCLConfig(layers=["stage1", "pooled"], embed_dim=4, pool_grid=2, **sscl))


def build(m):
    torch.manual_seed(0)
    return build_objective(m, S_CH, A_CH if m.name.startswith("sscl") else None, num_data=100, timesteps=T)


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
    assert set(out.components) == {name, "tcl", "tcl.stage1", "tcl.pooled"}
    assert obj.num_views == 1 and not obj.requires_teacher
    # Each term from the public loss on the head's z of the stage feature (conv blocks + pooling inside the head).
    z1 = obj.heads["stage1"](v.features["stage1"])
    want1 = temporal_supcon_loss(z1, LABELS, 0.07)
    assert out.components["tcl.stage1"].item() == pytest.approx(want1.item(), rel=1e-6)
    cls = tet_loss(v.logits, LABELS) if classification == "tet" else mean_ce_loss(v.logits, LABELS)
    want = cls + 0.5 * (out.components["tcl.stage1"] + out.components["tcl.pooled"])
    assert out.total.item() == pytest.approx(want.item(), rel=1e-6)
    assert all(not c.requires_grad for c in out.components.values())
    out.total.backward()
    assert all(p.grad is not None for p in obj.parameters())


def test_stcl_stacks_both_views_on_s():
    obj = build(method("stcl"))
    v1, v2 = student(3), student(4)
    out = obj([v1, v2], LABELS)
    assert {"ce.view1", "ce.view2", "tcl"} <= set(out.components) and obj.num_views == 2
    z = obj.heads["pooled"](torch.cat([v1.features["pooled"], v2.features["pooled"]]))   # one BatchNorm, both views
    assert z.shape == (2 * T, B, 4)
    assert out.components["tcl.pooled"].item() == pytest.approx(temporal_supcon_loss(z, LABELS).item(), rel=1e-6)
    want = mean_ce_loss(v1.logits, LABELS) + mean_ce_loss(v2.logits, LABELS) + 0.5 * out.components["tcl"]
    assert out.total.item() == pytest.approx(want.item(), rel=1e-6)


def _embed_input(f, time_major):
    """Reference g^S / g^A input: each step's map pooled to 2x2, time steps side by side."""
    if not time_major:
        return F.adaptive_avg_pool2d(f, 2).flatten(1) if f.dim() == 4 else f
    steps = [F.adaptive_avg_pool2d(f[t], 2).flatten(1) if f.dim() == 5 else f[t] for t in range(f.shape[0])]
    return torch.cat(steps, dim=1)


def test_sscl_composition_cka_and_log_z():
    obj = build(method("sscl", cka_decay=0.5, cka_min=0.05))
    obj.train()
    v, a = student(5), teacher(6)
    out = obj([v], LABELS, a)
    assert obj.requires_teacher
    total_nce = 0.0
    first_terms = {}
    for k, layer in enumerate(["stage1", "pooled"]):
        first_terms[layer] = t = hsic_triple(v.features[layer], a.features[layer])
        cka = cka_of(t)
        assert out.components[f"cka.{layer}"].item() == pytest.approx(cka, rel=1e-5)
        assert out.components[f"lambda.{layer}"].item() == pytest.approx(1 / max(cka, 0.05), rel=1e-5)
        zs = obj.embed_s[layer](_embed_input(v.features[layer], True))
        za = obj.embed_a[layer](_embed_input(a.features[layer], False))
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

    # Second batch: log Z stays frozen; CKA is formed from the decayed mean of the HSIC terms (not of CKAs).
    frozen = obj.log_z.clone()
    v2, a2 = student(7), teacher(8)
    out2 = obj([v2], LABELS, a2)
    assert torch.equal(obj.log_z, frozen)
    for layer in ["stage1", "pooled"]:
        t = (0.5 * first_terms[layer] + hsic_triple(v2.features[layer], a2.features[layer])) / 1.5
        assert out2.components[f"cka.{layer}"].item() == pytest.approx(cka_of(t), rel=1e-5)

    # Eval mode changes no state; the state survives a state_dict round trip.
    obj.eval()
    before = {k: v.clone() for k, v in obj.state_dict().items()}
    obj([student(9)], LABELS, teacher(10))
    assert all(torch.equal(before[k], v) for k, v in obj.state_dict().items())
    fresh = build(method("sscl", cka_decay=0.5))
    fresh.load_state_dict(obj.state_dict())
    assert torch.equal(fresh.log_z, frozen) and bool(fresh.log_z_ready.all())
    assert torch.equal(fresh.cka.hsic, obj.cka.hsic) and torch.equal(fresh.cka.mass, obj.cka.mass)


def test_sscl_literal_eq19_and_plain_weights():
    obj = build(method("sscl", normalizer="none", cka_weights=False))
    v, a = student(11), teacher(12)
    out = obj([v], LABELS, a)
    zs, za = obj.embed_s["pooled"](_embed_input(v.features["pooled"], True)), obj.embed_a["pooled"](a.features["pooled"])
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
    built_for_t1 = build_objective(method("sscl"), S_CH, A_CH, num_data=100, timesteps=1)
    with pytest.raises(ValueError, match=f"T = {T} steps but the objective was built with timesteps=1"):
        built_for_t1([student(1)], LABELS, teacher(2))
    broken = student(1)
    del broken.features["stage1"]
    with pytest.raises(ValueError, match="no feature 'stage1'"):
        build(method("tcl"))([broken], LABELS)


# --- TCL heads (Contrastive Deep Supervision, TCL Sec. 4.4) -------------------------------------------------------
CH4 = {"stage1": 3, "stage2": 4, "stage3": 5, "stage4": 6, "pooled": 6}


def _tcl_objective(layers, head="conv"):
    torch.manual_seed(0)
    cfg = MethodConfig(name="tcl", tcl=TCLConfig(layers=layers, head=head, proj_hidden=7, proj_dim=4))
    return build_objective(cfg, CH4, None)


def _head_reference(head, x):
    """The head written out: per time step, each block = depthwise 3x3 s2, 1x1, GroupNorm(1) by hand, ReLU,
    depthwise 3x3, 1x1, GroupNorm(1), ReLU; then the spatial mean, Linear-BatchNorm (over all steps and samples)-
    ReLU-Linear, L2 normalisation."""
    def group_norm(h, gn):
        mu = h.mean(dim=(1, 2, 3), keepdim=True)
        var = ((h - mu) ** 2).mean(dim=(1, 2, 3), keepdim=True)
        return (h - mu) / torch.sqrt(var + gn.eps) * gn.weight[None, :, None, None] + gn.bias[None, :, None, None]

    zs = []
    for t in range(x.shape[0]):
        h = x[t]
        for block in head.down:
            dw1, pw1, gn1, _, dw2, pw2, gn2, _ = block.op
            h = F.conv2d(h, dw1.weight, stride=2, padding=1, groups=h.shape[1])
            h = torch.relu(group_norm(F.conv2d(h, pw1.weight), gn1))
            h = F.conv2d(h, dw2.weight, stride=1, padding=1, groups=h.shape[1])
            h = torch.relu(group_norm(F.conv2d(h, pw2.weight), gn2))
        zs.append(h.mean(dim=(2, 3)))
    v = torch.stack(zs)                                           # [T, B, C]
    lin1, bn, _, lin2 = head.net
    h = lin1(v)
    rows = h.reshape(-1, h.shape[-1])                             # BatchNorm over every step and sample
    mu, var = rows.mean(0), rows.var(0, unbiased=False)
    h = (h - mu) / torch.sqrt(var + bn.eps) * bn.weight + bn.bias
    return F.normalize(lin2(torch.relu(h)), dim=-1)


def test_tcl_conv_heads_bring_each_stage_to_the_last_one():
    obj = _tcl_objective(["stage1", "stage2", "stage3", "pooled"])
    # Stage k of 4 gets 4 - k blocks whose widths are those of stages k+1..4 (CDS's auxiliary heads).
    widths = {k: [b.op[5].out_channels for b in h.down] for k, h in obj.heads.items()}
    assert widths == {"stage1": [4, 5, 6], "stage2": [5, 6], "stage3": [6], "pooled": []}
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in obj.modules())   # rank-split independent
    head = obj.heads["stage1"]
    with torch.no_grad():                              # non-trivial affine norms, so the reference must use them
        for m in head.modules():
            if isinstance(m, torch.nn.GroupNorm):
                m.weight.uniform_(0.5, 1.5), m.bias.uniform_(-0.2, 0.2)
    x = torch.randn(T, B, 3, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    head = head.double()
    z = head(x)
    assert z.shape == (T, B, 4)
    torch.testing.assert_close(z, _head_reference(head, x), rtol=1e-10, atol=1e-12)
    # 1x1 maps (the 16 px digits' last stages) go through the stride-2 blocks unchanged in size.
    assert head(torch.randn(T, B, 3, 1, 1, dtype=torch.float64)).shape == (T, B, 4)
    assert [len(h.down) for h in _tcl_objective(["stage1", "pooled"], head="gap").heads.values()] == [0, 0]


def test_tcl_objective_uses_the_conv_heads_end_to_end():
    obj = _tcl_objective(["stage2", "pooled"])
    g = torch.Generator().manual_seed(9)
    feats = {"stage2": torch.randn(T, B, 4, 4, 4, generator=g), "pooled": torch.randn(T, B, 6, generator=g)}
    v = ModelOutput(torch.randn(T, B, K, generator=g), feats)
    out = obj([v], LABELS)
    want = temporal_supcon_loss(_head_reference(obj.heads["stage2"], feats["stage2"]), LABELS, 0.07)
    assert out.components["tcl.stage2"].item() == pytest.approx(want.item(), rel=1e-5)


@pytest.mark.parametrize("head", ["conv", "gap"])
def test_tcl_last_stage_and_pooled_together_are_refused(head):
    # pooled is the global average of stage4: two heads on one vector would double its lambda.
    with pytest.raises(ValueError, match=r"method.tcl.layers: stage4 and pooled"):
        _tcl_objective(["stage1", "stage4", "pooled"], head)
    assert set(_tcl_objective(["stage1", "stage4"], head).heads) == {"stage1", "stage4"}


@pytest.mark.parametrize("name", ["ann", "baseline", "tet", "tcl", "stcl", "sscl", "sscl+stcl"])
def test_every_loss_is_float32_under_bf16_autocast(name):
    """The objective turns autocast off: under bf16 autocast (the GPU recipes' precision; CPU autocast is the same
    machinery) each method's loss equals its float32 value. Without it the embedders, heads and the critic's
    matmul run in bf16 (off by ~1e-2 relative)."""
    m = method(name)
    views = [student(21), student(22)][:2 if name in ("stcl", "sscl+stcl") else 1]
    if name == "ann":
        views = [ModelOutput(views[0].logits[0], {})]
    a = teacher(23) if name.startswith("sscl") else None
    want = build(m)(views, LABELS, a).total
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = build(m)(views, LABELS, a).total
    assert got.dtype == torch.float32
    assert got.item() == pytest.approx(want.item(), rel=1e-3)


def test_a_1x1_last_stage_and_pooled_are_not_both_sscl_layers():
    """At 16 px the ResNet-20's last stage is 1x1: its map IS the pooled feature, so listing both would count the
    same input twice in Eq.20. Every other pair of layers sees a different input."""
    m = MethodConfig(name="sscl", sscl=SSCLConfig(layers=["stage1", "stage2", "pooled"], embed_dim=4))
    chans = {"stage1": 4, "stage2": 5, "pooled": 5}
    obj = build_objective(m, chans, chans, num_data=100, timesteps=T)
    g = torch.Generator().manual_seed(0)
    s_feats = {"stage1": torch.randn(T, B, 4, 2, 2, generator=g), "stage2": torch.randn(T, B, 5, 1, 1, generator=g)}
    s_feats["pooled"] = s_feats["stage2"].mean(dim=(3, 4))
    a_feats = {"stage1": torch.randn(B, 4, 2, 2, generator=g), "stage2": torch.randn(B, 5, 1, 1, generator=g)}
    a_feats["pooled"] = a_feats["stage2"].mean(dim=(2, 3))
    with pytest.raises(ValueError, match=r"method.sscl.layers: 'stage2' is 1x1 .* same vector as 'pooled'"):
        obj([ModelOutput(torch.randn(T, B, K), s_feats)], LABELS, ModelOutput(torch.randn(B, K), a_feats))
    # The inputs the embedders see: with the 1x1 stage they coincide; with a 2x2 last stage they differ.
    assert torch.equal(grid_flatten(s_feats["stage2"], 2, True)[:, ::4], grid_flatten(s_feats["pooled"], 2, True))
    big = torch.randn(T, B, 5, 2, 2, generator=g)
    assert not torch.allclose(grid_flatten(big, 2, True)[:, ::4], grid_flatten(big.mean(dim=(3, 4)), 2, True))


def test_sscl_embed_time_mean_feeds_g_s_the_firing_rate():
    obj = build(method("sscl", embed_time="mean", normalizer="none"))
    v, a = student(31), teacher(32)
    out = obj([v], LABELS, a)
    for layer in ("stage1", "pooled"):
        rate = v.features[layer].mean(0)                                         # [B, C(, H, W)]
        zs = obj.embed_s[layer](_embed_input(rate, False))
        za = obj.embed_a[layer](_embed_input(a.features[layer], False))
        want = nce_critic_loss(zs, za, 0.07, num_data=100, log_z=0.0)
        assert out.components[f"nce.{layer}"].item() == pytest.approx(want.item(), rel=1e-6)
    assert obj.embed_s["stage1"].linear.in_features == 4 * 2 * 2                # C * g * g, no T
