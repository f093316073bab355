"""The trainer under the real ``deepspeed`` launcher (2 ranks, gloo): a rank SIGKILLed mid-epoch (by itself,
right after step 5: ``crash_rank_process.py``) and a relaunch give bit-identical losses and weights to an
uninterrupted run; SIGTERM to the container's main process (tini -> docker/entrypoint.sh) stops every rank with a
valid checkpoint and exit 75 within the grace period; bad config, missing shards and missing teacher weights
exit 78 naming the key or path before any rank trains."""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import torch
from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).parent))
from train_helpers import REPO, free_port, launch_env, make_teacher, metrics, step_losses, tiny_overrides  # noqa: E402

from distsnn.train import checkpoint as ckpt  # noqa: E402
from distsnn.train import exit_codes  # noqa: E402
from distsnn.train.main import main  # noqa: E402

# 60 train images, 8 per rank: 3 steps per epoch; 4 epochs. Checkpoints every 4 steps: 4 and 8 are mid-epoch.
RESUME = ["method.name=baseline", "model.neuron.implementation=reference", "data.train_fraction=0.04",
          "data.batch_size=8", "run.epochs=4", "checkpoint.every_steps=4"]
GRACE_S = 600  # k8s/base/job.yaml's terminationGracePeriodSeconds: after it the kubelet SIGKILLs (a hang guard here)
CRASH_STEP = 5  # mid-epoch 1 (its 2nd step), after the step-4 checkpoint


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("launcher")
    return tmp, str(tmp / "cache"), str(make_teacher(tmp / "teacher.safetensors"))


def command(tmp, assets, name, extra, launcher=("deepspeed",), script=REPO / "launchers" / "train.py") -> list[str]:
    _, cache, teacher = assets
    sets = tiny_overrides(tmp / "runs", cache, teacher) + [f"run.name={name}"] + extra
    return [*launcher, "--master_port", str(free_port()), "--num_gpus", "2", str(script),
            "--config", "demo_sscl.yaml", *[a for s in sets for a in ("--set", s)]]


def run(cmd, timeout=300) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=REPO, env=launch_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, timeout=timeout)


def rank_processes(root_pid: int) -> list[psutil.Process]:
    """The training ranks below ``root_pid`` (deepspeed -> launch.py -> ranks), ordered by RANK."""
    ranks = []
    for p in psutil.Process(root_pid).children(recursive=True):
        try:
            if any("--local_rank" in a for a in p.cmdline()) and "train.py" in " ".join(p.cmdline()):
                ranks.append((int(p.environ().get("RANK", -1)), p))
        except psutil.Error:
            pass
    return [p for _, p in sorted(ranks, key=lambda t: t[0])]


def wait_for(proc, predicate, what, timeout=300):
    deadline = time.monotonic() + timeout
    while not predicate():
        if proc.poll() is not None:
            pytest.fail(f"exited {proc.returncode} before {what}:\n{proc.stdout.read()}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.05)


@pytest.mark.slow
def test_sigkill_of_one_rank_then_relaunch_is_bit_identical_to_an_uninterrupted_run(tmp_path, assets):
    ref = run(command(tmp_path, assets, "ref", RESUME))
    assert ref.returncode == 0, ref.stdout
    ref_losses = step_losses(tmp_path / "runs" / "ref")
    assert sorted(ref_losses) == list(range(1, 13))

    killed_dir = tmp_path / "runs" / "killed"
    crasher = Path(__file__).parent / "crash_rank_process.py"
    env = {**launch_env(), "DISTSNN_TEST_CRASH_STEP": str(CRASH_STEP), "DISTSNN_TEST_CRASH_RANK": "1"}
    crash = subprocess.run(command(tmp_path, assets, "killed", RESUME, script=crasher), cwd=REPO, env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=600)
    assert crash.returncode not in (0, exit_codes.RETRY), crash.stdout
    before = step_losses(killed_dir)
    last_before = max(before)
    # rank 0 logged step 5 (its step ended with the all-reduce rank 1 took part in) and nothing after it
    assert last_before == CRASH_STEP, (sorted(before), crash.stdout[-3000:])
    assert [r["step"] for r in metrics(killed_dir) if r.get("kind") == "checkpoint"] == [4]

    again = run(command(tmp_path, assets, "killed", RESUME))
    assert again.returncode == 0, again.stdout
    m = re.search(r"resumed from \S+ at step (\d+) \(epoch (\d+)\)", again.stdout)
    assert m, again.stdout
    resumed_at = int(m.group(1))
    assert resumed_at == 4 and resumed_at % 3 != 0  # a mid-epoch checkpoint
    after = step_losses(killed_dir)  # steps > resumed_at hold the relaunch's values
    assert sorted(after) == list(range(1, 13))
    # the steps after the resume, and those the killed run had done before, equal the uninterrupted run's bit for bit
    assert {s: after[s] for s in range(resumed_at + 1, 13)} == {s: ref_losses[s] for s in range(resumed_at + 1, 13)}
    assert {s: before[s] for s in range(1, last_before + 1)} == {s: ref_losses[s] for s in range(1, last_before + 1)}
    w_ref = load_file(str(tmp_path / "runs" / "ref" / "model.safetensors"))
    w_res = load_file(str(killed_dir / "model.safetensors"))
    assert w_ref.keys() == w_res.keys() and all(torch.equal(w_ref[k], w_res[k]) for k in w_ref)


@pytest.mark.slow
def test_sigterm_to_the_containers_main_process_stops_every_rank_with_a_checkpoint_and_exit_75(tmp_path, assets):
    tini = shutil.which("tini")
    # The container: tini (PID 1 there; -s makes it the subreaper here) runs the entrypoint, which runs deepspeed.
    main_process = ([tini, "-s", "--"] if tini else []) + [str(REPO / "docker" / "entrypoint.sh")]
    cmd = command(tmp_path, assets, "term", ["method.name=baseline", "model.neuron.implementation=reference",
                                              "data.train_fraction=0.04", "data.batch_size=8", "run.epochs=1000"],
                  launcher=main_process)
    run_dir = tmp_path / "runs" / "term"
    proc = subprocess.Popen(cmd, cwd=REPO, env=launch_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    try:
        wait_for(proc, lambda: max(step_losses(run_dir), default=0) >= 2, "step 2")
        ranks = rank_processes(proc.pid)
        assert len(ranks) == 2
        proc.send_signal(signal.SIGTERM)  # what the kubelet does; SIGKILL follows after the grace period
        try:
            out, _ = proc.communicate(timeout=GRACE_S)
        except subprocess.TimeoutExpired:
            pytest.fail(f"still running {GRACE_S} s after SIGTERM: the kubelet would SIGKILL it")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == exit_codes.RETRY == 75, out
    m = re.search(r"SIGTERM received: every rank stops at step (\d+)", out)
    assert m, out
    stop_step = int(m.group(1))
    # a valid checkpoint of that very step, with both ranks' files
    tags = ckpt.complete_tags(run_dir / "checkpoints")
    assert tags and tags[-1] == ckpt.tag_for(stop_step), (tags, stop_step)
    assert ckpt.verify(run_dir / "checkpoints" / tags[-1]) is None
    assert ckpt.read_manifest(run_dir / "checkpoints" / tags[-1])["world_size"] == 2
    assert {"rank_00000.pt", "rank_00001.pt"} <= {p.name for p in (run_dir / "checkpoints" / tags[-1]).iterdir()}
    # no orphaned rank
    for p in ranks:
        assert not p.is_running() or p.status() == psutil.STATUS_ZOMBIE, f"rank pid {p.pid} survived"


@pytest.mark.slow
def test_bad_config_exits_78_naming_the_key_before_any_rank_trains(tmp_path, assets):
    res = run(command(tmp_path, assets, "bad", ["optim.lr=-1"]), timeout=300)
    assert res.returncode == exit_codes.CONFIG_ERROR == 78, res.stdout
    assert "optim.lr" in res.stdout
    assert not (tmp_path / "runs").exists()  # no rank built a Trainer (it creates the run directory)
    assert "plan:" not in res.stdout


@pytest.mark.parametrize("what", ["shards", "teacher"])
def test_missing_shards_or_teacher_weights_exit_78_naming_the_path(tmp_path, assets, capsys, what):
    _, cache, teacher = assets
    missing = tmp_path / "nowhere" / ("train-*.tar" if what == "shards" else "teacher.safetensors")
    sets = tiny_overrides(tmp_path / "runs", cache, teacher) + (
        ["data.source=shards", f"data.train_shards={missing}", f"data.val_shards={missing}"] if what == "shards"
        else [f"teacher.weights={missing}", "method.name=sscl"])
    rc = main(["--config", "demo_sscl.yaml", *[a for s in sets for a in ("--set", s)]])
    err = capsys.readouterr().err
    assert rc == exit_codes.CONFIG_ERROR == 78
    key = "data.train_shards" if what == "shards" else "teacher.weights"
    assert key in err and str(missing) in err, err
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_relaunching_a_finished_run_re_evaluates_the_epoch_it_ended_in(tmp_path, assets):
    """The demo is idempotent: a finished run relaunched resumes at its last step and only evaluates; that
    evaluation must be recorded as the run's last epoch (it said epoch 31 of a 30-epoch run), with the same
    accuracy, not as one epoch more."""
    tiny = ["method.name=baseline", "data.train_fraction=0.04", "data.batch_size=8", "run.epochs=2"]
    first = run(command(tmp_path, assets, "done", tiny))
    assert first.returncode == 0, first.stdout
    eval_json = tmp_path / "runs" / "done" / "eval.json"
    before = json.loads(eval_json.read_text())[-1]
    assert (before["epoch"], before["step"]) == (1, 6)  # 2 epochs of 3 steps
    again = run(command(tmp_path, assets, "done", tiny))
    assert again.returncode == 0, again.stdout
    assert re.search(r"resumed from \S+ at step 6 ", again.stdout), again.stdout[-3000:]
    after = json.loads(eval_json.read_text())[-1]
    assert (after["epoch"], after["step"]) == (1, 6)
    assert after["top1"] == before["top1"]
