"""Two processes on this machine train one model via jax.distributed (gloo on localhost)
and match a single-process run with the same global devices, batch and mesh."""

import socket
import subprocess

import jax
import numpy as np
import pytest

from jaxmm.train import load_exported, run
from tests.train.helpers import (
    HANG_GUARD_S,
    PEER_GUARD_S,
    ROOT,
    cpu_env,
    jaxmm_cmd,
    losses,
    tiny_config,
    write_config,
)

CFG = {"num_steps": 4, "checkpoint.every_steps": 2, "checkpoint.export_params": True,
       "mesh.data": 4, "mesh.fsdp": 2}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _train_two_processes(cfg, workdir):
    """``jaxmm train`` as two processes of 4 devices each; returns their (stdout, stderr)."""
    port = _free_port()
    procs = [
        subprocess.Popen(
            jaxmm_cmd("train", "--config", cfg, "--workdir", workdir,
                      f"--config.distributed.coordinator_address=127.0.0.1:{port}",
                      "--config.distributed.num_processes=2",
                      f"--config.distributed.process_id={i}",
                      f"--config.distributed.timeout_s={PEER_GUARD_S}"),
            cwd=ROOT, env=cpu_env(4), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True)
        for i in range(2)
    ]
    outs = []
    try:
        for p in procs:
            outs.append(p.communicate(timeout=HANG_GUARD_S))
    finally:
        for p in procs:
            p.kill()
    for p, (_out, err) in zip(procs, outs):
        assert p.returncode == 0, err[-3000:]
    return outs


@pytest.mark.slow
def test_two_processes_match_one(tmp_path):
    cfg, workdir = write_config(tmp_path / "cfg.py", "lm", CFG), str(tmp_path / "multi")
    outs = _train_two_processes(cfg, workdir)
    assert "2 process(es)" in outs[0][0] and "8 cpu device(s)" in outs[0][0]
    assert "jaxmm train" not in outs[1][0]  # only process 0 prints and writes logs

    single = str(tmp_path / "single")
    run(tiny_config("lm", CFG), single)
    got, want = losses(workdir), losses(single)
    assert sorted(got) == [1, 2, 3, 4]  # one record per step: no duplicate writers
    np.testing.assert_allclose([got[s] for s in range(1, 5)], [want[s] for s in range(1, 5)],
                               rtol=1e-5)
    _, multi_vars = load_exported(f"{workdir}/export")
    _, single_vars = load_exported(f"{single}/export")
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=2e-5),
                 jax.device_get(multi_vars), jax.device_get(single_vars))
    # Both processes' data positions were saved with the checkpoint.
    data_dir = tmp_path / "multi" / "checkpoints" / "4" / "data"
    assert sorted(p.name for p in data_dir.iterdir() if p.suffix == ".json") == [
        "process_0-of-2.json", "process_1-of-2.json"]


@pytest.mark.slow
def test_two_processes_fall_back_from_an_unreadable_checkpoint_together(tmp_path):
    """Both processes agree that step 4 is unreadable, it is moved aside once, and both
    resume from step 2 (then match the uninterrupted single-process run)."""
    workdir = tmp_path / "multi"
    _train_two_processes(write_config(tmp_path / "cfg.py", "lm", CFG), str(workdir))
    chunks = sorted((workdir / "checkpoints" / "4" / "model").glob("ocdbt.process_*/d/*"),
                    key=lambda p: p.stat().st_size)
    with open(chunks[-1], "r+b") as f:
        f.truncate(chunks[-1].stat().st_size // 2)
    more = {**CFG, "num_steps": 6}
    outs = _train_two_processes(write_config(tmp_path / "more.py", "lm", more), str(workdir))
    assert "resuming from step 2" in outs[0][0]
    assert all("CORRUPT CHECKPOINT: step 4" in err for _, err in outs)
    names = sorted(p.name for p in (workdir / "checkpoints").iterdir())
    assert names == ["4", "4.corrupt-1", "6"]  # keep=2: step 2 went when 6 was saved
    single = str(tmp_path / "single")
    run(tiny_config("lm", more), single)
    got, want = losses(str(workdir)), losses(single)
    assert sorted(got) == list(range(1, 7))
    np.testing.assert_allclose([got[s] for s in range(1, 7)], [want[s] for s in range(1, 7)],
                               rtol=1e-5)
