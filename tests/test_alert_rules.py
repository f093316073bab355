"""Alert and recording rules: promtool check + unit tests, one unit test per alert, the
PrometheusRule identical to the plain rules file, metric names that the exporter really exports."""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from distsnn.telemetry.metrics import CATALOGUE

MON = Path(__file__).resolve().parents[1] / "k8s" / "monitoring"
RULES = MON / "distsnn-rules.yaml"
UNIT = MON / "distsnn-rules.test.yaml"
ALERTS = {"DistsnnTrainingStalled", "DistsnnRankMissing", "DistsnnNonFiniteSteps", "DistsnnDataWaitHigh",
          "DistsnnLossDiverging", "DistsnnCheckpointTooOld", "DistsnnLIFNotCompiled"}


def _promtool(*args: str) -> subprocess.CompletedProcess:
    if shutil.which("promtool") is None:
        pytest.fail("`promtool` is missing: run `make system-deps` (Debian package prometheus)")
    return subprocess.run(["promtool", *args], capture_output=True, text=True, cwd=MON)


def _rules(path: Path) -> list[dict]:
    return [r for g in yaml.safe_load(path.read_text())["groups"] for r in g["rules"]]


def test_promtool_check_rules():
    res = _promtool("check", "rules", RULES.name)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "SUCCESS: 14 rules found" in res.stdout


def test_promtool_unit_tests_pass():
    res = _promtool("test", "rules", UNIT.name)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "SUCCESS" in res.stdout


def test_promtool_unit_tests_can_fail(tmp_path):
    # The unit tests see the thresholds: raising the stall threshold to 1 day must break them.
    (tmp_path / RULES.name).write_text(RULES.read_text().replace("distsnn:step_age:seconds > 1200",
                                                                 "distsnn:step_age:seconds > 86400"))
    (tmp_path / UNIT.name).write_text(UNIT.read_text())
    res = subprocess.run(["promtool", "test", "rules", UNIT.name], capture_output=True, text=True, cwd=tmp_path)
    assert res.returncode != 0 and "DistsnnTrainingStalled" in res.stdout + res.stderr


def test_the_required_alerts_exist_and_each_has_firing_and_quiet_unit_tests():
    alerts = {r["alert"] for r in _rules(RULES) if "alert" in r}
    assert alerts == ALERTS
    cases = [c for t in yaml.safe_load(UNIT.read_text())["tests"] for c in t.get("alert_rule_test", [])]
    for name in ALERTS:
        mine = [c for c in cases if c["alertname"] == name]
        assert any(c["exp_alerts"] for c in mine), f"{name}: no test where it fires"
        assert any(not c["exp_alerts"] for c in mine), f"{name}: no test where it stays quiet"


def test_prometheusrule_carries_the_same_groups():
    cr = yaml.safe_load((MON / "prometheusrule.yaml").read_text())
    assert cr["apiVersion"] == "monitoring.coreos.com/v1" and cr["kind"] == "PrometheusRule"
    assert cr["spec"] == yaml.safe_load(RULES.read_text())


def test_rules_only_use_exported_metrics():
    exported = {s.name for s in CATALOGUE}
    recorded = {r["record"] for r in _rules(RULES) if "record" in r}
    for r in _rules(RULES):
        for name in re.findall(r"\b(distsnn[:_][A-Za-z0-9_:]+)", r["expr"]):
            assert name in exported | recorded, f"{r.get('alert') or r.get('record')}: unknown series {name}"
