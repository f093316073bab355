"""One objective per method (TCL Eq.4, 5, 8, 9; SSCL Eq.20), built from the config's weights."""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from distsnn.config.schema import MethodConfig
from distsnn.distributed import all_gather_columns, all_reduce_sums, check_same_shapes, global_value

from .classification import mean_ce_loss, tet_loss
from .cka_weights import CKAWeights
from .heads import Embedder, ProjectionHead, tcl_head_widths
from .global_cka import GlobalCKA
from .nce_critic import estimate_log_z, nce_critic_local
from .pooling import grid_flatten, representation_rows, spatial_mean
from .temporal_supcon import check_supcon_inputs, gather_supcon_keys, supcon_anchors, temporal_supcon_local

if TYPE_CHECKING:  # only a type here: importing distsnn.models at run time would pull in timm (seconds)
    from distsnn.models.output import ModelOutput

TEACHER_METHODS = ("sscl", "sscl+stcl")
CONTRAST_METHODS = ("tcl", "stcl", "sscl+stcl")
TWO_VIEW_METHODS = ("stcl", "sscl+stcl")


class LossOutput(NamedTuple):
    """``total``: scalar with grad. ``components``: named DETACHED scalars for metrics."""

    total: torch.Tensor
    components: dict[str, torch.Tensor]


class Objective(nn.Module):
    """The training loss of one method. Parameters: TCL projection heads (one per layer in
    ``method.tcl.layers``), SSCL embedders g^S / g^A (one pair per layer in ``method.sscl.layers``),
    trained with the student. Buffers (checkpointed): the CKA's running HSIC terms, per-layer ``log_z`` and
    ``log_z_ready``. Every loss is computed in float32 with autocast disabled, whatever the features' dtype
    (a bf16 matmul of the critic's logits shifts the SSCL loss by ~15 %).

    Methods: ann = CE on ``[B, K]`` logits; baseline = Eq.4; tet = Eq.5; tcl = CE_cls + w * sum_l CL_l
    (Eq.8); stcl = CE_cls(view1) + CE_cls(view2) + w * sum_l CL_l on both views stacked on S (Eq.9);
    sscl = CE_cls + sscl.weight * sum_l lambda_l L_NCE^l (Eq.20); sscl+stcl = stcl's terms + sscl's
    terms (teacher on view 1). CE_cls = Eq.4 or Eq.5 per ``method.classification``.

    Components: "ce"/"tet" (or "ce.view1"/"ce.view2", "tet.view1"/"tet.view2" for two views),
    "tcl" = sum_l CL_l (before w), "tcl.<layer>", "nce" = sum_l lambda_l L_NCE^l (before
    sscl.weight), "nce.<layer>", "cka.<layer>", "lambda.<layer>".
    """

    def __init__(self, cfg: MethodConfig, student_channels: dict[str, int] | None,
                 teacher_channels: dict[str, int] | None, num_data: int = 0, timesteps: int = 1):
        super().__init__()
        self.method = cfg.name
        self.classification = cfg.classification
        self.timesteps = timesteps
        self.tcl_cfg, self.sscl_cfg = cfg.tcl, cfg.sscl
        self.requires_teacher = self.method in TEACHER_METHODS
        self.num_views = 2 if self.method in TWO_VIEW_METHODS else 1
        student_channels = dict(student_channels or {})

        self.heads = nn.ModuleDict()
        if self.method in CONTRAST_METHODS:
            layers = self._layers(cfg.tcl.layers, student_channels, "method.tcl.layers", "student_channels")
            # Contrastive Deep Supervision heads (TCL Sec. 4.4): conv blocks per stage, then GAP + MLP.
            for layer, down in tcl_head_widths(layers, student_channels, cfg.tcl.head).items():
                self.heads[layer] = ProjectionHead(student_channels[layer], cfg.tcl.proj_hidden, cfg.tcl.proj_dim, down)

        self.embed_s, self.embed_a = nn.ModuleDict(), nn.ModuleDict()
        self.sscl_layers: list[str] = []
        self.num_data = 0
        if self.requires_teacher:
            if teacher_channels is None:
                raise ValueError(f"method.name={self.method} needs a teacher: teacher_channels must be given")
            self.sscl_layers = self._layers(cfg.sscl.layers, student_channels, "method.sscl.layers", "student_channels")
            self._layers(cfg.sscl.layers, teacher_channels, "method.sscl.layers", "teacher_channels")
            self.num_data = cfg.sscl.num_data or num_data
            if self.num_data < 1:
                raise ValueError("method.sscl.num_data is 0 and no training-set size (num_data) was given: "
                                 "M of SSCL Eq.19 is needed")
            if timesteps < 1:
                raise ValueError(f"timesteps (model.timesteps) must be >= 1, got {timesteps}")
            g2 = cfg.sscl.pool_grid ** 2
            for layer in self.sscl_layers:
                cells = 1 if layer == "pooled" else g2           # "pooled" is [.., C] already
                # g^S sees the whole spike train [T, C, g, g] of a sample, or its rate (pooling.grid_flatten).
                steps = timesteps if cfg.sscl.embed_time == "keep" else 1
                self.embed_s[layer] = Embedder(steps * student_channels[layer] * cells, cfg.sscl.embed_dim)
                self.embed_a[layer] = Embedder(teacher_channels[layer] * cells, cfg.sscl.embed_dim)
        n = len(self.sscl_layers)
        self.cka = CKAWeights(self.sscl_layers, cfg.sscl.cka_decay, cfg.sscl.cka_min, cfg.sscl.cka_weights)
        self.register_buffer("log_z", torch.zeros(n, dtype=torch.float64))
        self.register_buffer("log_z_ready", torch.zeros(n, dtype=torch.bool))
        # Host-side mirror of log_z_ready, so a step does not sync with the device to read it;
        # cleared whenever a state_dict is loaded.
        self._z_ready_host: set[int] = set()
        self.register_load_state_dict_post_hook(lambda module, keys: module._z_ready_host.clear())

    @staticmethod
    def _layers(layers, channels: dict[str, int], key: str, what: str) -> list[str]:
        if not layers:
            raise ValueError(f"{key} is empty: give at least one feature layer")
        missing = [l for l in layers if l not in channels]
        if missing:
            raise ValueError(f"{key}: {missing} not in {what} ({sorted(channels)})")
        return list(layers)

    def _classify(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return tet_loss(logits, labels) if self.classification == "tet" else mean_ce_loss(logits, labels)

    @staticmethod
    def _feature(view: ModelOutput, layer: str, who: str) -> torch.Tensor:
        if layer not in view.features:
            raise ValueError(f"{who} has no feature {layer!r} (has {sorted(view.features)}); call the model "
                             "with return_features=True")
        return view.features[layer]

    def forward(self, student_views: list[ModelOutput], labels: torch.Tensor,
                teacher: ModelOutput | None = None) -> LossOutput:
        if len(student_views) != self.num_views:
            raise ValueError(f"method {self.method} expects {self.num_views} student view(s), got {len(student_views)}")
        if self.requires_teacher and teacher is None:
            raise ValueError(f"method {self.method} needs the teacher's output (teacher=...)")
        # Losses in float32 (issue: bf16 autocast turned the critic's matmul and log Z subtraction to bf16).
        with torch.autocast(student_views[0].logits.device.type, enabled=False):
            student_views = [_float32(v) for v in student_views]
            teacher = _float32(teacher) if teacher is not None else None
            return self._forward(student_views, labels, teacher)

    def _forward(self, student_views: list[ModelOutput], labels: torch.Tensor,
                 teacher: ModelOutput | None) -> LossOutput:
        comps: dict[str, torch.Tensor] = {}
        if self.method == "ann":
            total = F.cross_entropy(student_views[0].logits, labels)
            comps["ce"] = total
        elif self.method == "baseline":
            total = comps["ce"] = mean_ce_loss(student_views[0].logits, labels)
        elif self.method == "tet":
            total = comps["tet"] = tet_loss(student_views[0].logits, labels)
        else:
            name = "tet" if self.classification == "tet" else "ce"
            if self.num_views == 1:
                total = self._classify(student_views[0].logits, labels)
                comps[name] = total
            else:
                total = 0.0
                for v, view in enumerate(student_views, 1):
                    term = self._classify(view.logits, labels)
                    comps[f"{name}.view{v}"] = term
                    total = total + term
        if self.heads:
            total = total + self.tcl_cfg.weight * self._tcl(student_views, labels, comps)
        if self.requires_teacher:
            total = total + self.sscl_cfg.weight * self._sscl(student_views[0], teacher, comps)
        return LossOutput(total, {k: v.detach() for k, v in comps.items()})

    def _tcl(self, views: list[ModelOutput], labels: torch.Tensor, comps: dict) -> torch.Tensor:
        """sum_l CL_l (TCL Eq.7/10), z of all views stacked on the S axis (STCL Eq.9). All layers share three
        collectives and one in backward, whatever their number: a shape check, one gather (every layer's keys
        with gradient and the labels without), one value all-reduce, and the gather's reduce-scatter."""
        ids_from = labels if self.tcl_cfg.supervised else None      # None: Eq.7, the sample is its own class
        zs = []
        for layer, head in self.heads.items():
            # [T, B, C(, H, W)] per view, stacked -> [S, B, D] with S = T * views: one head call, so its BatchNorm
            # sees both views (as SupCon's two-view batch does); the head pools spatial features.
            z = head(torch.cat([self._feature(v, layer, f"student view {i + 1}") for i, v in enumerate(views)], dim=0))
            # validate=False: the head normalises, and the check would cost a host sync per layer.
            check_supcon_inputs(z, ids_from, validate=False)
            zs.append(z)
        s = zs[0].shape[0]
        anchors = [supcon_anchors(z) for z in zs]
        keys, ids = gather_supcon_keys(anchors, ids_from, s, "TCL projections")
        local = torch.stack([temporal_supcon_local(a, k, ids, s, self.tcl_cfg.temperature)
                             for a, k in zip(anchors, keys)])
        terms = global_value(local)
        for layer, term in zip(self.heads, terms):
            comps[f"tcl.{layer}"] = term
        comps["tcl"] = total = terms.sum()
        return total

    def _sscl(self, student: ModelOutput, teacher: ModelOutput, comps: dict) -> torch.Tensor:
        """sum_l lambda_l L_NCE^l (SSCL Eq.20), lambda_l = 1/CKA_l on the global batch. All layers share three
        collectives and one in backward, whatever their number and CKA form: a shape check, one gather (teacher
        embeddings with gradient, Gram-form CKA rows without), one all-reduce (the NCE values and the moment-form
        CKA sums), and the gather's reduce-scatter."""
        cfg = self.sscl_cfg
        self._check_distinct_layers(student)
        s_maps, a_maps, z_s, z_a = [], [], [], []
        for layer in self.sscl_layers:
            s_feat = self._feature(student, layer, "student view 1")
            a_feat = self._feature(teacher, layer, "teacher").detach()
            if s_feat.shape[1] != a_feat.shape[0]:
                raise ValueError(f"layer {layer}: student batch {s_feat.shape[1]} != teacher batch {a_feat.shape[0]}")
            if cfg.embed_time == "keep" and s_feat.shape[0] != self.timesteps:
                raise ValueError(f"layer {layer}: the student's features have T = {s_feat.shape[0]} steps but the "
                                 f"objective was built with timesteps={self.timesteps} (g^S's input width is T x the "
                                 "features'): pass timesteps=model.timesteps to build_objective")
            # CKA (Eq.8-9) on the whole representation: S^l [B, T*C*H*W], A^l [B, C*H*W].
            s_maps.append(representation_rows(s_feat, time_major=True))
            a_maps.append(representation_rows(a_feat, time_major=False))
            z_s.append(self.embed_s[layer](grid_flatten(s_feat, cfg.pool_grid, time_major=True,
                                                         keep_time=cfg.embed_time == "keep")))
            z_a.append(self.embed_a[layer](grid_flatten(a_feat, cfg.pool_grid, time_major=False)))
        check_same_shapes(s_maps + a_maps, "SSCL features")
        log_zs = [self._log_z(k, z_s[k], z_a[k]) for k in range(len(self.sscl_layers))]
        # CKA's HSIC terms on the global batch, detached: a weight, not an objective (SSCL Eq.20).
        cka = GlobalCKA(list(zip(s_maps, a_maps)), cfg.cka_estimator)
        dtype = torch.promote_types(z_s[0].dtype, torch.float32)             # half/bf16 -> float32
        n = len(z_a)
        gathered = all_gather_columns([z.to(dtype) for z in z_a] + cka.to_gather,
                                      grad=[True] * n + [False] * len(cka.to_gather))
        a_all = gathered[:n]                                                # [W*B, D] per layer
        local = torch.stack([nce_critic_local(zs, za, cfg.temperature, num_data=self.num_data, log_z=lz)
                             for zs, za, lz in zip(z_s, a_all, log_zs)])
        summed = all_reduce_sums([local, *cka.to_sum])
        nce = global_value(local, summed[0])
        terms = cka.finish(gathered[n:], summed[1:])
        total = 0.0
        for k, layer in enumerate(self.sscl_layers):
            cka_k, lam = self.cka(layer, terms[k])
            comps[f"nce.{layer}"], comps[f"cka.{layer}"], comps[f"lambda.{layer}"] = nce[k], cka_k.float(), lam.float()
            total = total + lam.to(nce.dtype) * nce[k]
        comps["nce"] = total
        return total

    def _check_distinct_layers(self, student: ModelOutput) -> None:
        """No two NCE terms on the same input: the pooled feature is the last stage's spatial mean, so a last
        stage of 1 x 1 (ResNet-20 at 16 px) IS the pooled feature, and listing both counts it twice in Eq.20."""
        if "pooled" not in self.sscl_layers:
            return
        stages = sorted((k for k in student.features if k.startswith("stage")), key=lambda k: int(k[5:]))
        last = stages[-1] if stages else None
        if last in self.sscl_layers and math.prod(student.features[last].shape[-2:]) == 1:
            raise ValueError(f"method.sscl.layers: {last!r} is 1x1 at this input size, so it is the same vector as "
                             f"'pooled'; list only one of them (a larger data.image_size makes them differ)")

    def _log_z(self, k: int, z_s: torch.Tensor, z_a: torch.Tensor) -> torch.Tensor | float:
        """log Z of layer k: 0 (literal Eq.19), or CRD's estimate frozen at the first training batch."""
        if self.sscl_cfg.normalizer == "none":
            return 0.0
        if k in self._z_ready_host or bool(self.log_z_ready[k]):
            self._z_ready_host.add(k)
            return self.log_z[k]
        est = estimate_log_z(z_s, z_a, self.sscl_cfg.temperature, num_data=self.num_data)
        if not math.isfinite(float(est)):
            raise ValueError(f"log Z estimate of layer {self.sscl_layers[k]} is not finite ({float(est)})")
        if self.training:  # frozen from the first TRAINING batch on; eval batches never set it
            self.log_z[k] = est.to(self.log_z.dtype)
            self.log_z_ready[k] = True
            self._z_ready_host.add(k)
        return est


def _float32(out: ModelOutput) -> ModelOutput:
    """Half/bf16 logits and features as float32 (float32 and float64 pass unchanged)."""
    def up(t: torch.Tensor) -> torch.Tensor:
        return t.float() if t.is_floating_point() and t.element_size() < 4 else t
    return type(out)(up(out.logits), {k: up(v) for k, v in out.features.items()})


def build_objective(method: MethodConfig, student_channels: dict[str, int] | None,
                    teacher_channels: dict[str, int] | None = None, num_data: int = 0,
                    timesteps: int = 1) -> Objective:
    """The objective of ``method.name`` with the config's weights; ``timesteps``: the student's T (the width
    of g^S's input); see :class:`Objective`."""
    return Objective(method, student_channels, teacher_channels, num_data, timesteps)
