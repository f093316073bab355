"""Layer weights lambda_l = 1 / CKA_l of SSCL Eq.20, with CKA from HSIC terms accumulated across mini-batches."""
from __future__ import annotations

import torch
from torch import nn

from .similarity import cka_from_hsic_terms

NUM_TERMS = 5   # HSIC(K, L), HSIC(K, K), HSIC(L, L), mean K^2, mean L^2 (similarity.hsic_terms)


class CKAWeights(nn.Module):
    """Per-layer CKA "across mini-batches" (SSCL, after Eq.8; Nguyen, Raghu & Kornblith 2020) and the weight
    lambda_l = 1 / max(CKA_l, cka_min) of Eq.20.

    Nguyen et al. average the three unbiased HSIC terms (Eq.9) over mini-batches and form CKA from the
    averages, not the mean of per-batch CKA ratios: each term is unbiased, a ratio of noisy terms is not (at
    n = 32 a per-batch estimate is often negative and 1/CKA sits on the clamp). The network moves while it
    trains, so the average is exponentially weighted: terms_l <- ``decay`` * terms_l + batch terms, normalised
    by the weights' sum (so the first batch counts fully). ``decay`` 0.9 averages over ~10 recent batches
    (effective count (1 + d)/(1 - d) = 19): on the 64-image global batches of the demo that is ~1,200 images,
    inside one epoch of drift; decay 0 is this batch only.

    The batch terms come from the caller on the GLOBAL batch (identical on every rank). The state (``hsic``
    ``[L, 5]``, ``mass`` ``[L]``) is saved with the objective's state_dict and updated in training mode only.
    A batch with non-finite terms is left out of the average. ``enabled=False``: lambda_l = 1 (Table 3's
    plain NCE); the CKA is still tracked for metrics.
    """

    def __init__(self, layers: list[str], decay: float = 0.9, cka_min: float = 0.05, enabled: bool = True):
        super().__init__()
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"CKAWeights: decay (method.sscl.cka_decay) must be in [0, 1), got {decay}")
        if not 0.0 < cka_min <= 1.0:
            raise ValueError(f"CKAWeights: cka_min (method.sscl.cka_min) must be in (0, 1], got {cka_min}")
        self.layers = list(layers)
        self.decay, self.cka_min, self.enabled = decay, cka_min, enabled
        self.register_buffer("hsic", torch.zeros(len(self.layers), NUM_TERMS, dtype=torch.float64))
        self.register_buffer("mass", torch.zeros(len(self.layers), dtype=torch.float64))

    def forward(self, layer: str, batch_terms: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``batch_terms`` ``[5]`` of this batch -> (CKA used, lambda_l): detached float64 scalars."""
        k = self.layers.index(layer)
        terms = batch_terms.detach().double().to(self.hsic.device)
        finite = torch.isfinite(terms).all()
        hsic = torch.where(finite, self.decay * self.hsic[k] + torch.nan_to_num(terms), self.hsic[k])
        mass = torch.where(finite, self.decay * self.mass[k] + 1.0, self.mass[k])
        if self.training:
            self.hsic[k], self.mass[k] = hsic, mass
        cka = cka_from_hsic_terms(hsic / mass.clamp(min=1e-300))    # no finite batch yet: terms 0, CKA 0
        lam = 1.0 / cka.clamp(min=self.cka_min) if self.enabled else torch.ones_like(cka)
        return cka, lam
