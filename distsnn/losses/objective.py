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
from .heads import Embedder, ProjectionHead
from .global_cka import GlobalCKA
from .nce_critic import estimate_log_z, nce_critic_local
from .pooling import grid_flatten, spatial_mean
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
    trained with the student. Buffers (checkpointed): CKA EMA state, per-layer ``log_z`` and
    ``log_z_ready``.

    Methods: ann = CE on ``[B, K]`` logits; baseline = Eq.4; tet = Eq.5; tcl = CE_cls + w * sum_l CL_l
    (Eq.8); stcl = CE_cls(view1) + CE_cls(view2) + w * sum_l CL_l on both views stacked on S (Eq.9);
    sscl = CE_cls + sscl.weight * sum_l lambda_l L_NCE^l (Eq.20); sscl+stcl = stcl's terms + sscl's
    terms (teacher on view 1). CE_cls = Eq.4 or Eq.5 per ``method.classification``.

    Components: "ce"/"tet" (or "ce.view1"/"ce.view2", "tet.view1"/"tet.view2" for two views),
    "tcl" = sum_l CL_l (before w), "tcl.<layer>", "nce" = sum_l lambda_l L_NCE^l (before
    sscl.weight), "nce.<layer>", "cka.<layer>", "lambda.<layer>".
    """

    def __init__(self, cfg: MethodConfig, student_channels: dict[str, int] | None,
                 teacher_channels: dict[str, int] | None, num_data: int = 0):
        super().__init__()
        self.method = cfg.name
        self.classification = cfg.classification
        self.tcl_cfg, self.sscl_cfg = cfg.tcl, cfg.sscl
        self.requires_teacher = self.method in TEACHER_METHODS
        self.num_views = 2 if self.method in TWO_VIEW_METHODS else 1
        student_channels = dict(student_channels or {})

        self.heads = nn.ModuleDict()
        if self.method in CONTRAST_METHODS:
            for layer in self._layers(cfg.tcl.layers, student_channels, "method.tcl.layers", "student_channels"):
                self.heads[layer] = ProjectionHead(student_channels[layer], cfg.tcl.proj_hidden, cfg.tcl.proj_dim)

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
            g2 = cfg.sscl.pool_grid ** 2
            for layer in self.sscl_layers:
                cells = 1 if layer == "pooled" else g2           # "pooled" is [.., C] already
                self.embed_s[layer] = Embedder(student_channels[layer] * cells, cfg.sscl.embed_dim)
                self.embed_a[layer] = Embedder(teacher_channels[layer] * cells, cfg.sscl.embed_dim)
        n = len(self.sscl_layers)
        self.cka = CKAWeights(self.sscl_layers, cfg.sscl.cka_momentum, cfg.sscl.cka_min, cfg.sscl.cka_weights)
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
            # [T, B, C] per view -> [S, B, D] with S = T * views.
            z = torch.cat([head(spatial_mean(self._feature(v, layer, f"student view {i + 1}")))
                           for i, v in enumerate(views)], dim=0)
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
        s_feats, a_feats, z_s, z_a = [], [], [], []
        for layer in self.sscl_layers:
            s_feat = grid_flatten(self._feature(student, layer, "student view 1"), cfg.pool_grid, time_major=True)
            a_feat = grid_flatten(self._feature(teacher, layer, "teacher").detach(), cfg.pool_grid, time_major=False)
            if s_feat.shape[0] != a_feat.shape[0]:
                raise ValueError(f"layer {layer}: student batch {s_feat.shape[0]} != teacher batch {a_feat.shape[0]}")
            s_feats.append(s_feat)
            a_feats.append(a_feat)
            z_s.append(self.embed_s[layer](s_feat))
            z_a.append(self.embed_a[layer](a_feat))
        check_same_shapes(s_feats + a_feats, "SSCL features")
        log_zs = [self._log_z(k, z_s[k], z_a[k]) for k in range(len(self.sscl_layers))]
        # CKA on the global batch, detached: a weight, not an objective (SSCL Eq.20).
        cka = GlobalCKA(list(zip(s_feats, a_feats)), cfg.cka_estimator)
        dtype = torch.promote_types(z_s[0].dtype, torch.float32)             # half/bf16 -> float32
        n = len(z_a)
        gathered = all_gather_columns([z.to(dtype) for z in z_a] + cka.to_gather,
                                      grad=[True] * n + [False] * len(cka.to_gather))
        a_all = gathered[:n]                                                # [W*B, D] per layer
        local = torch.stack([nce_critic_local(zs, za, cfg.temperature, num_data=self.num_data, log_z=lz)
                             for zs, za, lz in zip(z_s, a_all, log_zs)])
        summed = all_reduce_sums([local, *cka.to_sum])
        nce = global_value(local, summed[0])
        ckas = cka.finish(gathered[n:], summed[1:])
        total = 0.0
        for k, layer in enumerate(self.sscl_layers):
            cka_k, lam = self.cka(layer, ckas[k])
            comps[f"nce.{layer}"], comps[f"cka.{layer}"], comps[f"lambda.{layer}"] = nce[k], cka_k.float(), lam.float()
            total = total + lam.to(nce.dtype) * nce[k]
        comps["nce"] = total
        return total

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


def build_objective(method: MethodConfig, student_channels: dict[str, int] | None,
                    teacher_channels: dict[str, int] | None = None, num_data: int = 0) -> Objective:
    """The objective of ``method.name`` with the config's weights; see :class:`Objective`."""
    return Objective(method, student_channels, teacher_channels, num_data)
