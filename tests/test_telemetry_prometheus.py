"""A real Prometheus server (Debian's ``prometheus``) scrapes two real exporter processes; every
PromQL expression of the Grafana dashboard and of the rules is evaluated through its HTTP API and
must return data, alerts whose conditions the ranks create become active, and killing a rank
raises DistsnnRankMissing."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
import yaml
from prometheus_helpers import _get, _query, _wait, start_prometheus

REPO = Path(__file__).resolve().parents[1]
MON = REPO / "k8s" / "monitoring"
RUN = "e2e-run"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    if shutil.which("prometheus") is None:
        pytest.fail("the `prometheus` binary is missing: run `make system-deps` (Debian package prometheus)")
    tmp = tmp_path_factory.mktemp("prom")
    ranks, urls = [], []
    for rank in range(2):
        p = subprocess.Popen([sys.executable, str(REPO / "tests" / "telemetry_rank_process.py"), RUN, str(rank), "2"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
        ranks.append(p)
        urls.append(p.stdout.readline().strip())
    assert all(u.startswith("http://127.0.0.1:") and u.endswith("/metrics") for u in urls), urls
    targets = [urllib.parse.urlparse(u).netloc for u in urls]
    prom, base = start_prometheus(tmp, targets)
    yield {"base": base, "ranks": ranks, "urls": urls}
    prom.terminate()
    for p in ranks:
        p.terminate()
    for p in [prom, *ranks]:
        p.wait(timeout=30)


def _dashboard_exprs() -> list[str]:
    dash = json.loads((MON / "distsnn-dashboard.json").read_text())
    return [t["expr"] for p in dash["panels"] for t in p["targets"]]


def _grafana_to_promql(expr: str) -> str:
    # What Grafana substitutes before it sends the query.
    return expr.replace("$run", RUN).replace("$__rate_interval", "10s").replace("$pod_regex", ".*")


def test_each_rank_exposition_passes_promtool(stack):
    for url in stack["urls"]:
        text = urllib.request.urlopen(url, timeout=5).read()
        res = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True)
        assert res.returncode == 0, res.stdout + res.stderr
        assert f'run="{RUN}"'.encode() in text


def test_every_dashboard_expression_returns_data(stack):
    base = stack["base"]
    exprs = _dashboard_exprs()
    assert len(exprs) >= 20
    gpu = [e for e in exprs if "DCGM_" in e]
    # DCGM metrics exist only where NVIDIA's dcgm-exporter runs: here the query must parse (a
    # syntax error makes the API answer 400), data cannot exist.
    assert len(gpu) == 1
    for e in gpu:
        _query(base, _grafana_to_promql(e))
    for e in exprs:
        if e not in gpu:
            q = _grafana_to_promql(e)
            _wait(f"data for dashboard query {q!r}", lambda: _query(base, q))
    # The run variable: label_values(distsnn_heartbeat_timestamp_seconds, run) lists the run.
    dash = json.loads((MON / "distsnn-dashboard.json").read_text())
    var = next(v for v in dash["templating"]["list"] if v["name"] == "run")
    metric, label = re.fullmatch(r"label_values\((\w+), (\w+)\)", var["definition"]).groups()
    assert RUN in _get(base, f"/api/v1/label/{label}/values", **{"match[]": metric})


def test_every_rule_expression_returns_data_and_alerts_trigger(stack):
    base = stack["base"]
    groups = yaml.safe_load((MON / "distsnn-rules.yaml").read_text())["groups"]
    rules = [r for g in groups for r in g["rules"]]
    for r in rules:
        expr = r["expr"]
        if "alert" in r:
            # An alert is "<recorded signal> > threshold": its signal must have data; whether the
            # threshold holds is what the promtool unit tests decide.
            expr, n = re.subn(r"\s*[<>]=?\s*[0-9.e+]+\s*$", "", expr)
            assert n == 1, f"alert {r['alert']}: expected '<signal> > <threshold>', got {r['expr']!r}"
        _wait(f"data for rule expression {expr!r}", lambda: _query(base, expr))

    def active():
        return {a["labels"]["alertname"] for a in _get(base, "/api/v1/alerts")["alerts"]}
    expected = {"DistsnnNonFiniteSteps", "DistsnnDataWaitHigh", "DistsnnLossDiverging", "DistsnnCheckpointTooOld",
                "DistsnnLIFNotCompiled"}
    _wait(f"alerts {expected} pending or firing", lambda: expected <= active())
    assert not {"DistsnnTrainingStalled", "DistsnnRankMissing"} & active()


def test_killing_a_rank_raises_rank_missing(stack):
    # Runs after the queries above (file order): rank 1 disappears, its series go stale.
    victim = stack["ranks"][1]
    victim.kill()
    victim.wait(timeout=10)
    missing = _wait("distsnn:ranks_missing:count = 1",
                    lambda: [s for s in _query(stack["base"], "distsnn:ranks_missing:count") if s["value"][1] == "1"])
    assert missing[0]["metric"]["run"] == RUN

    def rank_missing_active():
        return [a for a in _get(stack["base"], "/api/v1/alerts")["alerts"]
                if a["labels"]["alertname"] == "DistsnnRankMissing"]
    alert = _wait("DistsnnRankMissing pending", rank_missing_active)
    assert alert[0]["labels"]["run"] == RUN
