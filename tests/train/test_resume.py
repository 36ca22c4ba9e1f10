"""Preemption (SIGTERM), hard kill (SIGKILL, also mid-save) and restore on fewer devices.

Each interrupted run is restarted with the same command and must reproduce the
uninterrupted run's loss curve step for step.
"""

import os
import shutil
import signal
import subprocess
import time

import numpy as np
import pytest

from jaxmm.train import run
from jaxmm.train.logging import read_jsonl
from tests.train.helpers import (
    HANG_GUARD_S,
    ROOT,
    cpu_env,
    jaxmm_cmd,
    losses,
    run_cli,
    tiny_config,
    write_config,
)

STEPS = 24
CFG = {"num_steps": STEPS, "checkpoint.every_steps": 4, "mesh.data": 4, "mesh.fsdp": 2,
       "checkpoint.keep": 3}
SLOW = {**CFG, "data.delay_s": 0.06}  # slow input so signals land mid-training


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("reference") / "run")
    run(tiny_config("lm", CFG), workdir)
    curve = losses(workdir)
    assert sorted(curve) == list(range(1, STEPS + 1))
    return workdir, curve


def _train_cmd(cfg, workdir):
    return jaxmm_cmd("train", "--config", cfg, "--workdir", workdir)


def _wait_for(predicate, timeout=HANG_GUARD_S, poll=0.002):
    """Polls ``predicate`` until true; ``timeout`` only guards against a hung run."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(poll)
    return False


def _last_step(workdir):
    path = os.path.join(workdir, "metrics.jsonl")
    if not os.path.exists(path):
        return 0
    try:
        return max((r["step"] for r in read_jsonl(path)), default=0)
    except ValueError:  # a line being written
        return 0


def _complete(workdir):
    d = os.path.join(workdir, "checkpoints")
    return [int(n) for n in os.listdir(d) if n.isdigit()] if os.path.isdir(d) else []


def _tmp_checkpoints(workdir):
    d = os.path.join(workdir, "checkpoints")
    return [n for n in os.listdir(d) if "tmp" in n] if os.path.isdir(d) else []


@pytest.mark.slow
def test_sigterm_saves_and_resume_is_identical(tmp_path, reference):
    _, ref = reference
    cfg, workdir = write_config(tmp_path / "cfg.py", "lm", SLOW), str(tmp_path / "run")
    proc = subprocess.Popen(_train_cmd(cfg, workdir), cwd=ROOT, env=cpu_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert _wait_for(lambda: _last_step(workdir) >= 6), "training did not start"
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=HANG_GUARD_S)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert "Preemption notice: saved step" in out
    stopped = _last_step(workdir)
    assert 6 <= stopped < STEPS
    assert max(int(s) for s in os.listdir(f"{workdir}/checkpoints") if s.isdigit()) == stopped

    again = run_cli("train", "--config", cfg, "--workdir", workdir)
    assert again.returncode == 0, again.stderr
    assert f"resuming from step {stopped}" in again.stdout
    assert losses(workdir) == ref  # identical, step for step


@pytest.mark.slow
def test_sigkill_mid_save_resumes_from_last_complete_checkpoint(tmp_path, reference):
    _, ref = reference
    cfg, workdir = write_config(tmp_path / "cfg.py", "lm", SLOW), str(tmp_path / "run")
    proc = subprocess.Popen(_train_cmd(cfg, workdir), cwd=ROOT, env=cpu_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        # Kill while a later checkpoint is being written, once one is complete.
        caught = _wait_for(lambda: _complete(workdir) and _tmp_checkpoints(workdir))
        proc.kill()
        proc.wait(timeout=HANG_GUARD_S)
    finally:
        proc.kill()
    assert caught, "no save in progress was observed"
    complete = sorted(_complete(workdir))
    assert complete and complete[-1] < STEPS

    again = run_cli("train", "--config", cfg, "--workdir", workdir)
    assert again.returncode == 0, again.stderr
    assert f"resuming from step {complete[-1]}" in again.stdout
    assert not _tmp_checkpoints(workdir)  # the partial save was cleaned up
    assert losses(workdir) == ref


@pytest.mark.slow
def test_checkpoint_from_8_devices_restores_on_1(tmp_path, reference):
    ref_dir, _ = reference
    one, eight = str(tmp_path / "one"), str(tmp_path / "eight")
    shutil.copytree(ref_dir, one)
    shutil.copytree(ref_dir, eight)
    more = {**CFG, "num_steps": STEPS + 2}
    cfg = write_config(tmp_path / "cfg.py", "lm", more)
    res = run_cli("train", "--config", cfg, "--workdir", one,
                  "--config.mesh.data=1", "--config.mesh.fsdp=1", devices=1)
    assert res.returncode == 0, res.stderr
    assert f"resuming from step {STEPS}" in res.stdout and "1 cpu device(s)" in res.stdout
    run(tiny_config("lm", more), eight)  # the same continuation on 8 devices
    got, want = losses(one), losses(eight)
    np.testing.assert_allclose([got[STEPS + 1], got[STEPS + 2]],
                               [want[STEPS + 1], want[STEPS + 2]], rtol=1e-5)
