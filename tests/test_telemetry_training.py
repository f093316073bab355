"""A real Prometheus server scrapes a short real 2-rank CPU training run (the `deepspeed` launcher, gloo): while
it trains, every PromQL expression of the Grafana dashboard and of the alert rules returns data, and each rank's
exposition passes `promtool check metrics`."""
from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import urllib.request

import pytest
import yaml
from prometheus_helpers import MON, _query, _wait, start_prometheus
from train_helpers import REPO, launch_env, make_teacher, tiny_overrides

pytestmark = pytest.mark.slow
RUN = "scraped"


def _free_port_pair() -> int:
    """A base port p with p and p + 1 free (rank r serves on base_port + local_rank)."""
    for _ in range(50):
        with socket.socket() as a, socket.socket() as b:
            a.bind(("127.0.0.1", 0))
            p = a.getsockname()[1]
            try:
                b.bind(("127.0.0.1", p + 1))
            except OSError:
                continue
            return p
    raise RuntimeError("no free pair of ports")


def _expressions() -> list[str]:
    dash = json.loads((MON / "distsnn-dashboard.json").read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p["targets"] if "DCGM_" not in t["expr"]]
    exprs = [e.replace("$run", RUN).replace("$__rate_interval", "10s").replace("$pod_regex", ".*") for e in exprs]
    for r in (r for g in yaml.safe_load((MON / "distsnn-rules.yaml").read_text())["groups"] for r in g["rules"]):
        exprs.append(re.sub(r"\s*[<>]=?\s*[0-9.e+]+\s*$", "", r["expr"]) if "alert" in r else r["expr"])
    return exprs


def test_prometheus_scrapes_a_real_two_rank_training_run(tmp_path):
    port = _free_port_pair()
    prom, base = start_prometheus(tmp_path, [f"127.0.0.1:{port}", f"127.0.0.1:{port + 1}"])
    teacher = make_teacher(tmp_path / "teacher.safetensors")
    # ~4 steps per epoch and an evaluation + checkpoint after every epoch, so eval and checkpoint series
    # exist while the run is still training (a finished target's series go stale at once)
    sets = tiny_overrides(tmp_path / "runs", tmp_path / "cache", teacher) + [
        f"run.name={RUN}", "telemetry.enabled=true", f"telemetry.base_port={port}", "telemetry.update_every_steps=1",
        "data.train_fraction=0.05", "data.batch_size=8", "run.epochs=60", "run.eval_every_epochs=1",
        "checkpoint.every_epochs=1", "checkpoint.keep_last=1"]  # the fused LIF: distsnn_lif_compiled is exported
    cmd = ["deepspeed", "--num_gpus", "2", "launchers/train.py", "--config", "demo_sscl.yaml"]
    for s in sets:
        cmd += ["--set", s]
    log = open(tmp_path / "train.log", "w")
    proc = subprocess.Popen(cmd, cwd=REPO, env=launch_env(), stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        def alive_query(q):
            if proc.poll() is not None:
                pytest.fail(f"training ended (exit {proc.returncode}) before {q!r} had data:\n"
                            + (tmp_path / "train.log").read_text()[-3000:])
            return _query(base, q)
        _wait("both ranks training", lambda: len(alive_query("distsnn_train_step > 0")) == 2, timeout=300)
        _wait("an evaluation", lambda: alive_query("distsnn_eval_top1_ratio"), timeout=300)
        for q in _expressions():
            _wait(f"data for {q!r}", lambda: alive_query(q), timeout=60)
        ranks = {s["metric"]["rank"] for s in alive_query('distsnn_loss{component="nce.stage1"}')}
        assert ranks == {"0", "1"}, ranks
        for p in (port, port + 1):
            text = urllib.request.urlopen(f"http://127.0.0.1:{p}/metrics", timeout=5).read()
            res = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True)
            assert res.returncode == 0, res.stdout + res.stderr
            assert f'run="{RUN}"'.encode() in text and b'distsnn_cka{' in text
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
        prom.terminate()
        prom.wait(timeout=30)
        log.close()
