"""A real Prometheus server on loopback for the metrics tests, and small HTTP API helpers."""
from __future__ import annotations

import json
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
import yaml

from distsnn.launch import free_port

REPO = Path(__file__).resolve().parents[1]
MON = REPO / "k8s" / "monitoring"


def _get(base: str, path: str, **params) -> dict:
    url = f"{base}{path}?{urllib.parse.urlencode(params, doseq=True)}"
    with urllib.request.urlopen(url, timeout=10) as r:
        body = json.load(r)
    assert body["status"] == "success", body
    return body["data"]


def _query(base: str, expr: str) -> list:
    return _get(base, "/api/v1/query", query=expr)["result"]


def _wait(what: str, fn, timeout: float = 45.0):
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.5)


def start_prometheus(tmp: Path, targets: list[str]):
    """Prometheus scraping ``targets`` (host:port) every second with the project's rules; -> (process, base URL)."""
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(MON / "distsnn-rules.yaml")],
        "scrape_configs": [{"job_name": "distsnn", "static_configs": [{"targets": targets}]}],
    }
    (tmp / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    prom = subprocess.Popen(["prometheus", f"--config.file={tmp / 'prometheus.yml'}",
                             f"--storage.tsdb.path={tmp / 'data'}", f"--web.listen-address=127.0.0.1:{port}"],
                            stdout=subprocess.DEVNULL, stderr=open(tmp / "prometheus.log", "w"))
    base = f"http://127.0.0.1:{port}"

    def ready():
        try:
            return urllib.request.urlopen(f"{base}/-/ready", timeout=2).status == 200
        except OSError:
            return prom.poll() is not None and pytest.fail((tmp / "prometheus.log").read_text()[-3000:])
    _wait("prometheus ready", ready)
    return prom, base
