"""Kubernetes manifests rendered offline by `kubectl kustomize`: core objects pass
kubernetes-validate (strict) for a pinned Kubernetes version; the JobSet's inner Job is validated
as a batch/v1 Job, JobSet / PodMonitor / PrometheusRule fields are checked structurally; the
security settings hold on every pod template; the training pod wiring is consistent."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml

from distsnn.config import load

REPO = Path(__file__).resolve().parents[1]
K8S = REPO / "k8s"
K8S_VERSION = "1.32.0"  # pinned: the kubectl here is 1.32; kubernetes-validate ships 1.25-1.37
DIRS = ("base", "overlays/jobset", "overlays/make-shards", "monitoring")
CRDS = {("jobset.x-k8s.io/v1alpha2", "JobSet"), ("monitoring.coreos.com/v1", "PodMonitor"),
        ("monitoring.coreos.com/v1", "PrometheusRule")}


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict]]:
    if shutil.which("kubectl") is None:
        pytest.fail("kubectl is missing (needed offline for `kubectl kustomize`)")
    out = {}
    for d in DIRS:
        res = subprocess.run(["kubectl", "kustomize", str(K8S / d)], capture_output=True, text=True, timeout=60)
        assert res.returncode == 0, f"kubectl kustomize {d}: {res.stderr}"
        out[d] = [doc for doc in yaml.safe_load_all(res.stdout) if doc]
    return out


def _one(docs, kind, name=None):
    found = [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    assert len(found) == 1, f"expected one {kind} {name or ''}, got {len(found)}"
    return found[0]


def _job_specs(docs) -> list[tuple[str, dict]]:
    """(label, batch/v1 JobSpec) of every Job, including the Jobs inside a JobSet."""
    specs = [(d["metadata"]["name"], d["spec"]) for d in docs if d["kind"] == "Job"]
    for d in docs:
        if d["kind"] == "JobSet":
            specs += [(f"{d['metadata']['name']}/{rj['name']}", rj["template"]["spec"]) for rj in d["spec"]["replicatedJobs"]]
    return specs


@pytest.mark.parametrize("d", DIRS)
def test_core_objects_validate_strictly(rendered, d):
    kinds = set()
    for doc in rendered[d]:
        kinds.add(doc["kind"])
        if (doc["apiVersion"], doc["kind"]) in CRDS:
            continue
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)  # raises with the failing path
    assert kinds


def test_validation_catches_a_bad_field(rendered):
    job = yaml.safe_load(yaml.safe_dump(_one(rendered["base"], "Job")))
    job["spec"]["template"]["spec"]["containers"][0]["securityContext"]["readOnlyRootFS"] = True  # typo
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(job, K8S_VERSION, strict=True)


def test_jobset_inner_job_validates_and_jobset_fields_are_known(rendered):
    js = _one(rendered["overlays/jobset"], "JobSet")
    for rj in js["spec"]["replicatedJobs"]:
        as_job = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": rj["name"]}, "spec": rj["template"]["spec"]}
        kubernetes_validate.validate(as_job, K8S_VERSION, strict=True)
    # The JobSet v1alpha2 fields this overlay uses (from the JobSet API reference).
    schema = {
        "type": "object", "required": ["replicatedJobs"], "additionalProperties": False,
        "properties": {
            "network": {"type": "object", "additionalProperties": False,
                        "properties": {"enableDNSHostnames": {"type": "boolean"}, "subdomain": {"type": "string"},
                                       "publishNotReadyAddresses": {"type": "boolean"}}},
            "failurePolicy": {"type": "object", "additionalProperties": False, "properties": {
                "maxRestarts": {"type": "integer", "minimum": 0},
                "restartStrategy": {"enum": ["Recreate", "BlockingRecreate"]},
                "rules": {"type": "array", "items": {"type": "object", "required": ["name", "action"],
                          "additionalProperties": False, "properties": {
                              "name": {"type": "string"},
                              "action": {"enum": ["FailJobSet", "RestartJobSet", "RestartJobSetAndIgnoreMaxRestarts"]},
                              "onJobFailureReasons": {"type": "array", "items": {
                                  "enum": ["BackoffLimitExceeded", "DeadlineExceeded", "PodFailurePolicy",
                                           "MaxFailedIndexesExceeded", "FailedIndexes"]}},
                              "targetReplicatedJobs": {"type": "array", "items": {"type": "string"}}}}}}},
            "replicatedJobs": {"type": "array", "minItems": 1, "items": {
                "type": "object", "required": ["name", "template"], "additionalProperties": False,
                "properties": {"name": {"type": "string"}, "replicas": {"type": "integer", "minimum": 1},
                               "template": {"type": "object"}}}},
        },
    }
    jsonschema.validate(js["spec"], schema)
    assert js["metadata"]["name"] and js["apiVersion"] == "jobset.x-k8s.io/v1alpha2"
    # the base Job and Service are replaced by the JobSet (its controller makes the Service)
    assert not [d for d in rendered["overlays/jobset"] if d["kind"] in ("Job", "Service")]


@pytest.mark.parametrize("d", ("base", "overlays/jobset", "overlays/make-shards"))
def test_every_pod_template_is_locked_down(rendered, d):
    specs = _job_specs(rendered[d])
    assert specs
    for name, spec in specs:
        pod = spec["template"]["spec"]
        assert pod["automountServiceAccountToken"] is False, name
        psc = pod["securityContext"]
        assert psc["runAsNonRoot"] is True and psc["runAsUser"] != 0, name
        assert psc["seccompProfile"] == {"type": "RuntimeDefault"}, name
        for c in pod.get("initContainers", []) + pod["containers"]:
            sc = c["securityContext"]
            assert sc["runAsNonRoot"] is True, (name, c["name"])
            assert sc["readOnlyRootFilesystem"] is True, (name, c["name"])
            assert sc["allowPrivilegeEscalation"] is False, (name, c["name"])
            assert sc["capabilities"] == {"drop": ["ALL"]}, (name, c["name"])
            assert sc["seccompProfile"] == {"type": "RuntimeDefault"}, (name, c["name"])
            assert "privileged" not in sc
            # the read-only root needs a writable /tmp
            assert any(m["mountPath"] == "/tmp" for m in c["volumeMounts"]), (name, c["name"])


def _env(container) -> dict:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


@pytest.mark.parametrize("d", ("base", "overlays/jobset"))
def test_training_pods_wiring(rendered, d):
    docs = rendered[d]
    [(name, spec)] = _job_specs(docs)
    pod = spec["template"]["spec"]
    [c] = pod["containers"]
    env = _env(c)
    nnodes, gpus = int(env["NNODES"]), int(env["GPUS_PER_POD"])
    # Indexed Job of NNODES pods, all at once (a rendezvous needs every rank)
    assert spec["completionMode"] == "Indexed" and spec["completions"] == spec["parallelism"] == nnodes
    assert "command" not in c  # the image's entrypoint: tini + docker/entrypoint.sh -> deepspeed
    args = c["args"]
    assert args[0].startswith("--hostfile=")
    args = args[1:]
    assert args[:6] == ["--no_ssh", "--num_nodes=$(NNODES)", "--node_rank=$(NODE_RANK)", "--master_addr=$(MASTER_ADDR)",
                        "--master_port=29500", "--num_gpus=$(GPUS_PER_POD)"]
    assert args[6] == "launchers/train.py" and args[7] == "--config"
    assert env["NODE_RANK"] == {"fieldRef": {"fieldPath": "metadata.annotations['batch.kubernetes.io/job-completion-index']"}}
    # MASTER_ADDR is pod 0's DNS name under the headless service
    if d == "base":
        svc = _one(docs, "Service")
        assert svc["spec"]["clusterIP"] == "None" and pod["subdomain"] == svc["metadata"]["name"]
        assert svc["spec"]["selector"].items() <= spec["template"]["metadata"]["labels"].items()
        job = _one(docs, "Job")["metadata"]["name"]
        assert env["MASTER_ADDR"] == f"{job}-0.{svc['metadata']['name']}"
    else:
        js = _one(docs, "JobSet")
        rj = js["spec"]["replicatedJobs"][0]["name"]
        assert env["MASTER_ADDR"] == f"{js['metadata']['name']}-{rj}-0-0.{js['spec']['network']['subdomain']}"
        assert js["spec"]["network"]["enableDNSHostnames"] is True
    # the DeepSpeed hostfile (a ConfigMap file): pod i's DNS name on line i, GPUS_PER_POD slots each, line 0 = master
    hostfile = Path(c["args"][0].split("=", 1)[1])
    hf_vols = {v["name"]: v for v in pod["volumes"]}
    [hf_mount] = [m for m in c["volumeMounts"] if m["mountPath"] == str(hostfile.parent)]
    hf_cm = _one(docs, "ConfigMap", hf_vols[hf_mount["name"]]["configMap"]["name"])
    hosts = [line.split() for line in hf_cm["data"][hostfile.name].splitlines() if line.strip() and not line.startswith("#")]
    if d == "base":
        names = [f"{_one(docs, 'Job')['metadata']['name']}-{i}.{pod['subdomain']}" for i in range(nnodes)]
    else:
        js = _one(docs, "JobSet")
        names = [f"{js['metadata']['name']}-{js['spec']['replicatedJobs'][0]['name']}-0-{i}.{js['spec']['network']['subdomain']}"
                 for i in range(nnodes)]
    assert hosts == [[n, f"slots={gpus}"] for n in names], hosts
    assert names[0] == env["MASTER_ADDR"]
    # grace period long enough for a checkpoint; GPUs; /dev/shm in memory
    assert pod["terminationGracePeriodSeconds"] >= 300
    assert c["resources"]["limits"]["nvidia.com/gpu"] == str(gpus)
    vols = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
    assert vols[mounts["/dev/shm"]["name"]]["emptyDir"]["medium"] == "Memory"
    assert vols[mounts["/data/shards"]["name"]]["persistentVolumeClaim"]["claimName"] == "distsnn-shards"
    assert mounts["/data/shards"]["readOnly"] is True
    assert vols[mounts["/runs"]["name"]]["persistentVolumeClaim"]["claimName"] == "distsnn-runs"
    pvcs = {p["metadata"]["name"] for p in docs if p["kind"] == "PersistentVolumeClaim"}
    assert {"distsnn-shards", "distsnn-runs"} <= pvcs
    # the run config: a ConfigMap file at the --config path, a valid distsnn config
    cfg_path = Path(args[8])
    cm_name = vols[mounts[str(cfg_path.parent)]["name"]]["configMap"]["name"]
    cm = _one(docs, "ConfigMap", cm_name)
    assert cfg_path.name in cm["data"]
    # one metrics port per local rank, base_port + local rank
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    metrics = sorted(v for k, v in ports.items() if k.startswith("metrics-"))
    base_port = yaml.safe_load(cm["data"][cfg_path.name])["telemetry"]["base_port"]
    assert metrics == list(range(base_port, base_port + gpus))
    pm = _one(docs, "PodMonitor")
    assert pm["spec"]["selector"]["matchLabels"].items() <= spec["template"]["metadata"]["labels"].items()
    assert sorted(e["port"] for e in pm["spec"]["podMetricsEndpoints"]) == sorted(k for k in ports if k.startswith("metrics-"))
    assert all(e["path"] == "/metrics" for e in pm["spec"]["podMetricsEndpoints"])


def test_run_config_map_is_a_valid_run_config(rendered, tmp_path):
    [cm] = [d for d in rendered["base"] if d["kind"] == "ConfigMap" and "run.yaml" in d["data"]]
    (tmp_path / "run.yaml").write_text(cm["data"]["run.yaml"])
    cfg = load(tmp_path / "run.yaml")
    assert cfg.run.device == "cuda"  # a pod without a usable GPU fails fast (78) instead of training on the CPU
    assert cfg.telemetry.enabled and cfg.telemetry.bind_address == "0.0.0.0"  # reachable from Prometheus
    assert cfg.run.out_dir == "/runs" and cfg.data.train_shards.startswith("/data/shards/")
    assert cfg.teacher.weights.startswith("/runs/")


def test_pod_failure_policy_retries_sigterm_and_fails_fast_on_config_error(rendered):
    spec = _one(rendered["base"], "Job")["spec"]
    assert spec["template"]["spec"]["restartPolicy"] == "Never"
    rules = spec["podFailurePolicy"]["rules"]

    def action(code=None, condition=None):
        # the first matching rule decides (Kubernetes' order)
        for r in rules:
            ec = r.get("onExitCodes")
            if code is not None and ec and ((code in ec["values"]) == (ec["operator"] == "In")):
                return r["action"]
            if condition and any(pc["type"] == condition and pc["status"] == "True" for pc in r.get("onPodConditions", [])):
                return r["action"]
        return "Count"
    assert action(75) == "Ignore"          # EX_TEMPFAIL after the SIGTERM checkpoint: retry, resume
    assert action(78) == "FailJob"         # EX_CONFIG: fail fast
    assert action(condition="DisruptionTarget") == "Ignore"  # preemption / eviction
    assert action(1) == "Count"            # a crash: retried up to backoffLimit
    assert spec["backoffLimit"] >= 1
    # JobSet: every failure but a config error restarts the whole gang
    js = _one(rendered["overlays/jobset"], "JobSet")
    inner = js["spec"]["replicatedJobs"][0]["template"]["spec"]
    assert inner["backoffLimit"] == 0
    assert inner["podFailurePolicy"]["rules"] == [
        {"action": "FailJob", "onExitCodes": {"containerName": "trainer", "operator": "In", "values": [78]}}]
    fp = js["spec"]["failurePolicy"]
    assert fp["maxRestarts"] >= 1
    assert fp["rules"] == [{"name": "config-error-fails-fast", "action": "FailJobSet", "onJobFailureReasons": ["PodFailurePolicy"]}]


def test_network_policy_allows_only_peers_scrapes_and_dns(rendered):
    docs = rendered["base"]
    np_ = _one(docs, "NetworkPolicy")["spec"]
    pod_labels = _one(docs, "Job")["spec"]["template"]["metadata"]["labels"]
    assert np_["podSelector"]["matchLabels"].items() <= pod_labels.items()
    assert sorted(np_["policyTypes"]) == ["Egress", "Ingress"]
    peers, scrape = np_["ingress"]
    assert peers == {"from": [{"podSelector": np_["podSelector"]}]}
    assert scrape["from"][0]["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": "prometheus"}
    assert scrape["ports"] == [{"protocol": "TCP", "port": 9400, "endPort": 9407}]
    to_peers, dns = np_["egress"]
    assert to_peers == {"to": [{"podSelector": np_["podSelector"]}]}
    assert {p["port"] for p in dns["ports"]} == {53}
    # the shard writer gets no traffic at all
    ms = _one(rendered["overlays/make-shards"], "NetworkPolicy")["spec"]
    assert sorted(ms["policyTypes"]) == ["Egress", "Ingress"] and "ingress" not in ms and "egress" not in ms


def test_make_shards_overlay(rendered):
    docs = rendered["overlays/make-shards"]
    job = _one(docs, "Job", "distsnn-make-shards")
    [c] = job["spec"]["template"]["spec"]["containers"]
    assert c["command"][:2] == ["/usr/bin/tini", "--"]
    assert "launchers/make_shards.py imagenet" in c["args"][0]
    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
    assert mounts["/data/raw"]["readOnly"] is True and not mounts["/data/shards"].get("readOnly")
    claims = {v["persistentVolumeClaim"]["claimName"] for v in job["spec"]["template"]["spec"]["volumes"]
              if "persistentVolumeClaim" in v}
    assert claims == {"distsnn-raw", "distsnn-shards"}
    assert not [d for d in docs if d["kind"] in ("Service", "PodMonitor", "JobSet")]
    # images are pinned to a version, never :latest
    for d in DIRS[:3]:
        for _, spec in _job_specs(rendered[d]):
            for c in spec["template"]["spec"]["containers"]:
                assert re.fullmatch(r"[\w./-]+:\d+\.\d+\.\d+", c["image"]), c["image"]


def test_monitoring_objects(rendered):
    docs = rendered["monitoring"]
    cm = _one(docs, "ConfigMap", "distsnn-grafana-dashboard")
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"  # the Grafana sidecar's default label
    assert (REPO / "k8s" / "monitoring" / "distsnn-dashboard.json").read_text() == cm["data"]["distsnn-dashboard.json"]
    dash = json.loads(cm["data"]["distsnn-dashboard.json"])
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids)) and dash["uid"]
    assert all(p["gridPos"]["x"] + p["gridPos"]["w"] <= 24 and p["targets"] for p in dash["panels"])
    assert {v["name"] for v in dash["templating"]["list"]} >= {"datasource", "run"}
    exprs = " ".join(t["expr"] for p in dash["panels"] for t in p["targets"])
    for needed in ("distsnn_loss", "distsnn_cka{", "distsnn_cka_lambda", "distsnn_firing_rate_ratio",
                   "distsnn_images_per_second", "distsnn_data_wait_seconds_total", "distsnn_eval_top1_ratio",
                   "distsnn_eta_seconds", "distsnn_device_memory_max_allocated_bytes", "DCGM_FI_DEV_GPU_UTIL",
                   "distsnn_lif_compiled"):
        assert needed in exprs, needed
    pr = _one(docs, "PrometheusRule")
    for g in pr["spec"]["groups"]:
        assert g["name"] and g["rules"]
        for r in g["rules"]:
            assert ("record" in r) != ("alert" in r) and r["expr"]


def _kustomize(path: Path, *flags: str) -> list[dict]:
    res = subprocess.run(["kubectl", "kustomize", *flags, str(path)], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, f"kubectl kustomize {path}: {res.stderr}"
    return [doc for doc in yaml.safe_load_all(res.stdout) if doc]


def _without_rdma(container: dict) -> dict:
    """The container with the rdma Component's additions taken out again."""
    c = json.loads(json.dumps(container))
    c["securityContext"]["capabilities"].pop("add")
    for part in ("requests", "limits"):
        c["resources"][part] = {k: v for k, v in c["resources"][part].items() if not k.startswith("rdma/")}
    c["env"] = [e for e in c["env"] if e["name"] not in ("NCCL_IB_DISABLE", "NCCL_IB_HCA", "NCCL_NET_GDR_LEVEL")]
    return c


def test_rdma_overlay_adds_the_device_ipc_lock_and_nccl_settings_and_nothing_else(rendered, tmp_path):
    docs = _kustomize(K8S / "overlays" / "rdma")
    for doc in docs:
        if (doc["apiVersion"], doc["kind"]) not in CRDS:
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    [c] = _one(docs, "Job")["spec"]["template"]["spec"]["containers"]
    assert c["securityContext"]["capabilities"] == {"drop": ["ALL"], "add": ["IPC_LOCK"]}
    rdma = {k: v for k, v in c["resources"]["limits"].items() if k.startswith("rdma/")}
    assert rdma and rdma == {k: v for k, v in c["resources"]["requests"].items() if k.startswith("rdma/")}
    env = _env(c)
    assert env["NCCL_IB_DISABLE"] == "0" and env["NCCL_IB_HCA"] and env["NCCL_SOCKET_IFNAME"] == "eth0"
    [base] = _one(rendered["base"], "Job")["spec"]["template"]["spec"]["containers"]
    assert _without_rdma(c) == base  # the rest of the locked-down pod is untouched
    assert "ipc_lock" not in json.dumps(base).lower() and not [k for k in base["resources"]["limits"] if "rdma" in k]
    # the same Component on the JobSet: its inner Job gets it too (components run before the spec is copied)
    js_dir = tmp_path / "jobset-rdma"
    shutil.copytree(K8S / "overlays" / "jobset", js_dir)
    kz = (js_dir / "kustomization.yaml").read_text().replace("../../base", os.path.relpath(K8S / "base", js_dir))
    kz += f"components:\n  - {os.path.relpath(K8S / 'components' / 'rdma', js_dir)}\n"
    (js_dir / "kustomization.yaml").write_text(kz)
    js = _one(_kustomize(js_dir, "--load-restrictor", "LoadRestrictionsNone"), "JobSet")
    [jc] = js["spec"]["replicatedJobs"][0]["template"]["spec"]["template"]["spec"]["containers"]
    assert jc["securityContext"]["capabilities"]["add"] == ["IPC_LOCK"] and _env(jc)["NCCL_IB_HCA"]
