"""Per-rank Prometheus exporter: ``Telemetry`` serves ``/metrics`` and takes host-side values.

Every rank serves its own endpoint on ``telemetry.bind_address:telemetry.base_port + local_rank``
(loopback by default; the pod IP in Kubernetes). Nothing here touches a device tensor: the trainer
hands in Python floats it already has on the host (its ``.item()`` of the logged step), and calls
``update_step`` every ``telemetry.update_every_steps`` steps (``should_update(step)``), so export
never adds a device sync to a step. Memory is read here from host-side counters only
(``psutil`` RSS, ``torch.cuda.max_memory_allocated``, which does not synchronise).
"""
from __future__ import annotations

import errno
import math
import os
import socket
import sys
import time

import psutil
from prometheus_client import CollectorRegistry, start_http_server

from . import metrics as catalogue

_SPLIT_LABEL = {"cka": "distsnn_cka", "lambda": "distsnn_cka_lambda"}


class MetricsPortError(RuntimeError):
    """The metrics endpoint could not be opened (port in use, address not available)."""


class Telemetry:
    """One rank's exporter. With ``cfg.enabled = False`` every method is a no-op and ``url`` is None.

    Args: ``cfg`` a ``TelemetryConfig``; ``run``/``method`` the run and method names (labels);
    ``rank`` the global rank (label); ``local_rank`` picks the port ``base_port + local_rank``;
    ``world_size`` the expected number of ranks (default: env ``WORLD_SIZE`` or 1), exported so
    that an alert can tell when a rank is missing.
    """

    def __init__(self, cfg, *, run: str, method: str, rank: int = 0, local_rank: int = 0,
                 world_size: int | None = None):
        self.cfg = cfg
        self.url: str | None = None
        self._server = None
        self._last_step: int | None = None
        if not cfg.enabled:
            print(f"[telemetry] rank {rank}: metrics are DISABLED (telemetry.enabled = false); "
                  "no /metrics endpoint is served", file=sys.stderr, flush=True)
            return
        self.registry = CollectorRegistry()
        self._m = catalogue.build(self.registry)
        self._base = (str(run), str(rank), str(method))
        self._process = psutil.Process()
        if world_size is None:
            world_size = int(os.environ.get("WORLD_SIZE", "1"))
        self._set("distsnn_world_size", world_size)
        self._set("distsnn_checkpoint_timestamp_seconds", time.time())
        # Counters appear at 0 from the start so that rate()/increase() see the first increment.
        for name in ("distsnn_skipped_steps_total", "distsnn_checkpoints_total",
                     "distsnn_step_seconds_total", "distsnn_data_wait_seconds_total"):
            self._m[name].labels(*self._base).inc(0)
        self.heartbeat()
        self._serve(cfg.bind_address, cfg.base_port, local_rank, rank)

    # -- server --------------------------------------------------------------------------------
    def _serve(self, address: str, base_port: int, local_rank: int, rank: int) -> None:
        port = 0 if base_port == 0 else base_port + local_rank
        if port > 65535:
            raise MetricsPortError(f"telemetry.base_port {base_port} + local_rank {local_rank} = {port} "
                                   "is above 65535")
        try:
            self._server, _ = start_http_server(port, addr=address, registry=self.registry)
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                raise MetricsPortError(
                    f"metrics port {port} on {address} is already in use (telemetry.base_port {base_port} "
                    f"+ local_rank {local_rank}); stop the other process or choose another "
                    "telemetry.base_port (0 = any free port)") from e
            raise MetricsPortError(f"cannot serve metrics on {address}:{port} (telemetry.bind_address / "
                                   f"telemetry.base_port): {e}") from e
        bound = self._server.server_address[1]
        host = address if address not in ("0.0.0.0", "::", "") else socket.gethostname()
        if ":" in host:
            host = f"[{host}]"
        self.url = f"http://{host}:{bound}/metrics"
        print(f"[telemetry] rank {rank}: metrics served at {self.url}", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    # -- updates ----------------------------------------------------------------------------------
    @property
    def enabled(self) -> bool:
        return self.cfg.enabled

    def should_update(self, step: int) -> bool:
        """True on the steps where the trainer should fetch its values and call ``update_step``."""
        return self.cfg.enabled and step % self.cfg.update_every_steps == 0

    def _set(self, name: str, value: float, extra: str | None = None) -> None:
        labels = self._base if extra is None else self._base + (extra,)
        self._m[name].labels(*labels).set(float(value))

    def update_step(self, *, step: int, epoch: int, total_steps: int, components: dict, lr: float,
                    images_per_s: float, step_time_s: float, data_wait_s: float, eta_s: float) -> None:
        """Publish one step's host-side values.

        ``components``: loss naming (``total``, ``ce``, ``tcl.<layer>``, ``nce.<layer>``, ...) go to
        ``distsnn_loss{component}``; ``cka.<layer>`` / ``lambda.<layer>`` to the per-layer gauges.
        ``step_time_s`` / ``data_wait_s`` are per-step times (the mean since the last call, or the
        last step's); the ``*_seconds_total`` counters add them times the steps since the last call.
        """
        if not self.cfg.enabled:
            return
        for key, value in components.items():
            head, _, layer = key.partition(".")
            if head in _SPLIT_LABEL and layer:
                self._set(_SPLIT_LABEL[head], value, layer)
            else:
                self._set("distsnn_loss", value, key)
        steps = 1 if self._last_step is None else max(step - self._last_step, 1)
        self._last_step = step
        self._set("distsnn_learning_rate", lr)
        self._set("distsnn_images_per_second", images_per_s)
        self._set("distsnn_step_duration_seconds", step_time_s)
        self._set("distsnn_data_wait_duration_seconds", data_wait_s)
        if math.isfinite(step_time_s) and math.isfinite(data_wait_s) and step_time_s >= 0 and data_wait_s >= 0:
            self._m["distsnn_step_seconds_total"].labels(*self._base).inc(steps * step_time_s)
            self._m["distsnn_data_wait_seconds_total"].labels(*self._base).inc(steps * data_wait_s)
        self._set("distsnn_train_step", step)
        self._set("distsnn_train_epoch", epoch)
        self._set("distsnn_train_total_steps", total_steps)
        self._set("distsnn_eta_seconds", eta_s)
        self._set("distsnn_last_step_timestamp_seconds", time.time())
        self._read_memory()
        self.heartbeat()

    def _read_memory(self) -> None:
        self._set("distsnn_host_memory_rss_bytes", self._process.memory_info().rss)
        torch = sys.modules.get("torch")  # never import torch just for this
        if torch is not None and torch.cuda.is_available():
            self._set("distsnn_device_memory_max_allocated_bytes", torch.cuda.max_memory_allocated())
        else:
            self._set("distsnn_device_memory_max_allocated_bytes", 0)

    def update_lif_compiled(self, compiled: bool | None) -> None:
        """``distsnn_lif_compiled``: 1 compiled, 0 eager fallback; None (no fused LIF ran) leaves it unset."""
        if self.cfg.enabled and compiled is not None:
            self._set("distsnn_lif_compiled", 1.0 if compiled else 0.0)

    def count_skipped_step(self) -> None:
        if self.cfg.enabled:
            self._m["distsnn_skipped_steps_total"].labels(*self._base).inc()

    def update_firing_rates(self, rates: dict) -> None:
        """``rates``: layer -> mean spikes per neuron per time step."""
        if self.cfg.enabled:
            for layer, value in rates.items():
                self._set("distsnn_firing_rate_ratio", value, layer)

    def update_eval(self, *, epoch: int, top1: list, top5: list) -> None:
        """``top1[t-1]`` / ``top5[t-1]``: accuracy in % at inference step t; exported as ratios."""
        if not self.cfg.enabled:
            return
        self._set("distsnn_eval_epoch", epoch)
        for name, accs in (("distsnn_eval_top1_ratio", top1), ("distsnn_eval_top5_ratio", top5)):
            for t, acc in enumerate(accs, start=1):
                self._set(name, float(acc) / 100.0, str(t))

    def update_checkpoint(self, *, duration_s: float, timestamp: float) -> None:
        if not self.cfg.enabled:
            return
        self._set("distsnn_checkpoint_duration_seconds", duration_s)
        self._set("distsnn_checkpoint_timestamp_seconds", timestamp)
        self._m["distsnn_checkpoints_total"].labels(*self._base).inc()

    def heartbeat(self) -> None:
        if self.cfg.enabled:
            self._set("distsnn_heartbeat_timestamp_seconds", time.time())

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
