"""Real multi-process gloo runs (W = 2 and 3): the gather's gradients, the rank helpers, and that every
contrastive loss, log Z, the CKA (both forms) and weights and a whole objective give the same values and
rank-averaged gradients as one process holding the concatenated global batch; and that the objective's
collectives per step do not grow with its number of layers."""
import os
from typing import NamedTuple

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from distsnn import distributed as D
from distsnn.config.schema import MethodConfig, SSCLConfig, TCLConfig
from distsnn.losses import build_objective, estimate_log_z, linear_cka, nce_critic_loss, temporal_supcon_loss
from distsnn.losses.global_cka import global_linear_cka
from hsic_reference import cka_of, hsic1, hsic_triple


class ModelOutput(NamedTuple):
    """Same fields as distsnn.models.output.ModelOutput, whose package import pulls in timm (~20 s per
    spawned rank on 2 cores); the objective only reads .logits and .features."""

    logits: torch.Tensor
    features: dict



N, S, DIM, T, K = 12, 3, 4, 2, 4     # global batch 12 splits over 2 and 3 ranks


def problem():
    """The global batch and the shared parameters, identical in every process."""
    g = torch.Generator().manual_seed(123)
    data = {"x": torch.randn(N, 5, generator=g, dtype=torch.float64),
            "xa": torch.randn(N, 7, generator=g, dtype=torch.float64),
            "labels": torch.tensor([0, 1, 2, 0, 1, 2, 0, 0, 1, 3, 2, 1]),
            # S = 1 case: classes 5..8 occur once in the global batch -> anchors without a positive.
            "labels_s1": torch.tensor([0, 5, 1, 0, 6, 1, 2, 7, 2, 2, 8, 0]),
            "M": torch.randn(N, 4, generator=g, dtype=torch.float64)}
    params = {"P1": torch.randn(5, 3, generator=g, dtype=torch.float64),
              "P2": torch.randn(5, S * DIM, generator=g, dtype=torch.float64),
              "P3": torch.randn(5, DIM, generator=g, dtype=torch.float64),
              "P4": torch.randn(7, DIM, generator=g, dtype=torch.float64),
              "Q1": torch.randn(5, T * 4 * 4, generator=g), "Q2": torch.randn(5, T * 5, generator=g),
              "Wc": torch.randn(5, K, generator=g)}
    return data, params


def gather_case_loss(y, r, m):
    # The rows are used transposed, so the gradient reaching the gather is non-contiguous.
    return ((y.T @ (m * (r + 1))) ** 2).sum()


def objective_inputs(x, xa, p):
    b = x.shape[0]
    xf, xaf = x.float(), xa.float()

    def view(inp):
        pooled = torch.tanh(inp @ p["Q2"]).reshape(b, T, 5).transpose(0, 1)          # [T, B, 5]
        stage1 = torch.tanh(inp @ p["Q1"]).reshape(b, T, 4, 2, 2).transpose(0, 1)    # [T, B, 4, 2, 2]
        return ModelOutput(pooled @ p["Wc"], {"stage1": stage1, "pooled": pooled})

    teacher = ModelOutput(xaf[:, :K], {"stage1": torch.sin(xaf[:, :3, None, None] * torch.ones(1, 1, 2, 2)),
                                       "pooled": torch.cos(xaf[:, :6])})
    return [view(xf), view(xf + 0.1 * xf.flip(1))], teacher


def method_cfg():
    return MethodConfig(name="sscl+stcl",
                        tcl=TCLConfig(layers=["stage1", "pooled"], proj_hidden=6, proj_dim=4, weight=5.0),
                        sscl=SSCLConfig(layers=["stage1", "pooled"], embed_dim=4, pool_grid=2, cka_decay=0.3))


def run_cases(data, params, lo, hi, r):
    """Every case on rows [lo, hi) of the global batch -> {case: (value, {param: grad})}."""
    out = {}

    def case(name, fn, names):
        ps = {k: params[k].clone().requires_grad_() for k in names}
        value = fn(ps)
        grads = torch.autograd.grad(value, list(ps.values()), allow_unused=True) if value.requires_grad else ()
        out[name] = (value.detach().double(), {k: gr for k, gr in zip(ps, grads)})

    x, xa = data["x"][lo:hi], data["xa"][lo:hi]
    b = hi - lo
    case("gather", lambda p: gather_case_loss(D.all_gather_with_grad(x @ p["P1"]), r, data["M"]), ["P1"])

    def mixed(p):  # one gather: a tensor with gradient, a float64 one and int64 labels without
        y, z, lab = D.all_gather_columns([x @ p["P1"], torch.tanh(xa[:, :3]), data["labels"][lo:hi]],
                                         grad=[True, False, False])
        assert not z.requires_grad and lab.dtype == torch.int64 and y.shape == (N, 3)
        return ((y.T @ data["M"][:, :3]) ** 2).sum() + (y * z).sum() + (y.sum(1) * lab).sum()

    case("gather_mixed", mixed, ["P1"])
    case("sums", lambda p: torch.cat([t.reshape(-1).double() for t in D.all_reduce_sums(
        [x[:, :2].sum(0), data["labels"][lo:hi].sum()])]), [])

    def z_of(p):  # [S, B, D], one row per sample and step
        return F.normalize(torch.tanh(x @ p["P2"]).reshape(b, S, DIM), dim=-1).transpose(0, 1)

    case("supcon", lambda p: temporal_supcon_loss(z_of(p), data["labels"][lo:hi], 0.5), ["P2"])
    case("supcon_eq7", lambda p: temporal_supcon_loss(z_of(p), None, 0.5), ["P2"])
    case("supcon_s1", lambda p: temporal_supcon_loss(z_of(p)[:1], data["labels_s1"][lo:hi], 0.5), ["P2"])

    def zs_za(p):
        return F.normalize(x @ p["P3"], dim=-1), F.normalize(xa @ p["P4"], dim=-1)

    case("nce", lambda p: nce_critic_loss(*zs_za(p), 0.3, num_data=50, log_z=1.3), ["P3", "P4"])
    case("log_z", lambda p: estimate_log_z(*zs_za(p), 0.3, num_data=50), ["P3", "P4"])
    case("cka", lambda p: linear_cka(D.all_gather_no_grad(x), D.all_gather_no_grad(torch.tanh(xa))), [])
    outer = (x[:, :, None] * xa[:, None, :]).flatten(1)          # [b, 35]
    for form in ("gram", "moments", "auto"):   # auto: pair 1 (35 + 7 >= 2N) Gram, pair 2 (2 + 3 < 2N) moments
        case(f"cka_{form}", lambda p, form=form: torch.stack(global_linear_cka(
            [(outer, torch.tanh(xa)), (x[:, :2], xa[:, :3].abs())], form)), [])
    case("local_cka", lambda p: global_linear_cka([(outer, torch.tanh(xa))], "local")[0], [])

    torch.manual_seed(0)                       # identical heads/embedders on every rank
    obj = build_objective(method_cfg(), {"stage1": 4, "pooled": 5}, {"stage1": 3, "pooled": 6}, num_data=100,
                          timesteps=T).train()
    ps = {k: params[k].clone().requires_grad_() for k in ("Q1", "Q2", "Wc")}
    views, teacher = objective_inputs(x, xa, ps)
    res = obj(views, data["labels"][lo:hi], teacher)
    names = list(ps) + [f"obj.{k}" for k, _ in obj.named_parameters()]
    grads = torch.autograd.grad(res.total, list(ps.values()) + list(obj.parameters()))
    out["objective"] = (res.total.detach().double(), dict(zip(names, grads)))
    for k, v in res.components.items():
        out[f"component.{k}"] = (v.double(), {})
    out["objective.log_z"] = (obj.log_z.clone(), {})

    # The same objective under bf16 autocast (the GPU recipes' precision): bf16 embeddings and features go
    # through the fused gather and all-reduce in float32 / float64.
    torch.manual_seed(0)
    obj = build_objective(method_cfg(), {"stage1": 4, "pooled": 5}, {"stage1": 3, "pooled": 6}, num_data=100,
                          timesteps=T).train()
    ps = {k: params[k].clone().requires_grad_() for k in ("Q1", "Q2", "Wc")}
    with torch.autocast("cpu", dtype=torch.bfloat16):
        views, teacher = objective_inputs(x, xa, ps)
        res = obj(views, data["labels"][lo:hi], teacher)
    grads = torch.autograd.grad(res.total, list(ps.values()) + list(obj.parameters()))
    out["objective_bf16"] = (res.total.detach().double(), dict(zip(names, grads)))
    return out


COLLECTIVES = ("all_gather_single", "all_reduce", "reduce_scatter_single", "broadcast", "all_gather",
               "all_gather_into_tensor", "reduce_scatter_tensor")


def collectives_per_objective_step(data, params, lo, hi):
    """{layers: torch.distributed calls in one forward + backward of sscl+stcl after its first step}."""
    counts = {}
    for layers in (["pooled"], ["stage1", "pooled"]):
        cfg = method_cfg()
        cfg.tcl.layers, cfg.sscl.layers = layers, layers
        torch.manual_seed(0)
        obj = build_objective(cfg, {"stage1": 4, "pooled": 5}, {"stage1": 3, "pooled": 6}, num_data=100,
                          timesteps=T).train()
        views, teacher = objective_inputs(data["x"][lo:hi], data["xa"][lo:hi], params)
        obj(views, data["labels"][lo:hi], teacher)          # first step: also estimates log Z
        calls = []
        originals = {name: getattr(dist, name) for name in COLLECTIVES}

        def counting(name):
            def call(*args, **kwargs):
                calls.append(name)
                return originals[name](*args, **kwargs)
            return call
        try:
            for name in COLLECTIVES:
                setattr(dist, name, counting(name))
            views, teacher = objective_inputs(data["x"][lo:hi], data["xa"][lo:hi],
                                              {k: v.clone().requires_grad_() for k, v in params.items()})
            obj(views, data["labels"][lo:hi], teacher).total.backward()
        finally:
            for name, fn in originals.items():
                setattr(dist, name, fn)
        counts[len(layers)] = sorted(calls)
    return counts


def worker(r, world, tmp):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{tmp}/rendezvous", rank=r, world_size=world)
    try:
        assert (D.rank(), D.world_size(), D.is_main()) == (r, world, r == 0)
        assert D.reduce_sum(torch.tensor([r + 1.0])).item() == world * (world + 1) / 2
        assert D.reduce_mean(torch.tensor([float(r)])).item() == pytest.approx((world - 1) / 2)
        assert D.all_reduce_max_flag(r == world - 1) is True and D.all_reduce_max_flag(False) is False
        # Mismatched local batches: a clear error on every rank, and the group stays usable.
        named = r"differ in shape across ranks \(rank 0: \[\[1, 3\]\], rank 1: \[\[2, 3\]\]"
        with pytest.raises(ValueError, match=named):
            D.all_gather_with_grad(torch.zeros(r + 1, 3, requires_grad=True))
        D.check_same_shapes([torch.zeros(2, 3), torch.zeros(4)], "equal shapes")      # passes on every rank
        # Integers ride in a float32 gather as bits: exact far beyond float32's 2^24, negatives and bools too.
        data, _ = problem()
        b = N // world
        big = data["labels"] * 2 ** 40 - 7
        rows = slice(r * b, (r + 1) * b)
        got = D.all_gather_columns([data["xa"][rows].float(), big[rows], big[rows] > 2 ** 40], grad=False)
        assert got[1].dtype == torch.int64 and torch.equal(got[1], big), got[1]
        assert got[2].dtype == torch.bool and torch.equal(got[2], big > 2 ** 40)
        assert torch.equal(got[0], data["xa"].float())
        with pytest.raises(ValueError, match="differ in shape across ranks"):
            temporal_supcon_loss(F.normalize(torch.randn(2, 2 + r, 4), dim=-1), None)
        data, params = problem()
        b = N // world
        torch.save(run_cases(data, params, r * b, (r + 1) * b, r), f"{tmp}/rank{r}.pt")
        torch.save(collectives_per_objective_step(data, params, r * b, (r + 1) * b), f"{tmp}/calls{r}.pt")
        dist.barrier()
    finally:
        dist.destroy_process_group()


GLOBAL_VALUE = ("gather_mixed", "sums", "supcon", "supcon_eq7", "supcon_s1", "nce", "log_z", "cka", "cka_gram",
                "cka_moments", "cka_auto", "objective.log_z",
                "component.tcl", "component.nce", "component.nce.stage1", "component.cka.stage1",
                "component.lambda.pooled", "component.tcl.pooled")


@pytest.mark.slow
@pytest.mark.parametrize("world", [2, 3])
def test_world_equals_one_process_with_the_global_batch(world, tmp_path):
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    mp.spawn(worker, args=(world, str(tmp_path)), nprocs=world, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(world)]
    data, params = problem()
    ref = run_cases(data, params, 0, N, 0)                   # one process, no process group
    # The gather case: the reference is the rank mean of the per-rank losses on the full rows.
    ps = params["P1"].clone().requires_grad_()
    y = data["x"] @ ps
    loss = sum(gather_case_loss(y, r, data["M"]) for r in range(world)) / world
    ref["gather"] = (loss.detach(), {"P1": torch.autograd.grad(loss, ps)[0]})
    assert ref["supcon_s1"][0].item() > 0                     # some anchors have positives
    # Both CKA forms against the Gram form of one process on the global batch.
    outer = (data["x"][:, :, None] * data["xa"][:, None, :]).flatten(1)
    cka_ref = torch.stack([linear_cka(outer, torch.tanh(data["xa"])),
                           linear_cka(data["x"][:, :2], data["xa"][:, :3].abs())])
    for form in ("gram", "moments", "auto"):
        torch.testing.assert_close(ref[f"cka_{form}"][0], cka_ref, rtol=1e-9, atol=1e-12)
    # "local": Nguyen et al.'s mini-batch estimator with each rank's rows as the mini-batch -- the HSIC terms of the
    # W row blocks, averaged, then CKA; the same value on every rank (and not the global batch's).
    b = N // world
    outer_all, ya_all = outer.double(), torch.tanh(data["xa"]).double()
    terms = torch.stack([torch.stack([hsic1(X @ X.T, Y @ Y.T), hsic1(X @ X.T, X @ X.T), hsic1(Y @ Y.T, Y @ Y.T)])
                         for X, Y in ((outer_all[r * b:(r + 1) * b], ya_all[r * b:(r + 1) * b]) for r in range(world))])
    want_local = cka_of(terms.mean(0))
    for rk in ranks:
        assert rk["local_cka"][0].item() == pytest.approx(want_local, rel=1e-9)
    ref.pop("local_cka")
    # The objective's CKA is on the whole maps with time kept (S^l [n, T*C*H*W], Eq.8-9): one process against
    # Eq.9 written out (and every rank against one process, below).
    views, teacher = objective_inputs(data["x"], data["xa"], params)
    for layer in ("stage1", "pooled"):
        want = cka_of(hsic_triple(views[0].features[layer], teacher.features[layer]))
        assert ref[f"component.cka.{layer}"][0].item() == pytest.approx(want, rel=1e-5), layer

    # Collectives per objective step (sscl+stcl, both CKA forms in use with 2 layers), TCL and SSCL alike: 1 shape
    # check (all-reduce), 1 gather (TCL: keys + labels; SSCL: embeddings + Gram-form CKA rows), 1 all-reduce (TCL:
    # values; SSCL: values + moment-form CKA sums), 1 reduce-scatter in backward -- for 1 layer (moments only)
    # and for 2 layers (both forms) alike, on every rank -- plus, per TCL head, the global BatchNorm's statistics:
    # one all-reduce forward and one backward (both views in one call).
    for r in range(world):
        calls = torch.load(tmp_path / f"calls{r}.pt")
        for layers in (1, 2):
            want = ["all_reduce"] * (4 + 2 * layers) + ["all_gather_single"] * 2 + ["reduce_scatter_single"] * 2
            assert calls[layers] == sorted(want), (layers, calls[layers])

    for name, (value, grads) in ref.items():
        values = [rk[name][0] for rk in ranks]
        tol = dict(rtol=1e-4, atol=1e-5) if name.startswith(("objective", "component")) else dict(rtol=1e-9, atol=1e-10)
        if name.endswith("bf16"):
            # bf16 products and sums round differently over the local and the global batch: each averaged gradient
            # by its relative norm error (measured here: < 1 % for most, 3.3 % for one head bias at W = 3; a wrong
            # row or a missing gradient is off by O(1)), the value to 2 %.
            for p, g_ref in grads.items():
                g_avg = sum(rk[name][1][p] for rk in ranks) / world
                # a Linear right before a BatchNorm has a bias gradient of exactly 0: rounding only, no relative test
                err = ((g_avg - g_ref).norm() / g_ref.norm()).item()
                assert err < 0.1 or (g_avg - g_ref).norm() < 1e-4, \
                    f"{name}: averaged gradient of {p} off by {err:.3g} of its norm"
            torch.testing.assert_close(sum(values) / world, value, rtol=2e-2, atol=2e-3, msg=f"{name}: rank mean differs")
            continue
        if name in GLOBAL_VALUE:                                # the same global value on every rank
            for v in values:
                torch.testing.assert_close(v, value, **tol, msg=f"{name}: a rank's value differs")
        else:                                                    # rank-local parts (CE): the rank mean
            torch.testing.assert_close(sum(values) / world, value, **tol, msg=f"{name}: rank mean differs")
        for p, g_ref in grads.items():
            if g_ref is None:
                continue
            g_avg = sum(rk[name][1][p] for rk in ranks) / world  # what DDP / DeepSpeed apply
            torch.testing.assert_close(g_avg, g_ref, **tol, msg=f"{name}: averaged gradient of {p} differs")


def test_helpers_are_no_ops_without_a_process_group():
    assert not dist.is_initialized()
    assert (D.rank(), D.world_size(), D.is_main()) == (0, 1, True)
    x = torch.randn(3, 2, requires_grad=True)
    assert D.all_gather_with_grad(x) is x
    assert torch.equal(D.all_gather_no_grad(x), x.detach())
    assert torch.equal(D.reduce_mean(x), x.detach()) and torch.equal(D.reduce_sum(x), x.detach())
    assert D.all_reduce_max_flag(True) and not D.all_reduce_max_flag(False)
    assert D.global_value(x.sum()) is not None and D.global_value(x.sum()).requires_grad
