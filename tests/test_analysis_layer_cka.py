"""distsnn.analysis.layer_cka: the batch-averaged whole-map CKA against SSCL Eq.9 written out (tests/hsic_reference),
CKA of a representation with itself, and the start student reproducing the trainer's seeded initialisation."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from distsnn.analysis.layer_cka import hsic_terms_over_batches, initial_student, layer_cka
from distsnn.config import load
from distsnn.models import build_student
from distsnn.models.output import ModelOutput
from hsic_reference import hsic_triple

LAYERS = ["stage1", "stage2", "stage3", "pooled"]


@pytest.fixture(autouse=True)
def _eager_lif(monkeypatch):
    monkeypatch.setenv("DISTSNN_LIF_COMPILE", "0")  # a few tiny forwards: no compile


def _tiny(seed: int):
    cfg = load("study_digits.yaml", ["model.width_multiplier=0.125", "method.name=baseline"])
    torch.manual_seed(seed)
    return cfg, build_student(cfg.model), build_student(cfg.model, ann=True)


class Fixed(nn.Module):
    """Prepared features as a model's ``return_features`` output: batch ``x`` holds the index of its dict."""

    def __init__(self, outputs: list[dict[str, torch.Tensor]]):
        super().__init__()
        self.outputs = outputs

    def forward(self, x, return_features=False):
        return ModelOutput(torch.zeros(1), self.outputs[int(x[0, 0])])


def test_random_features_match_eq9_reference_averaged_over_batches():
    g = torch.Generator().manual_seed(0)
    sizes = [6, 9, 3, 7]  # the batch of 3 is below the unbiased estimator's n >= 4 and is skipped
    s_out = [{"stage1": torch.randn(4, n, 2, 3, 3, generator=g), "pooled": torch.randn(4, n, 5, generator=g)}
             for n in sizes]
    # stage-1 teacher maps built from the student's (time summed) plus noise
    a_out = [{"stage1": s["stage1"].sum(0) + 0.5 * torch.randn(n, 2, 3, 3, generator=g),
              "pooled": torch.randn(n, 8, generator=g)} for s, n in zip(s_out, sizes)]
    batches = [torch.full((n, 1), i) for i, n in enumerate(sizes)]
    terms, images, count = hsic_terms_over_batches(Fixed(s_out), Fixed(a_out), batches, ["stage1", "pooled"])
    assert (images, count) == (22, 3)
    for layer in ("stage1", "pooled"):
        ref = torch.stack([hsic_triple(s[layer], a[layer]) for s, a, n in zip(s_out, a_out, sizes) if n >= 4]).mean(0)
        assert terms[layer][:3].tolist() == pytest.approx(ref.tolist(), rel=1e-9, abs=1e-12)
    # and the CKA: kl / sqrt(kk * ll) of the batch means
    cka = layer_cka(Fixed(s_out), Fixed(a_out), batches, ["stage1", "pooled"])
    for layer in ("stage1", "pooled"):
        ref = torch.stack([hsic_triple(s[layer], a[layer]) for s, a, n in zip(s_out, a_out, sizes) if n >= 4]).mean(0)
        assert cka[layer] == pytest.approx((ref[0] / (ref[1] * ref[2]).sqrt()).item(), rel=1e-9)
    assert all(0.0 < abs(v) < 1.0 for v in cka.values())


def test_tiny_model_against_itself_is_one_and_against_the_reference():
    _, student, teacher = _tiny(0)
    g = torch.Generator().manual_seed(1)
    batches = [torch.randn(8, 3, 16, 16, generator=g) for _ in range(2)]

    class AsStudent(nn.Module):  # the teacher's own features as a T = 1 student: the same representation
        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, x, return_features=False):
            out = self.net(x, return_features=True)
            return ModelOutput(out.logits, {k: v.unsqueeze(0) for k, v in out.features.items()})

    same = layer_cka(AsStudent(teacher), teacher, batches, LAYERS)
    assert list(same) == LAYERS
    for layer in LAYERS:
        assert same[layer] == pytest.approx(1.0, abs=1e-9)
    got = layer_cka(student, teacher, batches, LAYERS)
    assert student.training and teacher.training  # modes restored
    student.eval(), teacher.eval()
    with torch.no_grad():
        feats = [(student(x, return_features=True).features, teacher(x, return_features=True).features)
                 for x in batches]
    for layer in LAYERS:
        ref = torch.stack([hsic_triple(s[layer], a[layer]) for s, a in feats]).mean(0)
        want = (ref[0] / (ref[1] * ref[2]).sqrt()).item()
        assert got[layer] == pytest.approx(want, rel=1e-7)


def test_start_student_is_the_trainers_seeded_initialisation():
    cfg, _, _ = _tiny(0)
    cfg.run.seed = 3
    torch.manual_seed(cfg.run.seed)  # what Trainer.__init__ does right before build_student
    want = build_student(cfg.model).state_dict()
    torch.manual_seed(12345)  # whatever ran before does not matter
    got = initial_student(cfg).state_dict()
    assert all(torch.equal(want[k], got[k]) for k in want)
    cfg.run.seed = 4
    other = initial_student(cfg).state_dict()
    assert not all(torch.equal(want[k], other[k]) for k in want)
