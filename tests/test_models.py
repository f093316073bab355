"""Models: every registered name builds through timm, runs forward/backward, returns the documented shapes."""
import pytest
import timm
import torch

from distsnn.models import ANNS, STUDENTS, build_teacher, load_weights, save_weights
from distsnn.config import load

SMALL = dict(num_classes=7, width_multiplier=0.125)


@pytest.mark.parametrize("name", STUDENTS)
def test_student_builds_and_returns_documented_shapes(name):
    T, B = 2, 3
    model = timm.create_model(name, timesteps=T, **SMALL)
    out = model(torch.randn(B, 3, 32, 32), return_features=True)
    assert out.logits.shape == (T, B, 7)
    stages = [k for k in out.features if k.startswith("stage")]
    assert len(stages) in (3, 4) and set(out.features) == set(model.feature_channels)
    for k, f in out.features.items():
        expected_dims = 3 if k == "pooled" else 5
        assert f.dim() == expected_dims and f.shape[:2] == (T, B) and f.shape[2] == model.feature_channels[k], k
    out.logits.sum().backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    # plain forward returns logits only; a [T, B, ...] sequence is accepted too
    assert model(torch.randn(T, B, 3, 32, 32)).shape == (T, B, 7)


@pytest.mark.parametrize("name", ["spiking_resnet18", "spiking_resnet20"])
def test_spiking_resnet_emits_binary_spikes(name):
    model = timm.create_model(name, timesteps=2, **SMALL)
    feats = model(torch.randn(2, 3, 32, 32) * 3, return_features=True).features
    for k, f in feats.items():
        if k.startswith("stage"):
            assert set(f.unique().tolist()) <= {0.0, 1.0}, k
            assert f.sum() > 0, f"{k}: no spike at all; the check would be vacuous"


def test_sew_stage_outputs_are_nonnegative_integers():
    model = timm.create_model("sew_resnet18", timesteps=2, **SMALL)
    f = model(torch.randn(2, 3, 32, 32) * 3, return_features=True).features["stage2"]
    assert torch.equal(f, f.round()) and f.min() >= 0 and f.max() >= 1


def test_static_image_equals_repeated_sequence():
    """Direct encoding computes the stem once; it must equal feeding the same image at every step."""
    model = timm.create_model("spiking_resnet18", timesteps=3, **SMALL).eval()
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(model(x), model(x.unsqueeze(0).repeat(3, 1, 1, 1, 1)))


@pytest.mark.parametrize("name", ANNS)
def test_ann_counterparts(name):
    model = timm.create_model(name, **SMALL)
    out = model(torch.randn(2, 3, 32, 32), return_features=True)
    assert out.logits.shape == (2, 7) and out.features["pooled"].shape == (2, model.feature_channels["pooled"])
    assert all(f.shape[0] == 2 for f in out.features.values())


def test_bad_inputs_name_the_argument():
    model = timm.create_model("spiking_resnet18", timesteps=2, **SMALL)
    with pytest.raises(ValueError, match="channels"):
        model(torch.randn(2, 1, 32, 32))
    with pytest.raises(ValueError, match="x: expected"):
        model(torch.randn(3, 32, 32))
    with pytest.raises(ValueError, match="T=3"):
        model(torch.randn(3, 2, 3, 32, 32))
    with pytest.raises(ValueError, match="timesteps"):
        timm.create_model("spiking_resnet18", timesteps=0)
    with pytest.raises(ValueError, match="threshold"):
        timm.create_model("spiking_resnet18", threshold=0.0)
    with pytest.raises(ValueError, match="surrogate"):
        timm.create_model("spiking_resnet18", surrogate="nope")
    with pytest.raises(RuntimeError, match="spiking_resnet99"):
        timm.create_model("spiking_resnet99")
    with pytest.raises(ValueError, match="pretrained"):
        timm.create_model("spiking_resnet18", pretrained=True)


def test_teacher_weights_round_trip_and_key_errors(tmp_path):
    cfg = load("demo_sscl.yaml")
    ann = timm.create_model("ann_resnet20", num_classes=10, width_multiplier=cfg.model.width_multiplier)
    path = tmp_path / "teacher.safetensors"
    save_weights(ann, path)
    cfg.teacher.weights = str(path)
    teacher = build_teacher(cfg.teacher, cfg.model)
    assert not any(p.requires_grad for p in teacher.parameters()) and not teacher.training
    x = torch.randn(2, 3, 16, 16)
    torch.testing.assert_close(teacher(x), ann.eval()(x))
    # a file of another architecture: the missing/unexpected keys are named
    other = tmp_path / "other.safetensors"
    save_weights(timm.create_model("ann_resnet18", num_classes=10, width_multiplier=0.125), other)
    with pytest.raises(ValueError, match="missing keys.*unexpected keys"):
        load_weights(ann, other)
    (tmp_path / "x.pt").write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="only .safetensors"):
        load_weights(ann, tmp_path / "x.pt")
    with pytest.raises(FileNotFoundError, match="nope.safetensors"):
        load_weights(ann, tmp_path / "nope.safetensors")


def test_timm_resnet_teacher_from_local_file(tmp_path):
    net = timm.create_model("resnet18", pretrained=False, num_classes=10)
    path = tmp_path / "r18.safetensors"
    save_weights(net, path)
    cfg = load("demo_sscl.yaml", ["teacher.name=resnet18", f"teacher.weights={path}"])
    teacher = build_teacher(cfg.teacher, cfg.model)
    x = torch.randn(2, 3, 32, 32)
    out = teacher(x, return_features=True)
    torch.testing.assert_close(out.logits, net.eval()(x))  # the wrapper runs timm's own layers
    assert out.features["stage4"].shape[1] == teacher.feature_channels["stage4"] == 512
    assert out.features["pooled"].shape == (2, 512)


def saved_activation_bytes(model, x):
    """Bytes autograd keeps for backward (unique storages, parameters excluded) over one forward."""
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen = {}

    def pack(t):
        if t.device.type != "meta":
            ptr = t.untyped_storage().data_ptr()
            if ptr not in params:
                seen[ptr] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = model(x)
    return out, sum(seen.values())


@pytest.mark.parametrize("name", ["spiking_resnet18", "sew_resnet18", "ann_resnet18"])
def test_grad_checkpointing_same_gradients_and_batchnorm_stats_less_memory(name):
    kw = {} if name.startswith("ann") else {"timesteps": 4}
    torch.manual_seed(0)
    plain = timm.create_model(name, **SMALL, **kw).train()
    ckpt = timm.create_model(name, **SMALL, **kw).train()
    ckpt.load_state_dict(plain.state_dict())
    ckpt.set_grad_checkpointing()
    x = torch.randn(4, 3, 32, 32)
    out_p, saved_p = saved_activation_bytes(plain, x)
    out_c, saved_c = saved_activation_bytes(ckpt, x)
    torch.testing.assert_close(out_c, out_p, rtol=0, atol=0)
    w = torch.randn_like(out_p)
    (out_p * w).sum().backward()
    (out_c * w).sum().backward()
    for (n, p), q in zip(plain.named_parameters(), ckpt.parameters()):
        torch.testing.assert_close(q.grad, p.grad, rtol=1e-6, atol=1e-7, msg=n)
    # The recomputation in backward must not update BatchNorm's running statistics a second time.
    for (n, b), c in zip(plain.named_buffers(), ckpt.buffers()):
        torch.testing.assert_close(c, b, rtol=0, atol=0, msg=n)
    assert saved_c < 0.6 * saved_p, (saved_c, saved_p)   # what is left: the stem, the stage inputs, the head
    # Inference keeps the plain path (nothing to recompute).
    with torch.no_grad():
        torch.testing.assert_close(ckpt.eval()(x), plain.eval()(x))


def test_config_switches_grad_checkpointing():
    from distsnn.models.factory import build_student
    cfg = load("demo_sscl.yaml", ["model.grad_checkpointing=true"])
    assert build_student(cfg.model).grad_checkpointing is True
    assert build_student(cfg.model, ann=True).grad_checkpointing is True
    assert build_student(load("demo_sscl.yaml").model).grad_checkpointing is False
