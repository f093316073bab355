"""The exporter served over real HTTP: names, labels, values, counters, port errors, disabled mode."""
from __future__ import annotations

import socket
import subprocess
import sys
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from distsnn.config.schema import TelemetryConfig
from distsnn.telemetry import MetricsPortError, Telemetry
from distsnn.telemetry.metrics import CATALOGUE


def _scrape(url: str) -> dict:
    """{(name, frozenset(labels)): value} of one exposition."""
    text = urllib.request.urlopen(url, timeout=5).read().decode()
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def _lab(rank="3", **extra):
    return frozenset({"run": "r1", "rank": rank, "method": "sscl", **extra}.items())


@pytest.fixture
def tel():
    t = Telemetry(TelemetryConfig(base_port=0), run="r1", method="sscl", rank=3, local_rank=0, world_size=4)
    yield t
    t.close()


def test_step_values_reach_the_exposition(tel):
    comps = {"total": 2.5, "ce": 1.5, "tet": 1.25, "ce.view1": 1.4, "tcl": 0.7, "tcl.stage2": 0.3, "nce": 0.9,
             "nce.pooled": 0.45, "cka.stage1": 0.6, "cka.pooled": 0.8, "lambda.stage1": 1 / 0.6, "lambda.pooled": 1.25}
    tel.update_step(step=10, epoch=1, total_steps=500, components=comps, lr=0.05, images_per_s=123.0,
                    step_time_s=0.5, data_wait_s=0.125, eta_s=245.0)
    m = _scrape(tel.url)
    for key in ("total", "ce", "tet", "ce.view1", "tcl", "tcl.stage2", "nce", "nce.pooled"):
        assert m[("distsnn_loss", _lab(component=key))] == comps[key]
    assert m[("distsnn_cka", _lab(layer="stage1"))] == 0.6
    assert m[("distsnn_cka", _lab(layer="pooled"))] == 0.8
    assert m[("distsnn_cka_lambda", _lab(layer="pooled"))] == 1.25
    # cka.* / lambda.* are per-layer gauges, not loss components
    assert not any(n == "distsnn_loss" and dict(l)["component"].startswith(("cka", "lambda")) for n, l in m)
    expect = {"distsnn_learning_rate": 0.05, "distsnn_images_per_second": 123.0, "distsnn_step_duration_seconds": 0.5,
              "distsnn_data_wait_duration_seconds": 0.125, "distsnn_train_step": 10, "distsnn_train_epoch": 1,
              "distsnn_train_total_steps": 500, "distsnn_eta_seconds": 245.0, "distsnn_world_size": 4,
              "distsnn_step_seconds_total": 0.5, "distsnn_data_wait_seconds_total": 0.125,
              "distsnn_skipped_steps_total": 0, "distsnn_checkpoints_total": 0}
    for name, value in expect.items():
        assert m[(name, _lab())] == value, name
    assert m[("distsnn_host_memory_rss_bytes", _lab())] > 1e6
    assert m[("distsnn_device_memory_max_allocated_bytes", _lab())] == 0  # no GPU here
    assert m[("distsnn_heartbeat_timestamp_seconds", _lab())] >= m[("distsnn_last_step_timestamp_seconds", _lab())]


def test_counters_accumulate_steps_times_step_time(tel):
    base = dict(epoch=0, total_steps=100, components={"total": 1.0}, lr=0.1, images_per_s=1.0, eta_s=1.0)
    tel.update_step(step=10, step_time_s=0.5, data_wait_s=0.1, **base)   # first call: one step
    tel.update_step(step=20, step_time_s=0.25, data_wait_s=0.05, **base)  # 10 steps at the mean times
    tel.count_skipped_step()
    tel.count_skipped_step()
    m = _scrape(tel.url)
    assert m[("distsnn_step_seconds_total", _lab())] == pytest.approx(0.5 + 10 * 0.25)
    assert m[("distsnn_data_wait_seconds_total", _lab())] == pytest.approx(0.1 + 10 * 0.05)
    assert m[("distsnn_skipped_steps_total", _lab())] == 2


def test_eval_firing_rates_checkpoint(tel):
    tel.update_eval(epoch=2, top1=[10.0, 30.0, 45.0, 50.0], top5=[40.0, 60.0, 70.0, 75.0])
    tel.update_firing_rates({"stage1": 0.12, "stage4": 0.03})
    tel.update_checkpoint(duration_s=4.5, timestamp=1_700_000_000.0)
    m = _scrape(tel.url)
    for t, (a1, a5) in enumerate(zip([10.0, 30.0, 45.0, 50.0], [40.0, 60.0, 70.0, 75.0]), start=1):
        assert m[("distsnn_eval_top1_ratio", _lab(t=str(t)))] == pytest.approx(a1 / 100)
        assert m[("distsnn_eval_top5_ratio", _lab(t=str(t)))] == pytest.approx(a5 / 100)
    assert m[("distsnn_eval_epoch", _lab())] == 2
    assert m[("distsnn_firing_rate_ratio", _lab(layer="stage1"))] == 0.12
    assert m[("distsnn_firing_rate_ratio", _lab(layer="stage4"))] == 0.03
    assert m[("distsnn_checkpoint_duration_seconds", _lab())] == 4.5
    assert m[("distsnn_checkpoint_timestamp_seconds", _lab())] == 1_700_000_000.0
    assert m[("distsnn_checkpoints_total", _lab())] == 1


def test_exposition_passes_promtool_and_names_follow_conventions(tel):
    tel.update_step(step=1, epoch=0, total_steps=10, components={"total": 1.0, "cka.stage1": 0.5}, lr=0.1,
                    images_per_s=1.0, step_time_s=0.1, data_wait_s=0.0, eta_s=1.0)
    text = urllib.request.urlopen(tel.url, timeout=5).read()
    res = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True)
    assert res.returncode == 0 and not res.stdout.strip() and not res.stderr.strip(), res
    for spec in CATALOGUE:
        assert spec.name.startswith("distsnn_")
        assert spec.name.endswith("_total") == (spec.kind.__name__ == "Counter"), spec.name


def test_port_is_base_plus_local_rank_and_in_use_is_named():
    with socket.socket() as s:  # find two adjacent free ports
        s.bind(("127.0.0.1", 0))
        base = s.getsockname()[1] - 1
    t = Telemetry(TelemetryConfig(base_port=base), run="r", method="tcl", rank=1, local_rank=1)
    try:
        assert t.url == f"http://127.0.0.1:{base + 1}/metrics"
        with pytest.raises(MetricsPortError, match=rf"port {base + 1} .*in use.*telemetry.base_port {base}"):
            Telemetry(TelemetryConfig(base_port=base), run="r", method="tcl", rank=5, local_rank=1)
    finally:
        t.close()


def test_bad_bind_address_names_the_key():
    with pytest.raises(MetricsPortError, match="telemetry.bind_address"):
        Telemetry(TelemetryConfig(base_port=0, bind_address="192.0.2.123"), run="r", method="m")


def test_disabled_is_a_stated_no_op(capsys):
    t = Telemetry(TelemetryConfig(enabled=False), run="r", method="m", rank=0, local_rank=0)
    assert t.url is None
    assert "metrics are DISABLED" in capsys.readouterr().err
    t.update_step(step=1, epoch=0, total_steps=1, components={"total": 1.0}, lr=0.1, images_per_s=1.0,
                  step_time_s=0.1, data_wait_s=0.0, eta_s=0.0)
    t.count_skipped_step()
    t.update_firing_rates({"stage1": 0.1})
    t.update_eval(epoch=0, top1=[1.0], top5=[2.0])
    t.update_checkpoint(duration_s=1.0, timestamp=0.0)
    t.heartbeat()
    t.close()
    assert not t.should_update(10)


def test_enabled_states_where_metrics_are_served(capsys, tel):
    assert f"metrics served at {tel.url}" in capsys.readouterr().err
    assert tel.should_update(20) and not tel.should_update(21)  # update_every_steps = 10


def test_exporter_does_not_import_torch():
    # Reading device memory must not pull torch (and CUDA init) into a process that has none.
    code = ("import sys; from distsnn.config.schema import TelemetryConfig; from distsnn.telemetry import Telemetry;"
            "t = Telemetry(TelemetryConfig(base_port=0), run='r', method='m');"
            "t.update_step(step=1, epoch=0, total_steps=1, components={}, lr=0.1, images_per_s=1.0,"
            " step_time_s=0.1, data_wait_s=0.0, eta_s=0.0); t.close(); print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
