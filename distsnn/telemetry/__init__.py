"""Prometheus telemetry: ``Telemetry`` (one exporter per rank) and the metric catalogue."""
from .exporter import MetricsPortError, Telemetry

__all__ = ["MetricsPortError", "Telemetry"]
