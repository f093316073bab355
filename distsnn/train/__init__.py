"""The trainer: DeepSpeed engine, anytime evaluation, checkpoints, faults. Entry point: ``main``."""
from .main import main

__all__ = ["main"]
