"""The DeepSpeed config, derived from the YAML (never written by hand, so the two cannot disagree)."""
from __future__ import annotations


def resolve_precision(precision: str, device_type: str) -> str:
    """``auto`` is bf16 on a GPU and fp32 on the CPU; reduced precision on the CPU is refused."""
    if precision == "auto":
        return "bf16" if device_type == "cuda" else "fp32"
    if precision != "fp32" and device_type != "cuda":
        raise ValueError(f"deepspeed.precision: {precision!r} needs a GPU; this run is on the CPU (use auto or fp32)")
    return precision


def deepspeed_config(cfg, world_size: int, precision: str) -> dict:
    """Batch sizes, ZeRO stage, fp16 loss scaling, clipping. bf16 runs as torch autocast around the forward
    (weights and optimizer state stay fp32), so DeepSpeed's own bf16 mode is not used."""
    ds = {
        "train_micro_batch_size_per_gpu": cfg.data.batch_size,
        "gradient_accumulation_steps": cfg.deepspeed.grad_accum,
        "train_batch_size": cfg.data.batch_size * cfg.deepspeed.grad_accum * world_size,
        "zero_optimization": {"stage": cfg.deepspeed.zero_stage},
        "zero_allow_untested_optimizer": True,
        "gradient_clipping": cfg.optim.grad_clip,
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }
    if precision == "fp16":
        ds["fp16"] = {"enabled": True, "loss_scale": 0, "initial_scale_power": 16}
    return ds
