"""launch/slurm_gpu.sbatch run by bash with stand-in ``srun`` / ``scontrol`` (see
tests/launch/fakes.py): a 2-task job step on this machine over jax.distributed, the
time-limit SIGTERM (srun forwards it to both tasks), a save, ``scontrol requeue``;
the requeued job resumes, finishes on the uninterrupted run's loss curve and is not
requeued again. A failed run is not requeued either."""

import os
import signal
import socket
import stat
import subprocess
import sys
import time

import numpy as np
import pytest

from jaxmm.train import run
from jaxmm.train.logging import read_jsonl
from tests.launch import fakes
from tests.train.helpers import (
    CACHE,
    HANG_GUARD_S,
    ROOT,
    cpu_env,
    losses,
    tiny_config,
    write_config,
)

STEPS = 16
CFG = {"num_steps": STEPS, "checkpoint.every_steps": 4, "checkpoint.keep": 3,
       "mesh.data": 4, "mesh.fsdp": 2, "distributed.timeout_s": 600}
SLOW = {**CFG, "data.delay_s": 0.06}  # slow input so the signal lands mid-training
SCRIPT = os.path.join(ROOT, "launch", "slurm_gpu.sbatch")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _job_env(tmp_path, **extra):
    sim = tmp_path / "slurm"
    sim.mkdir(exist_ok=True)
    bin_dir = fakes.install(tmp_path / "bin", srun=fakes.SRUN, scontrol=fakes.SCONTROL)
    env = cpu_env(4, PATH=bin_dir + os.pathsep + os.environ["PATH"], FAKE_SLURM_DIR=str(sim),
                  SLURM_JOB_ID="4242", SLURM_NTASKS="2", SLURM_NTASKS_PER_NODE="2",
                  SLURM_JOB_NODELIST="localhost", SLURM_SUBMIT_DIR=ROOT,
                  JAXMM_PYTHON=sys.executable, JAXMM_XLA_CACHE=CACHE,
                  JAX_COORDINATOR_PORT=str(_free_port()), **extra)
    for key in ("JAX_COORDINATOR_ADDRESS", "TPU_WORKER_HOSTNAMES", "OMPI_COMM_WORLD_SIZE"):
        env.pop(key, None)
    return sim, env


def _last_step(workdir):
    try:
        return max((r["step"] for r in read_jsonl(os.path.join(workdir, "metrics.jsonl"))),
                   default=0)
    except (OSError, ValueError):
        return 0


@pytest.mark.slow
def test_time_limit_sigterm_saves_requeues_and_the_requeued_job_finishes(tmp_path):
    sim, env = _job_env(tmp_path)
    cfg, workdir = write_config(tmp_path / "cfg.py", "lm", SLOW), str(tmp_path / "run")
    command = ["bash", SCRIPT, cfg, workdir]

    job = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           text=True)
    try:
        end = time.monotonic() + HANG_GUARD_S
        while _last_step(workdir) < 4 and job.poll() is None and time.monotonic() < end:
            time.sleep(0.01)
        assert job.poll() is None, "the job ended before training started"
        os.kill(int((sim / "srun.pid").read_text()), signal.SIGTERM)  # SLURM's --signal
        out, _ = job.communicate(timeout=HANG_GUARD_S)
    finally:
        job.kill()
    assert job.returncode == 0, out[-5000:]
    stopped = _last_step(workdir)
    assert 4 <= stopped < STEPS
    assert f"Preemption notice: saved step {stopped}" in out
    assert "requeueing job 4242" in out
    calls = fakes.calls(sim)
    assert [c["argv"] for c in calls if c["call"] == "scontrol"] == [["requeue", "4242"]]
    srun = [c for c in calls if c["call"] == "srun"]
    assert srun[0]["argv"][:2] == ["bash", "-c"] and "2 process(es)" in out

    # The requeued job: same script, same arguments; resumes, finishes, no requeue.
    again = subprocess.run(command, env={**env, "SLURM_RESTART_COUNT": "1"},
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           timeout=HANG_GUARD_S)
    assert again.returncode == 0, again.stdout[-5000:]
    assert f"resuming from step {stopped}" in again.stdout
    assert "training finished" in again.stdout
    assert len([c for c in fakes.calls(sim) if c["call"] == "scontrol"]) == 1

    reference = str(tmp_path / "reference")
    run(tiny_config("lm", CFG), reference)  # uninterrupted, one process, same 8 devices
    got, want = losses(workdir), losses(reference)
    assert sorted(got) == list(range(1, STEPS + 1))
    np.testing.assert_allclose([got[s] for s in range(1, STEPS + 1)],
                               [want[s] for s in range(1, STEPS + 1)], rtol=1e-5)


@pytest.mark.slow
def test_failed_run_or_old_python_is_not_requeued(tmp_path):
    sim, env = _job_env(tmp_path)
    cfg, workdir = write_config(tmp_path / "cfg.py", "lm", CFG), str(tmp_path / "run")
    res = subprocess.run(["bash", SCRIPT, cfg, workdir, "--config.num_steps=many"], env=env,
                         capture_output=True, text=True, timeout=HANG_GUARD_S)
    assert res.returncode == 2, res.stderr[-3000:]
    assert "training failed (exit 2); not requeued" in res.stderr
    assert not [c for c in fakes.calls(sim) if c["call"] == "scontrol"]

    old = tmp_path / "python3.10"
    old.write_text("#!/bin/sh\nexit 1\n")
    old.chmod(old.stat().st_mode | stat.S_IXUSR)
    res = subprocess.run(["bash", SCRIPT, cfg, workdir], env={**env, "JAXMM_PYTHON": str(old)},
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 2 and "is not Python >= 3.11" in res.stderr
