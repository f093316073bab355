"""Losses of the four methods (TCL/STCL, SSCL, TET, baseline) and the objective that composes them."""
from .classification import mean_ce_loss, tet_loss
from .cka_weights import CKAWeights
from .heads import Embedder, ProjectionHead
from .nce_critic import estimate_log_z, nce_critic_loss
from .objective import LossOutput, Objective, build_objective
from .pooling import grid_flatten, spatial_mean
from .similarity import linear_cka, unbiased_hsic
from .temporal_supcon import temporal_supcon_loss

__all__ = [
    "CKAWeights", "Embedder", "LossOutput", "Objective", "ProjectionHead", "build_objective", "estimate_log_z",
    "grid_flatten", "linear_cka", "mean_ce_loss", "nce_critic_loss", "spatial_mean", "temporal_supcon_loss",
    "tet_loss", "unbiased_hsic",
]
