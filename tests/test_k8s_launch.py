"""The training pods' launch, run for real: render the manifests (base Job and JobSet), take the trainer
container's args and environment as the kubelet would hand them over (env values, the completion index as
NODE_RANK, ConfigMap volumes as files, $(VAR) expansion), and run the image's entrypoint once per pod on this
machine. Only what cannot exist here is swapped: MASTER_ADDR is 127.0.0.1 (no cluster DNS), GPUS_PER_POD is 1
(one CPU rank per pod), a free rendezvous port, OMP_NUM_THREADS=1 (2 cores here), and the run config is the demo
recipe made tiny."""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).parent))
from train_helpers import REPO, free_port, launch_env, metrics  # noqa: E402

K8S = REPO / "k8s"


def _pod(d: str) -> tuple[dict, list[dict], dict]:
    """(the Job spec, the rendered documents, the trainer container) of the training pods of kustomize dir ``d``."""
    res = subprocess.run(["kubectl", "kustomize", str(K8S / d)], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    docs = [x for x in yaml.safe_load_all(res.stdout) if x]
    specs = [x["spec"] for x in docs if x["kind"] == "Job"] + [
        rj["template"]["spec"] for x in docs if x["kind"] == "JobSet" for rj in x["spec"]["replicatedJobs"]]
    [spec] = specs
    [c] = [c for c in spec["template"]["spec"]["containers"] if c["name"] == "trainer"]
    return spec, docs, c


def _mount_config_maps(spec: dict, docs: list[dict], c: dict, root: Path) -> dict[str, str]:
    """Write every ConfigMap volume the container mounts under ``root``; returns mountPath -> local folder."""
    cms = {x["metadata"]["name"]: x for x in docs if x["kind"] == "ConfigMap"}
    vols = {v["name"]: v for v in spec["template"]["spec"]["volumes"]}
    mounts = {}
    for m in c["volumeMounts"]:
        v = vols[m["name"]]
        if "configMap" not in v:
            continue
        cm = cms[v["configMap"]["name"]]  # a dangling reference fails here, as the pod would not start
        folder = root / m["name"]
        folder.mkdir(parents=True, exist_ok=True)
        for key, text in cm["data"].items():
            (folder / key).write_text(text)
        mounts[m["mountPath"]] = str(folder)
    return mounts


def _env(c: dict, index: int) -> dict[str, str]:
    """The container's environment as the kubelet sets it for completion index ``index``."""
    out = {}
    for e in c["env"]:
        if "value" in e:
            value = e["value"]
        else:
            path = e["valueFrom"]["fieldRef"]["fieldPath"]
            value = {"metadata.annotations['batch.kubernetes.io/job-completion-index']": str(index),
                     "status.podIP": "127.0.0.1"}[path]
        out[e["name"]] = re.sub(r"\$\((\w+)\)", lambda m: out.get(m.group(1), m.group(0)), value)
    return out


def _args(c: dict, env: dict, mounts: dict[str, str], port: int, config: list[str]) -> list[str]:
    args = []
    for a in c["args"]:
        a = re.sub(r"\$\((\w+)\)", lambda m: env[m.group(1)], a)
        for mount, local in mounts.items():
            a = a.replace(mount + "/", local + "/")
        args.append(re.sub(r"^--master_port=\d+$", f"--master_port={port}", a))
    i = args.index("--config")
    return args[:i] + config  # the recipe's config replaced by the tiny demo run


@pytest.mark.slow
@pytest.mark.parametrize("d", ["base", "overlays/jobset"])
def test_the_pods_launch_command_trains_one_world_across_two_pods(tmp_path, d):
    spec, docs, c = _pod(d)
    nnodes = spec["completions"]
    port = free_port()
    cache = tmp_path / "cache"
    # the digits shards once, before the pods start (two pods building one cache at once would race)
    from distsnn.data.digits import digits_dir
    digits_dir(str(cache))
    config = ["--config", "demo_ann.yaml", "--set", f"run.out_dir={tmp_path / 'runs'}", "--set", "run.name=k8s",
              "--set", "run.max_steps=2", "--set", "run.plots=false", "--set", "run.log_every_steps=1",
              "--set", f"data.cache_dir={cache}", "--set", "data.prefetch=1"]
    entry = [shutil.which("tini"), "-s", "--"] if shutil.which("tini") else []
    procs = []
    for index in range(nnodes):
        mounts = _mount_config_maps(spec, docs, c, tmp_path / f"pod{index}")
        env = _env(c, index)
        env.update(MASTER_ADDR="127.0.0.1", GPUS_PER_POD="1")
        env = _env({"env": [{"name": k, "value": v} for k, v in env.items()]}, index)  # re-expand $(GPUS_PER_POD)
        args = _args(c, env, mounts, port, config)
        assert args[0].startswith("--hostfile=") and Path(args[0].split("=", 1)[1]).is_file(), args
        # the pod's whole environment (its cache paths point at /tmp, writable here too); one thread per rank
        run_env = {**launch_env(), **env, "OMP_NUM_THREADS": "1"}
        procs.append(subprocess.Popen(entry + [str(REPO / "docker" / "entrypoint.sh"), *args], cwd=REPO,
                                      env=run_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    outs = []
    for p in procs:
        try:
            outs.append(p.communicate(timeout=400)[0])
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            pytest.fail(f"{d}: the pods did not finish")
    for index, (p, out) in enumerate(zip(procs, outs)):
        assert p.returncode == 0, f"{d} pod {index}:\n{out}"
        assert "no extra nodes available via hostfile" not in out
    # one world of 2 ranks: pod 0 (rank 0) prints the plan; pod 1's launcher started global rank 1
    assert re.search(r"plan: world_size=2, global_batch=64\b", outs[0]), outs[0]
    assert "node_rank=1" in outs[1] and "dist_world_size=2" in outs[1], outs[1]
    steps = [r["step"] for r in metrics(tmp_path / "runs" / "k8s") if r.get("kind") == "step"]
    assert steps == [1, 2]
