"""What precision the student really computes in: the output dtype of its first convolution, seen from inside
whatever wraps it (DeepSpeed's engine may switch an outer autocast off; this sees the effect, not the intent)."""
from __future__ import annotations

import torch
from torch import nn

EXPECTED = {"fp32": torch.float32, "bf16": torch.bfloat16}


class ConvDtypeProbe:
    """``with ConvDtypeProbe(model) as probe: ...`` -> ``probe.dtype``: the output dtype of the first
    ``nn.Conv2d`` call under the context (None if no convolution ran)."""

    def __init__(self, model: nn.Module):
        self.conv = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
        if self.conv is None:
            raise ValueError(f"{type(model).__name__}: has no nn.Conv2d to probe")
        self.dtype: torch.dtype | None = None
        self._handle = None

    def _hook(self, module, inputs, output) -> None:
        if self.dtype is None:
            self.dtype = output.dtype

    def __enter__(self) -> "ConvDtypeProbe":
        self._handle = self.conv.register_forward_hook(self._hook)
        return self

    def __exit__(self, *exc) -> None:
        self._handle.remove()


def check_compute_dtype(precision: str, seen: torch.dtype | None) -> None:
    """Raise if the plan's ``precision`` and the dtype the convolutions produced disagree."""
    want = EXPECTED[precision]
    if seen is not None and seen != want:
        raise RuntimeError(f"deepspeed.precision resolved to {precision} but the student's convolutions produced "
                           f"{seen} inside the engine's forward (expected {want}): autocast is not where it should be")


def engine_conv_dtypes(trainer, batch, outer_autocast: bool = False) -> list[str]:
    """The output dtype of every student convolution during one ``trainer.engine(...)`` forward on ``batch``
    (``"bfloat16"``, ``"float32"``, ...). ``outer_autocast``: enter bf16 autocast around the engine instead, the
    set-up that DeepSpeed's forward silently undid (for contrast in the precision checks)."""
    seen: list[str] = []
    hooks = [m.register_forward_hook(lambda mod, i, o: seen.append(str(o.dtype).removeprefix("torch.")))
             for m in trainer.student.modules() if isinstance(m, nn.Conv2d)]
    try:
        if outer_autocast:
            with torch.autocast(trainer.device.type, dtype=torch.bfloat16):
                trainer.engine(batch.views, batch.labels, None)
        else:
            trainer.engine(batch.views, batch.labels, None)
    finally:
        for h in hooks:
            h.remove()
    return seen
