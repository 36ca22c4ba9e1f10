"""launch/tpu_vm.sh on a simulated 2-worker TPU VM slice (a stand-in ``gcloud``, see
tests/launch/fakes.py): create, copy the code, train on both workers over
jax.distributed (found through each worker's metadata server), SIGTERM one worker,
both save the same step, and re-running the script resumes to the loss curve of an
uninterrupted run. The install step is replaced by ``--python`` (this venv)."""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from jaxmm.train import run
from jaxmm.train.logging import read_jsonl
from tests.launch import fakes
from tests.train.helpers import HANG_GUARD_S, ROOT, cpu_env, losses, tiny_config, write_config

STEPS = 16
CFG = {"num_steps": STEPS, "checkpoint.every_steps": 4, "checkpoint.keep": 3,
       "mesh.data": 4, "mesh.fsdp": 2, "distributed.timeout_s": 600}
SLOW = {**CFG, "data.delay_s": 0.06}  # slow input so the signal lands mid-training
SCRIPT = os.path.join(ROOT, "launch", "tpu_vm.sh")


def _last_step(workdir):
    path = os.path.join(workdir, "metrics.jsonl")
    try:
        return max((r["step"] for r in read_jsonl(path)), default=0)
    except (OSError, ValueError):  # not there yet / a line being written
        return 0


def _wait_for(predicate, timeout=HANG_GUARD_S):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.01)
    return False


@pytest.mark.slow
def test_tpu_vm_slice_preempted_on_one_worker_resumes_identically(tmp_path):
    sim = tmp_path / "slice"
    sim.mkdir()
    env = cpu_env(4, FAKE_TPU_DIR=str(sim), FAKE_TPU_WORKERS="2",
                  PATH=fakes.install(tmp_path / "bin", gcloud=fakes.GCLOUD) + os.pathsep
                  + os.environ["PATH"])
    cfg, workdir, logs = (write_config(tmp_path / "cfg.py", "lm", SLOW), str(tmp_path / "run"),
                          str(tmp_path / "logs"))
    command = ["bash", SCRIPT, "--create", "--accelerator-type", "v4-16", "--python",
               sys.executable, "--logs", logs, "sim-tpu", "us-central2-b", cfg, workdir,
               "--log-level=INFO"]

    # -- first run: created, code copied, SIGTERM on worker 1 mid-run ----------
    first = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
    try:
        assert _wait_for(lambda: _last_step(workdir) >= 4 or first.poll() is not None)
        assert first.poll() is None, "the script ended before training started"
        os.kill(int((sim / "worker-1.pid").read_text()), signal.SIGTERM)
        out, _ = first.communicate(timeout=HANG_GUARD_S)
    finally:
        first.kill()
    assert first.returncode == 0, out[-5000:]
    calls = fakes.calls(sim)
    creates = [c for c in calls if c["call"] == "create"]
    assert len(creates) == 1 and "--accelerator-type" in creates[0]["argv"]
    assert (sim / "home-1" / "jaxmm" / "jaxmm" / "train" / "distributed.py").is_file()
    assert [c["codes"] for c in calls if c["call"] == "ssh-done"] == [[0, 0], [0, 0]]
    # Each worker found the slice through its own metadata server.
    asked = {(c["worker"], c["key"]) for c in calls if c["call"] == "metadata"}
    assert {("0", "agent-worker-number"), ("1", "agent-worker-number")} <= asked
    log0 = open(os.path.join(logs, "worker-0.log")).read()
    log1 = open(os.path.join(logs, "worker-1.log")).read()
    assert "jax.distributed.initialize (tpu-metadata)" in log0
    assert "'process_id': 1" in log1 and "'num_processes': 2" in log1
    assert "2 process(es)" in log0 and "8 cpu device(s)" in log0
    stopped = _last_step(workdir)
    assert 4 <= stopped < STEPS
    assert f"Preemption notice: saved step {stopped}" in log0
    steps = [int(s) for s in os.listdir(f"{workdir}/checkpoints") if s.isdigit()]
    assert max(steps) == stopped
    # Both processes saved their data position at that step (the same step for both).
    data = sorted(p for p in os.listdir(f"{workdir}/checkpoints/{stopped}/data")
                  if p.endswith(".json"))
    assert data == ["process_0-of-2.json", "process_1-of-2.json"]

    # -- second run: the same command resumes and finishes ---------------------
    again = subprocess.run(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True, timeout=HANG_GUARD_S)
    assert again.returncode == 0, again.stdout[-5000:]
    assert len([c for c in fakes.calls(sim) if c["call"] == "create"]) == 1  # not again
    log0 = open(os.path.join(logs, "worker-0.log")).read()
    assert f"resuming from step {stopped}" in log0 and "jaxmm train: done at step 16" in log0

    reference = str(tmp_path / "reference")
    run(tiny_config("lm", CFG), reference)  # uninterrupted, one process, same 8 devices
    got, want = losses(workdir), losses(reference)
    assert sorted(got) == list(range(1, STEPS + 1))
    np.testing.assert_allclose([got[s] for s in range(1, STEPS + 1)],
                               [want[s] for s in range(1, STEPS + 1)], rtol=1e-5)


def test_tpu_vm_script_refuses_a_missing_slice_without_create(tmp_path):
    sim = tmp_path / "slice"
    sim.mkdir()
    env = cpu_env(4, FAKE_TPU_DIR=str(sim),
                  PATH=fakes.install(tmp_path / "bin", gcloud=fakes.GCLOUD) + os.pathsep
                  + os.environ["PATH"])
    res = subprocess.run(["bash", SCRIPT, "nope", "us-central2-b", "configs/lm_gpt.py", "w"],
                         env=env, capture_output=True, text=True, timeout=60)
    assert res.returncode == 2
    assert "TPU nope not found in us-central2-b" in res.stderr
    assert [c["call"] for c in fakes.calls(sim)] == ["describe"]
    res = subprocess.run(["bash", SCRIPT, "--create", "nope", "z", "c.py", "w"],
                         env=env, capture_output=True, text=True, timeout=60)
    assert res.returncode == 2 and "--create needs --accelerator-type" in res.stderr


def test_tpu_vm_script_clones_a_ref_and_quotes_for_the_workers(tmp_path):
    """--ref clones into each worker's own $HOME (expanded there, not here), and the
    train command reaches every worker word for word; a stand-in interpreter records
    its calls instead of training."""
    origin = tmp_path / "origin"
    origin.mkdir()
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-C", str(origin)]
    subprocess.run(["git", "init", "-q", "-b", "main", str(origin)], check=True)
    (origin / "marker.txt").write_text("release\n")
    subprocess.run([*git, "add", "marker.txt"], check=True)
    subprocess.run([*git, "commit", "-qm", "release"], check=True)
    subprocess.run([*git, "branch", "release"], check=True)
    fake_python = tmp_path / "py"
    fake_python.write_text('#!/bin/sh\nprintf "%s|%s\\n" "$PWD" "$*" >> "$HOME/python-calls"\n')
    fake_python.chmod(0o755)
    sim = tmp_path / "slice"
    sim.mkdir()
    (sim / "created").write_text("{}")  # an existing slice: no create
    env = cpu_env(4, FAKE_TPU_DIR=str(sim), FAKE_TPU_WORKERS="2", HOME=str(tmp_path / "local"),
                  PATH=fakes.install(tmp_path / "bin", gcloud=fakes.GCLOUD) + os.pathsep
                  + os.environ["PATH"])
    res = subprocess.run(
        ["bash", SCRIPT, "--ref", "release", "--repo", str(origin), "--python", str(fake_python),
         "--logs", str(tmp_path / "logs"), "t", "z", "configs/lm_gpt.py:tiny,steps=3",
         "gs://b/run 1", "--config.log.every_steps=1", "--config.note=it's $HOME"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "create" not in [c["call"] for c in fakes.calls(sim)]
    for i in range(2):
        home = sim / f"home-{i}"
        assert (home / "jaxmm" / "marker.txt").read_text() == "release\n"
        calls = (home / "python-calls").read_text().splitlines()
        assert calls[0].startswith(f"{home}|-c import sys")  # the version check
        assert calls[1] == (f"{home / 'jaxmm'}|-m jaxmm train --config "
                            "configs/lm_gpt.py:tiny,steps=3 --workdir gs://b/run 1 "
                            "--config.log.every_steps=1 --config.note=it's $HOME")
        assert (tmp_path / "logs" / f"worker-{i}.log").read_text().startswith("== ")
    assert not (tmp_path / "local" / "jaxmm").exists()  # nothing went to the local $HOME
