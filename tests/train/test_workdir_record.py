"""The workdir's record: config.json is written only by a run that started, a failed run
puts it back, resuming prints what changed and refuses changes that alter what the
checkpoints mean, and every start keeps its config as config.<step>.json."""

import json
import os
import shutil

import ml_collections
import pytest

from jaxmm.config import ConfigError
from jaxmm.train import NonFiniteError, run
from tests.train.helpers import losses, run_cli, snapshot, tiny_config, write_config

CFG = {"num_steps": 4, "checkpoint.every_steps": 2, "data.image_size": 16}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A finished 4-step classification run (checkpoints 2 and 4)."""
    workdir = str(tmp_path_factory.mktemp("record") / "run")
    run(tiny_config("classification", CFG), workdir)
    return workdir


def _copy(trained, tmp_path):
    workdir = str(tmp_path / "run")
    shutil.copytree(trained, workdir)
    return workdir


def _read(path):
    with open(path) as f:
        return f.read()


def test_a_new_run_records_its_config(trained):
    record = json.loads(_read(os.path.join(trained, "config.json")))
    assert record["num_steps"] == 4 and record["task"]["name"] == "classification"
    assert record["checkpoint"]["on_corrupt"] == "fallback" and record["allow_changes"] is False
    assert _read(os.path.join(trained, "config.0.json")) == _read(
        os.path.join(trained, "config.json"))


@pytest.mark.parametrize("overrides,error,match", [
    ({"batch_size": 12}, ConfigError, "not divisible by the data-parallel size"),
    ({"model.config.num_heads": 3}, ConfigError, "not divisible by num_heads"),
    ({"data": ml_collections.ConfigDict({"name": "no_such_dataset", "data_dir": "/nonexistent"}),
      "allow_changes": True}, Exception, "no_such_dataset"),
    ({"tokenizer": "/nonexistent/tokenizer"}, Exception, "does not exist"),
], ids=["batch_not_divisible", "bad_head_count", "bad_data", "missing_tokenizer"])
def test_a_run_that_fails_before_starting_leaves_the_workdir_untouched(
        trained, tmp_path, overrides, error, match):
    workdir = _copy(trained, tmp_path)
    before = snapshot(workdir)
    with pytest.raises(error, match=match):
        run(tiny_config("classification", {**CFG, "num_steps": 8, **overrides}), workdir)
    assert snapshot(workdir) == before


def test_a_run_that_fails_before_its_first_save_puts_the_record_back(trained, tmp_path):
    # Resumed at step 4, batch 5 (step 6) is NaN: the run stops before saving step 6.
    workdir = _copy(trained, tmp_path)
    before = snapshot(workdir)
    with pytest.raises(NonFiniteError, match="step 6"):
        run(tiny_config("classification", {**CFG, "num_steps": 8, "data.nan_at_batch": 5,
                                           "allow_changes": True}), workdir)
    after = snapshot(workdir)
    record = {k: v for k, v in after.items() if k.startswith(("config", "checkpoints"))}
    assert record == {k: v for k, v in before.items() if k.startswith(("config", "checkpoints"))}
    assert not os.path.exists(os.path.join(workdir, "config.4.json"))


def test_resuming_with_safe_changes_continues_and_keeps_the_history(trained, tmp_path, capsys):
    workdir = _copy(trained, tmp_path)
    first = _read(os.path.join(workdir, "config.json"))
    run(tiny_config("classification", {**CFG, "num_steps": 6, "log.every_steps": 2,
                                       "eval.num_batches": 1}), workdir)
    out = capsys.readouterr().out
    assert "the config differs from" in out and "in 3 key(s)" in out
    assert "num_steps: 4 -> 6" in out and "log.every_steps: 1 -> 2" in out
    assert "eval.num_batches: 2 -> 1" in out and "resuming from step 4" in out
    latest = json.loads(_read(os.path.join(workdir, "config.json")))
    assert latest["num_steps"] == 6 and latest["log"]["every_steps"] == 2
    assert _read(os.path.join(workdir, "config.4.json")) == _read(
        os.path.join(workdir, "config.json"))
    assert _read(os.path.join(workdir, "config.0.json")) == first  # the history is kept
    assert max(losses(workdir)) == 6


def test_resuming_with_unsafe_changes_stops_and_touches_nothing(trained, tmp_path):
    workdir = _copy(trained, tmp_path)
    before = snapshot(workdir)
    with pytest.raises(ConfigError, match=r"changes what its checkpoints mean: "
                                          r"model.config.mlp_dim \(64 -> 128\), "
                                          r"optimizer.name \(\"adamw\" -> \"sgd\"\)\. .*"
                                          r"--config.allow_changes=true"):
        run(tiny_config("classification", {**CFG, "num_steps": 6, "optimizer.name": "sgd",
                                           "model.config.mlp_dim": 128}), workdir)
    assert snapshot(workdir) == before


def test_allow_changes_resumes_with_the_new_config(trained, tmp_path, capsys):
    workdir = _copy(trained, tmp_path)
    run(tiny_config("classification", {**CFG, "num_steps": 6, "allow_changes": True,
                                       "optimizer.learning_rate": 1e-3}), workdir)
    out = capsys.readouterr().out
    assert "optimizer.learning_rate: 0.003 -> 0.001" in out and "resuming from step 4" in out
    record = json.loads(_read(os.path.join(workdir, "config.4.json")))
    assert record["optimizer"]["learning_rate"] == 1e-3 and record["allow_changes"] is True


def test_workdir_that_is_a_file_is_refused(tmp_path):
    path = tmp_path / "not_a_dir"
    path.write_text("keep me")
    with pytest.raises(ConfigError, match="exists and is not a directory"):
        run(tiny_config("lm"), str(path))
    assert path.read_text() == "keep me"


@pytest.mark.slow
@pytest.mark.parametrize("make", ["empty", "missing"])
def test_eval_without_checkpoints_is_one_line_and_creates_nothing(tmp_path, make):
    cfg = write_config(tmp_path / "cfg.py")
    workdir = tmp_path / "run"
    if make == "empty":
        workdir.mkdir()
    res = run_cli("eval", "--config", cfg, "--workdir", str(workdir))
    assert res.returncode == 3, res.stderr  # EXIT_CHECKPOINT
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    expected = "No checkpoint in" if make == "empty" else "does not exist"
    assert len(lines) == 1 and expected in lines[0], res.stderr
    assert "Traceback" not in res.stderr and "cannot schedule" not in res.stderr
    assert (os.listdir(workdir) == []) if make == "empty" else not workdir.exists()


@pytest.mark.slow
def test_config_command_prints_the_config_train_records(tmp_path):
    """``jaxmm config --json`` with train's arguments prints exactly the config.json that
    ``jaxmm train`` then writes (every default filled in, the overrides applied)."""
    cfg = write_config(tmp_path / "cfg.py", "lm", {"num_steps": 2})
    overrides = ("--config.model.config.num_layers=1", "--config.eval.num_batches=None",
                 "--config.optimizer.clip_norm=0.5")
    printed = run_cli("config", "--config", cfg, *overrides, "--json", devices=1)
    assert printed.returncode == 0, printed.stderr
    trained = run_cli("train", "--config", cfg, "--workdir", str(tmp_path / "run"), *overrides,
                      devices=1)
    assert trained.returncode == 0, trained.stderr[-3000:]
    recorded = json.loads(_read(os.path.join(tmp_path, "run", "config.json")))
    assert json.loads(printed.stdout) == recorded
    assert recorded["model"]["config"]["num_layers"] == 1
    assert recorded["optimizer"]["clip_norm"] == 0.5 and recorded["eval"]["num_batches"] is None
