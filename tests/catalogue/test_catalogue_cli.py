"""Bad inputs through the real ``jaxmm`` process (``python -m jaxmm``), as a user meets them.

A representative subset runs as subprocesses: the top-level handler, the exit
status and the absence of tracebacks (also from libraries' background threads)
are what the user sees. The in-process catalogue covers the rest.
"""

from __future__ import annotations

import json
import os
import pickle

import pytest

from tests.catalogue.catalogue_tools import (
    assert_fails,
    assert_untouched,
    namespaces_work,
    run_jaxmm,
    snapshot,
)
from tests.train.helpers import write_config

# -- config ------------------------------------------------------------------------


def test_config_file_with_a_syntax_error_names_file_and_line(tmp_path):
    path = tmp_path / "broken.py"
    path.write_text("import ml_collections\n\ndef get_config(arg=None):\n    c = (\n    return c\n")
    res = run_jaxmm("train", "--config", str(path), "--workdir", str(tmp_path / "w"))
    assert_fails(res, 2, f"{path}:4", "syntax error", command="train")
    assert not (tmp_path / "w").exists()


def test_get_config_that_raises_names_file_line_and_exception(tmp_path):
    path = tmp_path / "raises.py"
    path.write_text("def get_config(arg=None):\n    return {'a': 1}['b']\n")
    res = run_jaxmm("train", "--config", str(path), "--workdir", str(tmp_path / "w"))
    assert_fails(res, 2, f"{path}:2", "get_config()", "KeyError", command="train")
    assert not (tmp_path / "w").exists()


def test_unknown_key_names_the_nearest_one(trained_run):
    res = run_jaxmm("train", "--config", trained_run.config, "--workdir", trained_run.workdir,
                    "--config.optimizer.learning_rat=1e-3")
    assert_fails(res, 2, "'learning_rat'", "did you mean 'learning_rate'?")
    assert_untouched(trained_run.workdir, trained_run.before)


# -- data, tokenizer, checkpoint -----------------------------------------------------


def test_missing_data_dir_says_how_to_set_it(trained_run, tmp_path):
    config = write_config(tmp_path / "scenes.py", "lm", {"data": {"name": "jaxmm_scenes/tiny"}})
    empty = tmp_path / "no_datasets_here"
    empty.mkdir()
    # allow_changes: get past the resume check (another dataset) to the data's own error
    res = run_jaxmm("train", "--config", config, "--workdir", trained_run.workdir,
                    "--config.allow_changes=true",
                    env={"TFDS_DATA_DIR": str(empty), "JAXMM_DATA_DIR": ""})
    line = assert_fails(res, 2, "jaxmm_scenes", "no data_dir is set", "--config.data.data_dir=DIR")
    assert "None" not in line
    assert_untouched(trained_run.workdir, trained_run.before)


def test_missing_tokenizer_leaves_the_workdir_alone(trained_run, tmp_path):
    res = run_jaxmm("train", "--config", trained_run.config, "--workdir", trained_run.workdir,
                    f"--config.tokenizer={tmp_path / 'no_tokenizer'}")
    assert_fails(res, 2, "tokenizer", "does not exist")
    assert_untouched(trained_run.workdir, trained_run.before)


def test_eval_on_an_empty_workdir_writes_nothing(trained_run, tmp_path):
    workdir = tmp_path / "empty"
    workdir.mkdir()
    res = run_jaxmm("eval", "--config", trained_run.config, "--workdir", str(workdir))
    assert_fails(res, 3, "no checkpoint", "train first", command="eval")
    assert os.listdir(workdir) == []  # no checkpoints/ created, no eval_*.json


@pytest.mark.parametrize("command", ["train", "eval"])
def test_no_readable_checkpoint_stops_and_touches_nothing(trained_run, command):
    """Every step's ``_METADATA`` is gone: exit 3 with one line naming the steps, no
    traceback (also none from Orbax's background threads at exit), nothing renamed."""
    steps = os.path.join(trained_run.workdir, "checkpoints")
    for step in ("2", "4"):
        os.remove(os.path.join(steps, step, "model", "_METADATA"))
    before = snapshot(trained_run.workdir)
    res = run_jaxmm(command, "--config", trained_run.config, "--workdir", trained_run.workdir,
                    *(["--config.num_steps=6"] if command == "train" else []))
    if command == "train":
        assert_fails(res, 3, "no checkpoint", "can be read", "step 4", "step 2",
                     command=command)
    else:  # eval reads the latest step only, and names the older one to try
        assert_fails(res, 3, "step 4", "cannot be read", "--step", command=command)
    assert_untouched(trained_run.workdir, before)

# -- conversion and generation -------------------------------------------------------


class _Payload:
    """Unpickling this would create the marker folder."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return os.mkdir, (self.marker,)


def test_hostile_pickle_is_refused_and_its_payload_never_runs(tmp_path):
    pytest.importorskip("torch")
    hf = tmp_path / "hf"
    hf.mkdir()
    marker = tmp_path / "payload_ran"
    (hf / "config.json").write_text(json.dumps(
        {"model_type": "gpt2", "vocab_size": 16, "n_embd": 8, "n_layer": 1, "n_head": 2,
         "n_positions": 8}))
    (hf / "pytorch_model.bin").write_bytes(
        pickle.dumps({"wte.weight": _Payload(str(marker))}, protocol=2))
    res = run_jaxmm("convert", "from-hf", str(hf), str(tmp_path / "out"), "--allow-pickle")
    assert_fails(res, 2, "pytorch_model.bin", "refused", "nothing in it was run",
                 command="convert")
    assert not marker.exists()
    assert not (tmp_path / "out").exists()


def test_generate_with_a_hub_id_names_the_missing_model_folder():
    res = run_jaxmm("generate", "gpt2", "--prompt", "hello")
    line = assert_fails(res, 2, "model folder 'gpt2' does not exist", "hub", command="generate")
    assert "tokenizer" not in line.split("Hub")[0].lower()


# -- filesystem ----------------------------------------------------------------------


def test_workdir_that_is_a_file(trained_run, tmp_path):
    path = tmp_path / "a_file"
    path.write_text("not a folder")
    res = run_jaxmm("train", "--config", trained_run.config, "--workdir", str(path))
    assert_fails(res, 2, "--workdir", "is a file, not a folder")
    assert path.read_text() == "not a folder"


def test_read_only_workdir(trained_run):
    """A workdir on a read-only file system: one line, nothing changed. As root, chmod
    does not stop writes, so the workdir is bind-mounted read-only in a private mount
    namespace (``unshare``); without root, chmod is enough."""
    command = ("train", "--config", trained_run.config, "--workdir", trained_run.workdir,
               "--config.num_steps=6")
    if os.geteuid() != 0:
        os.chmod(trained_run.workdir, 0o555)
        try:
            res = run_jaxmm(*command)
        finally:
            os.chmod(trained_run.workdir, 0o755)
        keyword = "permission denied"
    elif namespaces_work():
        w = trained_run.workdir
        mount = f"mount --bind {w} {w} && mount -o remount,ro,bind {w} && exec \"$@\""
        res = run_jaxmm(*command, prefix=("unshare", "-rm", "sh", "-c", mount, "sh"))
        keyword = "read-only file system"
    else:
        pytest.skip("running as root (chmod does not stop writes) and unshare -rm is not "
                    "permitted here, so no read-only file system can be made")
    assert_fails(res, 2, keyword, trained_run.workdir)
    assert_untouched(trained_run.workdir, trained_run.before)


@pytest.mark.skipif(not namespaces_work(), reason="unshare -rm (a private tmpfs) is not "
                    "permitted here; test_catalogue_inputs covers disk full with a patched "
                    "ENOSPC")
def test_disk_full_during_a_checkpoint(trained_run, tmp_path):
    """A 96 KiB tmpfs as the workdir: the first checkpoint does not fit."""
    workdir = tmp_path / "small_disk"
    workdir.mkdir()
    mount = f"mount -t tmpfs -o size=96k tmpfs {workdir} && exec \"$@\""
    res = run_jaxmm("train", "--config", trained_run.config, "--workdir", str(workdir / "w"),
                    prefix=("unshare", "-rm", "sh", "-c", mount, "sh"))
    assert_fails(res, 2, "no space left on the device", str(workdir))
    assert snapshot(str(workdir)) == {}  # the tmpfs vanished with its namespace


# -- --debug ---------------------------------------------------------------------------


def test_debug_shows_the_traceback_and_keeps_the_exit_code(tmp_path):
    path = tmp_path / "raises.py"
    path.write_text("def get_config(arg=None):\n    raise RuntimeError('boom')\n")
    res = run_jaxmm("train", "--config", str(path), "--workdir", str(tmp_path / "w"),
                    env={"JAXMM_DEBUG": "1"})
    assert res.code == 2
    assert "Traceback" in res.err and "RuntimeError: boom" in res.err
    assert res.err.rstrip().splitlines()[-1].startswith("jaxmm train: error: ")
