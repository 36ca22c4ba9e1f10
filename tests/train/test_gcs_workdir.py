"""A run whose workdir is a gs:// URL, on an in-memory fake GCS (tests/gcs_fake.py).

The CLI trains half the steps into gs://BUCKET/run, then the same command with the
full step count resumes from the bucket's checkpoint; the loss curve must equal an
uninterrupted local run's step for step, every output must be in the bucket, and
nothing may be created locally (no ``./gs:`` folder).
"""

import json
import os

import pytest

from jaxmm.train import run
from tests.gcs_fake import fake_gcs, gcs_listing
from tests.train.helpers import ROOT, losses, run_cli, tiny_config, write_config

STEPS = 8
CFG = {"num_steps": STEPS, "checkpoint.every_steps": 4, "checkpoint.keep": 3,
       "log.tensorboard": True, "checkpoint.export_params": True}


@pytest.mark.slow
def test_gs_workdir_trains_resumes_and_evaluates_in_the_bucket(tmp_path):
    reference = str(tmp_path / "local")
    run(tiny_config("lm", CFG), reference)
    expected = losses(reference)
    assert sorted(expected) == list(range(1, STEPS + 1))

    cfg = write_config(tmp_path / "cfg.py", "lm", CFG)
    workdir = "gs://jaxmm-e2e/runs/lm"
    with fake_gcs("jaxmm-e2e") as env:
        first = run_cli("train", "--config", cfg, "--workdir", workdir,
                        f"--config.num_steps={STEPS // 2}", **env)
        assert first.returncode == 0, first.stderr[-3000:]
        files = gcs_listing(env, workdir)
        assert {"config.json", "config.0.json", "metrics.jsonl", "summary.json",
                "export/model.json", "checkpoints/4/meta/metadata",
                "checkpoints/4/model/_METADATA"} <= set(files)
        assert json.loads(files["summary.json"])["checkpoints"] == [4]

        again = run_cli("train", "--config", cfg, "--workdir", workdir, **env)
        assert again.returncode == 0, again.stderr[-3000:]
        assert "resuming from step 4" in again.stdout
        files = gcs_listing(env, workdir)
        assert {"config.4.json", "checkpoints/8/train/_METADATA",
                "checkpoints/8/data/process_0-of-1.json"} <= set(files)
        assert any(n.startswith("tensorboard/events.out.tfevents.") for n in files)
        records = [json.loads(line) for line in files["metrics.jsonl"].decode().splitlines()]
        got = {r["step"]: r["train/loss"] for r in records if "train/loss" in r}
        assert got == expected  # resumed from the bucket: identical, step for step
        assert json.loads(files["summary.json"])["step"] == STEPS

        evaluated = run_cli("eval", "--config", cfg, "--workdir", workdir, **env)
        assert evaluated.returncode == 0, evaluated.stderr[-3000:]
        result = json.loads(gcs_listing(env, workdir)["eval_8.json"])
        assert result["step"] == STEPS and result == json.loads(evaluated.stdout)
    assert not os.path.exists(os.path.join(ROOT, "gs:"))  # the URL never became a local path
