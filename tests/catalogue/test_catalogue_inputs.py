"""Bad inputs through ``jaxmm.cli.main`` in-process: config, overrides, data, tokenizer,
checkpoint, conversion, generation, model shapes and the filesystem.

Each case checks the exit status, a keyword of the one error line, that no
traceback is printed and, against an existing workdir, that its files are
unchanged. Most fail before anything is compiled.
"""

from __future__ import annotations

import json
import os

import pytest

from tests.catalogue.catalogue_tools import (
    assert_fails,
    assert_untouched,
    run_inprocess,
)
from tests.train.helpers import ROOT, write_config

VIT = os.path.join(ROOT, "configs", "vit_classification.py") + ":tiny,data=synthetic"

# -- config files --------------------------------------------------------------------


@pytest.mark.parametrize("text, keywords", [
    ("x = 1\n", ("has no get_config",)),
    ("def get_config(arg=None):\n    return {'a': 1}\n", ("returned dict", "ConfigDict")),
    ("import no_such_module_xyz\n", (":1", "importing it failed", "ModuleNotFoundError")),
])
def test_bad_config_files(capsys, tmp_path, text, keywords):
    path = tmp_path / "cfg.py"
    path.write_text(text)
    res = run_inprocess(capsys, "train", "--config", str(path), "--workdir", str(tmp_path / "w"))
    assert_fails(res, 2, *keywords, command="train")
    assert not (tmp_path / "w").exists()


def test_missing_config_file(capsys, tmp_path):
    res = run_inprocess(capsys, "config", "--config", str(tmp_path / "nope.py"))
    assert_fails(res, 2, "does not exist", "configs/*.py", command="config")


def test_unknown_config_argument_names_the_nearest(capsys):
    res = run_inprocess(capsys, "config", "--config", VIT.replace(",data", ",steps=3,dta"))
    assert_fails(res, 2, "unknown config argument 'dta'", "did you mean 'data'?")


# -- overrides ---------------------------------------------------------------------------


@pytest.mark.parametrize("override, keywords", [
    ("num_steps=None", ("num_steps does not accept None", "expected int")),
    ("optimizer.learning_rate=fast", ("cannot parse as float",)),
    ("log.progress=maybe", ("expected a boolean",)),
    ("model.config.num_layers=2.5", ("expected int, got float",)),
    ("model.config.num_layers=None", ("does not accept None",)),
    ("mesh=3", ("names a whole section",)),
    ("optimizer.dtype=bfloat16", ("unknown config key 'dtype'",)),  # no unrelated hint
    ("zzzzzz=1", ("unknown config key 'zzzzzz'",)),
])
def test_bad_overrides(capsys, override, keywords):
    res = run_inprocess(capsys, "config", "--config", VIT, f"--config.{override}")
    line = assert_fails(res, 2, *keywords, command="config")
    if "unknown config key" in keywords[0]:
        assert "did you mean" not in line.lower()  # nothing is close: no hint at all


def test_none_tuples_and_booleans_parse_for_keys_that_take_them(capsys):
    res = run_inprocess(capsys, "config", "--config", VIT, "--json",
                        "--config.eval.num_batches=None", "--config.optimizer.clip_norm=none",
                        "--config.optimizer.freeze=embedding,cls_token",
                        "--config.optimizer.weight_decay_exclude=(bias, norm)",
                        "--config.distributed.local_device_ids=[0, 1]",
                        "--config.log.progress=no", "--config.model.config.scan_layers=true",
                        "--config.eval.evaluators.loss.num_batches=null")
    assert res.code == 0, res.err
    config = json.loads(res.out)
    assert config["eval"]["num_batches"] is None and config["optimizer"]["clip_norm"] is None
    assert config["optimizer"]["freeze"] == ["embedding", "cls_token"]
    assert config["optimizer"]["weight_decay_exclude"] == ["bias", "norm"]
    assert config["distributed"]["local_device_ids"] == [0, 1]
    assert config["log"]["progress"] is False and config["model"]["config"]["scan_layers"] is True
    assert config["eval"]["evaluators"]["loss"]["num_batches"] is None


# -- data and tokenizer ------------------------------------------------------------------


def test_unknown_dataset_in_an_existing_data_dir(capsys, tmp_path, trained_run):
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    config = write_config(tmp_path / "c.py", "lm",
                          {"data": {"name": "no_such_dataset", "data_dir": str(data_dir)}})
    res = run_inprocess(capsys, "train", "--config", config, "--workdir", trained_run.workdir,
                        "--config.allow_changes=true")  # past the resume check to the data's
    assert_fails(res, 2, "'no_such_dataset' is not prepared in", str(data_dir))
    assert_untouched(trained_run.workdir, trained_run.before)


def test_data_dir_that_does_not_exist(capsys, tmp_path):
    config = write_config(tmp_path / "c.py", "lm",
                          {"data": {"name": "x", "data_dir": str(tmp_path / "nope")}})
    res = run_inprocess(capsys, "train", "--config", config, "--workdir", str(tmp_path / "w"))
    assert_fails(res, 2, "data dir", "does not exist")


def test_unknown_data_key_names_the_nearest(capsys, tmp_path):
    config = write_config(tmp_path / "c.py", "lm", {"data": {"name": "x", "data_dri": "d"}})
    res = run_inprocess(capsys, "train", "--config", config, "--workdir", str(tmp_path / "w"))
    assert_fails(res, 2, "'data_dri' (did you mean 'data_dir'?)")


def test_tokenizer_larger_than_the_model_vocabulary(capsys, tmp_path):
    """Ids past the embedding table would be clamped silently inside XLA: refused up front."""
    from jaxmm.data import tokenizers

    (tmp_path / "corpus.txt").write_text("the quick brown fox jumps over the lazy dog\n" * 4)
    tok = tokenizers.train_tokenizer("wordpiece", str(tmp_path / "corpus.txt"), 96,
                                     out_dir=str(tmp_path / "tok"), min_frequency=1)
    config = write_config(tmp_path / "c.py", "lm", {"tokenizer": str(tmp_path / "tok"),
                                                    "model.config.vocab_size": 40})
    res = run_inprocess(capsys, "train", "--config", config, "--workdir", str(tmp_path / "w"))
    assert_fails(res, 2, f"has {tok.vocab_size} ids", "vocab_size is 40",
                 f"vocab_size={tok.vocab_size}")
    assert not (tmp_path / "w").exists()


def test_empty_dataset_is_refused_when_built(capsys, tmp_path):
    (tmp_path / "empty.txt").write_text("")
    res = run_inprocess(capsys, "data", "build-text", "--root", str(tmp_path), "--data-dir",
                        str(tmp_path / "data"), "--split", "train=empty.txt")
    assert_fails(res, 2, "no usable examples", command="data")


@pytest.mark.parametrize("args, keywords", [
    (("info", "--data-dir", "{tmp}", "--name", "nope/small"), ("no prepared dataset",)),
    (("build-text", "--root", "{tmp}", "--data-dir", "{tmp}/d", "--split", "train"),
     ("--split 'train'", "NAME=INPUT")),
])
def test_bad_data_commands(capsys, tmp_path, args, keywords):
    res = run_inprocess(capsys, "data", *(a.format(tmp=tmp_path) for a in args))
    assert_fails(res, 2, *keywords, command="data")


@pytest.mark.parametrize("args", [
    ("info", "--tokenizer", "{tmp}/no_tokenizer"),
    ("train", "--kind", "bpe", "--files", "{tmp}/no_corpus.txt", "--vocab-size", "50",
     "--out", "{tmp}/tok"),
])
def test_missing_tokenizer_files(capsys, tmp_path, args):
    res = run_inprocess(capsys, "tokenizer", *(a.format(tmp=tmp_path) for a in args))
    assert_fails(res, 2, "does not exist", str(tmp_path), command="tokenizer")


# -- checkpoints -------------------------------------------------------------------------


def test_eval_of_a_step_that_is_not_there(capsys, trained_run):
    res = run_inprocess(capsys, "eval", "--config", trained_run.config, "--workdir",
                        trained_run.workdir, "--step", "99")
    assert_fails(res, 3, "no checkpoint of step 99", "2, 4", command="eval")
    assert_untouched(trained_run.workdir, trained_run.before)


def test_eval_of_a_mistyped_workdir_creates_nothing(capsys, trained_run, tmp_path):
    res = run_inprocess(capsys, "eval", "--config", trained_run.config, "--workdir",
                        str(tmp_path / "runz"))
    assert_fails(res, 3, "does not exist", command="eval")
    assert not (tmp_path / "runz").exists()
    res = run_inprocess(capsys, "eval", "--config", trained_run.config, "--workdir",
                        str(tmp_path), "--params", str(tmp_path / "no_export"))
    assert_fails(res, 3, "--params", "is not a folder")
