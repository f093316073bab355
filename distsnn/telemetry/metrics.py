"""The metric catalogue: every series a rank exports, its type, unit and labels.

Names follow the Prometheus conventions: the ``distsnn_`` prefix, base units in the name
(``_seconds``, ``_bytes``, ``_ratio``), ``_total`` for counters only. Every series carries the
labels ``run``, ``rank`` and ``method``; a few add one more low-cardinality label:
``component`` (a loss term, ~15 values), ``layer`` (stage1..stage4, pooled) or ``t`` (1..T).
The alert rules and the dashboard in ``k8s/monitoring/`` query exactly these names.
"""
from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge

BASE_LABELS = ("run", "rank", "method")


@dataclass(frozen=True)
class MetricSpec:
    name: str
    kind: type  # Gauge or Counter
    help: str
    extra_label: str | None = None


CATALOGUE = (
    MetricSpec("distsnn_loss", Gauge, "loss component (loss naming: total, ce, tet, tcl.<layer>, nce.<layer>, ...)", "component"),
    MetricSpec("distsnn_cka", Gauge, "CKA between student and teacher features of a layer (SSCL Eq.9)", "layer"),
    MetricSpec("distsnn_cka_lambda", Gauge, "layer weight lambda_l = 1/CKA_l (SSCL Eq.20)", "layer"),
    MetricSpec("distsnn_firing_rate_ratio", Gauge, "mean spikes per neuron per time step of a layer", "layer"),
    MetricSpec("distsnn_learning_rate", Gauge, "current learning rate"),
    MetricSpec("distsnn_images_per_second", Gauge, "training throughput of this rank"),
    MetricSpec("distsnn_step_duration_seconds", Gauge, "duration of the last optimizer step (mean since the last update)"),
    MetricSpec("distsnn_data_wait_duration_seconds", Gauge, "part of the last step spent waiting for data"),
    MetricSpec("distsnn_step_seconds_total", Counter, "accumulated step time (steps x mean step time)"),
    MetricSpec("distsnn_data_wait_seconds_total", Counter, "accumulated time waiting for data"),
    MetricSpec("distsnn_device_memory_max_allocated_bytes", Gauge, "peak device memory allocated by torch on this rank"),
    MetricSpec("distsnn_host_memory_rss_bytes", Gauge, "resident host memory of this rank's process"),
    MetricSpec("distsnn_train_epoch", Gauge, "current epoch (0-based)"),
    MetricSpec("distsnn_train_step", Gauge, "current global optimizer step"),
    MetricSpec("distsnn_train_total_steps", Gauge, "optimizer steps of the whole run"),
    MetricSpec("distsnn_eta_seconds", Gauge, "estimated time to the end of the run"),
    MetricSpec("distsnn_last_step_timestamp_seconds", Gauge, "unix time of the last step update"),
    MetricSpec("distsnn_eval_epoch", Gauge, "epoch of the last anytime evaluation"),
    MetricSpec("distsnn_eval_top1_ratio", Gauge, "top-1 accuracy at inference step t (last evaluation)", "t"),
    MetricSpec("distsnn_eval_top5_ratio", Gauge, "top-5 accuracy at inference step t (last evaluation)", "t"),
    MetricSpec("distsnn_skipped_steps_total", Counter, "optimizer steps skipped because the loss was non-finite"),
    MetricSpec("distsnn_checkpoint_duration_seconds", Gauge, "duration of the last checkpoint save"),
    MetricSpec("distsnn_checkpoint_timestamp_seconds", Gauge, "unix time of the last complete checkpoint (start time until the first)"),
    MetricSpec("distsnn_checkpoints_total", Counter, "complete checkpoints written"),
    MetricSpec("distsnn_heartbeat_timestamp_seconds", Gauge, "unix time of the last heartbeat of the training loop"),
    MetricSpec("distsnn_world_size", Gauge, "number of ranks the run expects"),
    MetricSpec("distsnn_lif_compiled", Gauge, "1 = the fused LIF kernels run compiled; 0 = eager fallback (~6x slower: no C compiler, or DISTSNN_LIF_COMPILE=0); absent when no fused LIF runs"),
)


def build(registry: CollectorRegistry) -> dict:
    """Register the catalogue on ``registry``; returns ``{name: metric}``.

    prometheus-client appends ``_total`` to counters itself, so the constructor gets the stem.
    """
    out = {}
    for spec in CATALOGUE:
        labels = BASE_LABELS + ((spec.extra_label,) if spec.extra_label else ())
        stem = spec.name.removesuffix("_total") if spec.kind is Counter else spec.name
        out[spec.name] = spec.kind(stem, spec.help, labels, registry=registry)
    return out
