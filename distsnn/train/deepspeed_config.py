"""The DeepSpeed config, derived from the YAML (never written by hand, so the two cannot disagree)."""
from __future__ import annotations


def resolve_precision(precision: str, device_type: str) -> str:
    """``auto`` is bf16 on a GPU and fp32 on the CPU; an explicit ``bf16`` also runs on the CPU (CPU autocast
    supports it). ``fp16`` never gets here: the config loader refuses it."""
    if precision == "auto":
        return "bf16" if device_type == "cuda" else "fp32"
    if precision not in ("fp32", "bf16"):
        raise ValueError(f"deepspeed.precision: {precision!r} is not supported (use auto, fp32 or bf16)")
    return precision


def deepspeed_config(cfg, world_size: int) -> dict:
    """Batch sizes, ZeRO stage, clipping. Neither DeepSpeed's ``bf16``/``fp16`` modes nor its ``torch_autocast``
    section are used: bf16 is torch autocast entered inside ``TrainModule.forward`` (weights, gradients, their
    all-reduce and the optimizer state stay fp32). Without a ``torch_autocast`` section the engine's forward
    disables any autocast entered *around* it, which is why it is entered inside."""
    return {
        "train_micro_batch_size_per_gpu": cfg.data.batch_size,
        "gradient_accumulation_steps": cfg.deepspeed.grad_accum,
        "train_batch_size": cfg.data.batch_size * cfg.deepspeed.grad_accum * world_size,
        "zero_optimization": {"stage": cfg.deepspeed.zero_stage},
        "zero_allow_untested_optimizer": True,
        "gradient_clipping": cfg.optim.grad_clip,
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }
