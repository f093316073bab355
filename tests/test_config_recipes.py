"""The recipes walked key by key: each loads, none holds a key its method ignores, and writing such a key into any
recipe is refused with the key named; the TCL recipes' neuron is TCL Eq.1 as printed."""
import math
from pathlib import Path

import pytest
import torch
import yaml

from distsnn.config import ConfigError, load
from distsnn.config.loader import CONFIGS_DIR
from distsnn.spiking import LIF

RECIPES = sorted(Path(CONFIGS_DIR).glob("*.yaml"))
TWO_VIEW, CONTRAST, TEACHER = {"stcl", "sscl+stcl"}, {"tcl", "stcl", "sscl+stcl"}, {"sscl", "sscl+stcl"}
# key -> (a valid value, the methods that read it); written by hand here, independently of relevance.RULES.
METHOD_KEYS = {
    "data.augment.color_jitter": (0.4, TWO_VIEW),
    "data.augment.grayscale_p": (0.2, TWO_VIEW),
    "method.tcl.weight": (0.5, CONTRAST),
    "method.tcl.head": ("gap", CONTRAST),
    "method.sscl.weight": (1.0, TEACHER),
    "teacher.name": ("resnet18", TEACHER),
    "method.classification": ("tet", {"tcl", "stcl", "sscl", "sscl+stcl"}),
}


def _raw(path):
    return yaml.safe_load(path.read_text())


def _method(raw):
    return raw.get("method", {}).get("name", "sscl")


def _with_key(raw, key, value):
    node = raw
    *parents, leaf = key.split(".")
    for k in parents:
        node = node.setdefault(k, {})
    node[leaf] = value
    return raw


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_recipe_loads_cleanly(path):
    cfg = load(path)
    assert cfg.method.name == _method(_raw(path))


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_a_key_the_recipes_method_ignores_is_refused_by_name(path, tmp_path):
    method = _method(_raw(path))
    ignored = [k for k, (_, used_by) in METHOD_KEYS.items() if method not in used_by]
    source = ("data.train_shards" if _raw(path).get("data", {}).get("source") in ("digits", "event_digits")
              else "data.cache_dir")
    for key, value in [(k, METHOD_KEYS[k][0]) for k in ignored] + [(source, "/somewhere")]:
        bad = tmp_path / f"{key}.yaml"
        bad.write_text(yaml.safe_dump(_with_key(_raw(path), key, value)))
        with pytest.raises(ConfigError) as e:
            load(bad)
        assert f"{bad}: {key}:" in str(e.value), str(e.value)


@pytest.mark.parametrize("key,text,why", [
    ("data.augment.color_jitter", "method: {name: tcl}\ndata: {source: digits, augment: {color_jitter: 0.4}}\n",
     "color_jitter applies to two-view methods only"),
    ("data.augment.grayscale_p", "method: {name: baseline}\ndata: {source: digits, augment: {grayscale_p: 0.0}}\n",
     "grayscale_p applies to two-view methods only"),
    ("method.tcl.layers", "method: {name: sscl}\nteacher: {weights: t.safetensors}\ndata: {source: digits}\n"
                          "method: {name: sscl, tcl: {layers: [pooled]}}\n", "temporal contrastive methods only"),
    ("method.sscl.weight", "method: {name: stcl, sscl: {weight: 2.0}}\ndata: {source: digits}\n", "teacher methods"),
    ("teacher.weights", "method: {name: baseline}\nteacher: {weights: t.safetensors}\ndata: {source: digits}\n",
     "teacher"),
    ("method.classification", "method: {name: tet, classification: mean}\ndata: {source: digits}\n", "CE term"),
    ("teacher.min_accuracy", "method: {name: sscl}\ndata: {source: digits}\n"
                             "teacher: {weights: t.safetensors, check_accuracy: false, min_accuracy: 50}\n",
     "check_accuracy"),
    ("data.cache_dir", "method: {name: baseline}\ndata: {source: shards, train_shards: a, val_shards: b, "
                       "cache_dir: /c}\n", "data.source: digits"),
    ("telemetry.base_port", "method: {name: baseline}\ndata: {source: digits}\n"
                            "telemetry: {enabled: false, base_port: 9000}\n", "telemetry.enabled"),
    ("method.tcl.layers", "method: {name: stcl, tcl: {layers: [stage1, stage4, pooled]}}\ndata: {source: digits}\n",
     "stage4 and pooled are the same vector"),
])
def test_refusal_names_the_key_and_why(tmp_path, key, text, why):
    bad = tmp_path / "bad.yaml"
    bad.write_text(text)
    with pytest.raises(ConfigError) as e:
        load(bad)
    assert f"{bad}: {key}:" in str(e.value) and why in str(e.value), str(e.value)


def test_defaults_and_keys_the_method_reads_are_accepted(tmp_path):
    ok = tmp_path / "ok.yaml"
    ok.write_text("method: {name: baseline}\ndata: {source: digits}\n")   # color_jitter's default 0.4 is not written
    assert load(ok).data.augment.color_jitter == 0.4
    ok.write_text("method: {name: stcl, classification: tet, tcl: {head: gap}}\n"
                  "data: {source: digits, augment: {color_jitter: 0.0, grayscale_p: 0.5}}\n")
    cfg = load(ok)
    assert (cfg.data.augment.grayscale_p, cfg.method.tcl.head, cfg.method.classification) == (0.5, "gap", "tet")


def test_overrides_derive_variants_but_cannot_repeat_a_tcl_layer():
    # --set derives a variant: the recipe's two-view colour keys become unused and that is allowed ...
    assert load("imagenet_stcl_sew18", ["method.name=baseline"]).method.name == "baseline"
    # ... but the final config is still checked for a vector supervised twice.
    with pytest.raises(ConfigError, match="method.tcl.layers: stage4 and pooled"):
        load("imagenet_tcl_sew18", ["method.tcl.layers=[stage3,stage4,pooled]"])


# --- the TCL recipes' neuron ---------------------------------------------------------------------------------------
TCL_RECIPES = [p for p in RECIPES if _method(_raw(p)) in {"tcl", "stcl"}]


class _AtanSpike(torch.autograd.Function):
    """Heaviside forward; SpikingJelly's ATan surrogate backward: alpha/2 / (1 + (pi/2 alpha x)^2)."""

    @staticmethod
    def forward(ctx, x, alpha):
        ctx.save_for_backward(x)
        ctx.alpha = alpha
        return (x >= 0).to(x.dtype)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g * (ctx.alpha / 2) / (1 + (math.pi / 2 * ctx.alpha * x) ** 2), None


def _loop(x, charge, v_th, alpha):
    """Multi-step neuron with hard reset to 0: H = charge(V, X); spike = H >= v_th; V = H (1 - spike)."""
    v, out = torch.zeros_like(x[0]), []
    for t in range(x.shape[0]):
        h = charge(v, x[t])
        s = _AtanSpike.apply(h - v_th, alpha)
        v = h * (1 - s)
        out.append(s)
    return torch.stack(out)


def _lif(cfg, **change):
    n = cfg.model.neuron
    kw = dict(decay=n.decay, threshold=n.threshold, surrogate=n.surrogate, width=n.surrogate_width,
              implementation="reference") | change
    return LIF(**kw)


@pytest.mark.parametrize("path", TCL_RECIPES, ids=lambda p: p.name)
def test_tcl_recipe_neuron_is_eq1_as_printed(path):
    # TCL Eq.1-3: u = 0.5 u + x (input not scaled), spike at u >= V_th, hard reset to 0.
    cfg = load(path)
    n = cfg.model.neuron
    x = (2 * torch.randn(4, 300, dtype=torch.float64, generator=torch.Generator().manual_seed(1))).requires_grad_()
    got = _lif(cfg)(x)
    want = _loop(x, lambda v, xt: 0.5 * v + xt, n.threshold, n.surrogate_width)
    assert n.decay == 0.5 and n.surrogate == "atan" and torch.equal(got, want) and 0 < got.mean() < 1
    g_got, = torch.autograd.grad(got.sum(), x, retain_graph=True)
    g_want, = torch.autograd.grad(want.sum(), x)
    torch.testing.assert_close(g_got, g_want)


def test_spikingjelly_lifnode_tau2_is_twice_the_threshold_and_half_the_atan_width():
    # The equivalence the recipes and docs/ARCHITECTURE.md state: SpikingJelly LIFNode(tau=2, decay_input=True,
    # v_reset=0) charges H = 0.5 V + 0.5 X; with hard reset to 0, V' = 2V turns it into H' = 0.5 V' + X with
    # threshold 2 V_th, and the atan surrogate of width alpha/2 gives the same gradients. Not so with threshold 1.
    cfg = load("imagenet_tcl_sew18")
    v_th, alpha = cfg.model.neuron.threshold, cfg.model.neuron.surrogate_width
    x = (2 * torch.randn(4, 300, dtype=torch.float64, generator=torch.Generator().manual_seed(2))).requires_grad_()
    sj = _loop(x, lambda v, xt: v + (xt - v) / 2.0, v_th, alpha)
    ours = _lif(cfg, threshold=2 * v_th, width=alpha / 2)(x)
    assert torch.equal(sj, ours)
    g_sj, = torch.autograd.grad((sj * torch.arange(4.0, dtype=x.dtype)[:, None]).sum(), x, retain_graph=True)
    g_ours, = torch.autograd.grad((ours * torch.arange(4.0, dtype=x.dtype)[:, None]).sum(), x)
    torch.testing.assert_close(g_sj, g_ours)
    assert not torch.equal(sj, _lif(cfg)(x))          # the recipe's Eq.1 neuron is a different neuron
