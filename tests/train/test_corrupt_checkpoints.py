"""Unreadable checkpoints: moved aside (never deleted), the run resumes from the newest
readable one and continues exactly like an uninterrupted run; with none readable, or
``checkpoint.on_corrupt="fail"``, the run stops and the workdir is untouched."""

import glob
import logging
import os
import shutil

import pytest

from jaxmm.config import ConfigError
from jaxmm.train import evaluate_checkpoint, run
from jaxmm.train.checkpoint import CheckpointError
from tests.train.helpers import losses, snapshot, tiny_config

CFG = {"checkpoint.every_steps": 2, "checkpoint.keep": 3}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A workdir with checkpoints 2, 4, 6; the uninterrupted 8-step curve; a step 6 of
    another model (wider)."""
    root = tmp_path_factory.mktemp("corrupt")
    trained, reference, other = (str(root / n) for n in ("trained", "reference", "other"))
    run(tiny_config("lm", {**CFG, "num_steps": 6}), trained)
    run(tiny_config("lm", {**CFG, "num_steps": 8}), reference)
    run(tiny_config("lm", {**CFG, "num_steps": 6, "model.config.d_model": 48}), other)
    curve = losses(reference)
    assert sorted(curve) == list(range(1, 9))
    return trained, curve, os.path.join(other, "checkpoints", "6")


def _truncate_chunk(step_dir, _):
    chunk = max(glob.glob(f"{step_dir}/model/ocdbt.process_0/d/*"), key=os.path.getsize)
    with open(chunk, "r+b") as f:
        f.truncate(os.path.getsize(chunk) // 2)
    return f"{step_dir}/model/"


def _remove_metadata(step_dir, _):
    os.remove(f"{step_dir}/model/_METADATA")
    return f"missing file {step_dir}/model/_METADATA"


def _empty(step_dir, _):
    shutil.rmtree(step_dir)
    os.makedirs(step_dir)
    os.makedirs(f"{step_dir}.corrupt-1")  # an earlier incident: the new name must not clash
    return "missing file"


def _other_model(step_dir, other_step_dir):
    shutil.rmtree(step_dir)
    shutil.copytree(other_step_dir, step_dir)
    return "is not compatible with the stored shape"


@pytest.mark.slow
@pytest.mark.parametrize("corrupt", [_truncate_chunk, _remove_metadata, _empty, _other_model],
                         ids=["truncated_chunk", "missing_metadata", "empty_step_dir",
                              "other_model"])
def test_unreadable_latest_is_moved_aside_and_run_continues_exactly(tmp_path, runs, corrupt,
                                                                    caplog):
    trained, reference, other_step = runs
    workdir = str(tmp_path / "run")
    shutil.copytree(trained, workdir)
    step_dir = os.path.join(workdir, "checkpoints", "6")
    reason = corrupt(step_dir, other_step)
    corrupted = snapshot(step_dir)
    moved = step_dir + (".corrupt-2" if os.path.isdir(step_dir + ".corrupt-1") else ".corrupt-1")

    with caplog.at_level(logging.WARNING, logger="jaxmm.train.checkpoint"):
        summary = run(tiny_config("lm", {**CFG, "num_steps": 8}), workdir)

    warning = " ".join(r.getMessage() for r in caplog.records)
    assert "CORRUPT CHECKPOINT: step 6" in warning and reason in warning
    assert f"Moved it aside to {moved}" in warning and "resuming from step 4" in warning
    assert snapshot(moved) == corrupted  # renamed, never deleted or changed
    assert losses(workdir) == reference  # continued exactly from step 4
    assert summary["step"] == 8 and 8 in summary["checkpoints"]
    assert os.path.exists(os.path.join(workdir, "config.4.json"))


def _break_every_step(workdir):
    ckpts = os.path.join(workdir, "checkpoints")
    _truncate_chunk(os.path.join(ckpts, "6"), None)
    _remove_metadata(os.path.join(ckpts, "4"), None)
    shutil.rmtree(os.path.join(ckpts, "2"))
    os.makedirs(os.path.join(ckpts, "2"))


def _break_latest(workdir):
    _remove_metadata(os.path.join(workdir, "checkpoints", "6"), None)


def _truncate_latest(workdir):
    _truncate_chunk(os.path.join(workdir, "checkpoints", "6"), None)


def _resume(workdir, **overrides):
    return run(tiny_config("lm", {**CFG, "num_steps": 8, **overrides}), workdir)


def _evaluate(workdir):
    return evaluate_checkpoint(tiny_config("lm", CFG), workdir)


@pytest.mark.slow
@pytest.mark.parametrize("breaks,call,match", [
    # No readable step: stop, never start from scratch over them.
    (_break_every_step, _resume,
     r"No checkpoint in .* can be read \(step 6: .*; step 4: .*; step 2: .*nothing was changed"),
    (_break_latest, lambda w: _resume(w, **{"checkpoint.on_corrupt": "fail"}),
     r"step 6 .* cannot be read: .*_METADATA.*Nothing was changed.*on_corrupt=fallback"),
    (_truncate_latest, _evaluate, r"step 6 .* cannot be read: .*6/model/.*--step 4"),
], ids=["none_readable", "on_corrupt_fail", "eval_unreadable_step"])
def test_unreadable_checkpoints_stop_and_touch_nothing(tmp_path, runs, breaks, call, match):
    workdir = str(tmp_path / "run")
    shutil.copytree(runs[0], workdir)
    breaks(workdir)
    before = snapshot(workdir)
    with pytest.raises(CheckpointError, match=match):
        call(workdir)
    assert snapshot(workdir) == before
    if call is _evaluate:  # an older step still evaluates
        assert evaluate_checkpoint(tiny_config("lm", CFG), workdir, step=4)["step"] == 4


def test_bad_on_corrupt_value_is_refused(tmp_path):
    with pytest.raises(ConfigError, match=r"checkpoint.on_corrupt must be one of"):
        run(tiny_config("lm", {"checkpoint.on_corrupt": "ignore"}), str(tmp_path / "run"))
