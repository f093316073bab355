"""From a finished run to deployment: NIR for neuromorphic hardware, ONNX for inference servers (docs/EXPORT.md)."""
from .run_model import ExportError, RunModel, load_run

__all__ = ["ExportError", "RunModel", "load_run"]
