"""Layer weights lambda_l = 1 / CKA_l of SSCL Eq.20, with the CKA accumulated across mini-batches."""
from __future__ import annotations

import torch
from torch import nn


class CKAWeights(nn.Module):
    """Per-layer EMA of the batch CKA and the weight lambda_l = 1 / max(CKA_l, cka_min).

    The CKA of a batch is computed by the caller on the GLOBAL batch from detached features (so it is
    identical on every rank). ``momentum`` m: CKA_l <- m * CKA_l + (1 - m) * CKA_batch, the first batch
    taken as is; m = 0 uses this batch only ("across mini-batches" as in Nguyen et al.). The state
    (buffers ``cka`` and ``seen``, one entry per layer) is saved with the objective's state_dict and
    only updated in training mode. ``enabled=False``: lambda_l = 1 (Table 3's plain NCE), the CKA is
    still tracked for metrics. A non-finite batch CKA is taken as 0 (the weight hits its clamp).
    """

    def __init__(self, layers: list[str], momentum: float = 0.0, cka_min: float = 0.05, enabled: bool = True):
        super().__init__()
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"CKAWeights: momentum (method.sscl.cka_momentum) must be in [0, 1), got {momentum}")
        if not 0.0 < cka_min <= 1.0:
            raise ValueError(f"CKAWeights: cka_min (method.sscl.cka_min) must be in (0, 1], got {cka_min}")
        self.layers = list(layers)
        self.momentum, self.cka_min, self.enabled = momentum, cka_min, enabled
        self.register_buffer("cka", torch.zeros(len(self.layers), dtype=torch.float64))
        self.register_buffer("seen", torch.zeros(len(self.layers), dtype=torch.bool))

    def forward(self, layer: str, cka_batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """-> (CKA used, lambda_l): detached float64 scalars. Updates the state in training mode."""
        k = self.layers.index(layer)
        cka_batch = torch.nan_to_num(cka_batch.detach().double().to(self.cka.device), nan=0.0, posinf=0.0, neginf=0.0)
        blended = self.momentum * self.cka[k] + (1 - self.momentum) * cka_batch
        cka = torch.where(self.seen[k], blended, cka_batch)
        if self.training:
            self.cka[k] = cka
            self.seen[k] = True
        lam = 1.0 / cka.clamp(min=self.cka_min) if self.enabled else torch.ones_like(cka)
        return cka, lam
