"""Bad inputs, continued: conversion, generation, model shapes, the filesystem, the
handler itself (Ctrl-C, a bug, --debug) and the exception family's API."""

from __future__ import annotations

import builtins
import errno
import json
import os
import pickle

import numpy as np
import pytest

from tests.catalogue.catalogue_tools import assert_fails, assert_untouched, run_inprocess
from tests.train.helpers import ROOT

VIT = os.path.join(ROOT, "configs", "vit_classification.py") + ":tiny,data=synthetic"
GPT2_CONFIG = {"model_type": "gpt2", "vocab_size": 16, "n_embd": 8, "n_layer": 1, "n_head": 2,
               "n_positions": 8}

# -- conversion --------------------------------------------------------------------------


def _hf_folder(path, config: dict, files: dict[str, bytes]) -> str:
    path.mkdir()
    (path / "config.json").write_text(json.dumps(config))
    for name, data in files.items():
        (path / name).write_bytes(data)
    return str(path)


@pytest.mark.parametrize("config, files, keywords", [
    ({"model_type": "no_such_family"}, {"model.safetensors": b""},
     ("unsupported model_type 'no_such_family'",)),
    ({"model_type": "gtp2"}, {"model.safetensors": b""}, ("closest supported: gpt2",)),
    (GPT2_CONFIG, {"model.safetensors": b"\x08\x00\x00\x00\x00\x00\x00\x00not json"},
     ("corrupt or not a safetensors file",)),
    (GPT2_CONFIG, {"pytorch_model.bin": b"whatever"}, ("pickle", "--allow-pickle")),
    (GPT2_CONFIG, {}, ("has no weights",)),
])
def test_bad_hugging_face_folders(capsys, tmp_path, config, files, keywords):
    hf = _hf_folder(tmp_path / "hf", config, files)
    res = run_inprocess(capsys, "convert", "from-hf", hf, str(tmp_path / "out"))
    assert_fails(res, 2, *keywords, command="convert")
    assert not (tmp_path / "out").exists()


def test_convert_refuses_to_overwrite(capsys, tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    hf = _hf_folder(tmp_path / "hf", GPT2_CONFIG, {})
    res = run_inprocess(capsys, "convert", "from-hf", hf, str(tmp_path / "out"))
    assert_fails(res, 2, "not empty", "--overwrite")
    assert os.listdir(tmp_path / "out") == ["keep.txt"]


def test_hostile_pickle_refused_through_the_api(tmp_path):
    pytest.importorskip("torch")
    from jaxmm.convert import from_hf
    from jaxmm.errors import ConversionError

    marker = tmp_path / "payload_ran"

    class Payload:
        def __reduce__(self):
            return os.mkdir, (str(marker),)

    hf = _hf_folder(tmp_path / "hf", GPT2_CONFIG,
                    {"pytorch_model.bin": pickle.dumps({"w": Payload()}, protocol=2)})
    with pytest.raises(ConversionError, match="Nothing in it was run") as error:
        from_hf(hf, allow_pickle=True)
    assert "posix.mkdir" in str(error.value) or "GLOBAL" in str(error.value)
    assert not marker.exists()


# -- generation --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def short_context_lm():
    import jax
    import jax.numpy as jnp

    from jaxmm.models import registry

    model = registry.build("gpt", "tiny", max_position_embeddings=16, vocab_size=32,
                           num_layers=1, d_model=32, num_heads=2, mlp_dim=64)
    return model, model.init(jax.random.PRNGKey(0), jnp.ones((1, 4), jnp.int32))["params"]


@pytest.mark.parametrize("prompt, new, fix", [
    (12, 8, "at most 8 tokens, or lower max_new_tokens to at most 4"),
    (20, 8, "shorten the prompt to at most 8 tokens"),
    (12, 40, "lower max_new_tokens to at most 4"),
    (20, 40, "together they are at most 16"),
])
def test_prompt_too_long_for_the_model(short_context_lm, prompt, new, fix):
    import jaxmm
    from jaxmm.errors import InputError

    model, params = short_context_lm
    with pytest.raises(InputError) as error:
        jaxmm.generate(model, params, np.ones((1, prompt), np.int32), max_new_tokens=new)
    message = str(error.value)
    assert fix in message.lower() and "-" not in message.replace("max_new_tokens", "")
    assert error.value.exit_code == 2


@pytest.mark.parametrize("knobs, keyword", [
    ({"num_beams": 0}, "num_beams must be an int >= 1"),
    ({"do_sample": True, "top_p": 2.0}, "top_p must be in (0, 1]"),
    ({"do_sample": True, "temperature": -1.0}, "temperature must be a float > 0"),
    ({"num_beams": 2, "num_return_sequences": 3}, "cannot exceed num_beams"),
    ({"num_beam": 2}, "Did you mean 'num_beams'?"),
])
def test_bad_generation_knobs(short_context_lm, knobs, keyword):
    import jaxmm
    from jaxmm.errors import ConfigError

    model, params = short_context_lm
    with pytest.raises(ConfigError) as error:
        jaxmm.generate(model, params, np.ones((1, 3), np.int32), max_new_tokens=2, **knobs)
    assert keyword in str(error.value)


@pytest.mark.parametrize("args, keywords", [
    (("{run}",), ("at least one --prompt",)),
    (("{run}", "--prompt", "hi", "--tokenizer", "{tmp}/no_tok"), ("tokenizer", "does not exist")),
    (("{tmp}/no_model", "--prompt", "hi"), ("model folder", "does not exist")),
])
def test_bad_generate_commands(capsys, tmp_path, trained_run, args, keywords):
    args = [a.format(run=trained_run.workdir, tmp=tmp_path) for a in args]
    res = run_inprocess(capsys, "generate", *args)
    assert_fails(res, 2, *keywords, command="generate")
    assert_untouched(trained_run.workdir, trained_run.before)


# -- model shapes ------------------------------------------------------------------------


@pytest.mark.parametrize("override, keywords", [
    ("model.config.num_heads=3", ("not divisible by num_heads",)),
    ("batch_size=12", ("batch_size=12 is not divisible", "multiple of 8")),
    ("mesh.data=3", ("but there are 8 devices",)),
])
def test_model_shape_errors_leave_the_workdir_alone(capsys, trained_run, override, keywords):
    res = run_inprocess(capsys, "train", "--config", trained_run.config, "--workdir",
                        trained_run.workdir, f"--config.{override}")
    assert_fails(res, 2, *keywords, command="train")
    assert_untouched(trained_run.workdir, trained_run.before)


def test_image_size_not_a_multiple_of_the_patch_size(capsys, tmp_path):
    res = run_inprocess(capsys, "train", "--config", VIT, "--workdir", str(tmp_path / "w"),
                        "--config.model.config.image_size=30")
    assert_fails(res, 2, "image_size (30) must be a multiple of patch_size")
    assert not (tmp_path / "w").exists()


@pytest.mark.slow
def test_non_finite_loss_stops_with_exit_1(capsys, trained_run):
    res = run_inprocess(capsys, "train", "--config", trained_run.config, "--workdir",
                        trained_run.workdir, "--config.num_steps=8",
                        "--config.optimizer.learning_rate=1e30", "--config.allow_changes=true")
    assert_fails(res, 1, "non-finite", "last checkpoint (step 4) is intact")
    assert_untouched(trained_run.workdir, trained_run.before)


# -- filesystem --------------------------------------------------------------------------


def test_workdir_inside_a_file(capsys, trained_run, tmp_path):
    (tmp_path / "f").write_text("x")
    res = run_inprocess(capsys, "train", "--config", trained_run.config, "--workdir",
                        str(tmp_path / "f" / "run"))
    assert_fails(res, 2, "a part of this path is a file")


@pytest.mark.parametrize("code, keyword", [
    (errno.ENOSPC, "no space left on the device"),
    (errno.EROFS, "read-only file system"),
    (errno.EACCES, "permission denied"),
])
def test_write_errors_of_the_workdir(capsys, monkeypatch, tmp_path, trained_run, code, keyword):
    """The OS refuses the first write into the workdir (simulated at the write site, so it
    also runs where no small or read-only file system can be mounted)."""
    real_open = builtins.open

    def refusing_open(file, mode="r", *args, **kwargs):
        if str(file).startswith(trained_run.workdir) and any(m in mode for m in "wax+"):
            raise (PermissionError if code == errno.EACCES else OSError)(
                code, os.strerror(code), str(file))
        return real_open(file, mode, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", refusing_open)
    res = run_inprocess(capsys, "train", "--config", trained_run.config, "--workdir",
                        trained_run.workdir, "--config.num_steps=6")
    assert_fails(res, 2, keyword, os.path.join(trained_run.workdir, "config.json"))
    assert_untouched(trained_run.workdir, trained_run.before)


# -- the handler -------------------------------------------------------------------------


def _raise_in_config(monkeypatch, error: BaseException) -> None:
    import jaxmm.train.run_config as run_config

    def fail(*args, **kwargs):
        raise error

    monkeypatch.setattr(run_config, "load_run_config", fail)


def test_ctrl_c_exits_130_quietly(capsys, monkeypatch):
    _raise_in_config(monkeypatch, KeyboardInterrupt())
    res = run_inprocess(capsys, "config", "--config", VIT)
    assert res.code == 130 and res.err.strip() == "jaxmm config: interrupted"


def test_a_bug_is_one_line_with_the_way_to_the_traceback(capsys, monkeypatch):
    _raise_in_config(monkeypatch, ZeroDivisionError("division by zero"))
    res = run_inprocess(capsys, "config", "--config", VIT)
    assert_fails(res, 1, "internal error, ZeroDivisionError: division by zero", "--debug")
    for debug in (["--debug", "config"], ["config", "--debug"]):
        res = run_inprocess(capsys, *debug, "--config", VIT)
        assert res.code == 1 and "Traceback" in res.err and "ZeroDivisionError" in res.err


# -- the exception family ----------------------------------------------------------------


def test_every_error_class_keeps_its_old_base_and_has_an_exit_code():
    from jaxmm import errors
    from jaxmm.config import ConfigError
    from jaxmm.convert.io import ConversionError
    from jaxmm.data.sources import DataError
    from jaxmm.data.tokenizers import TokenizerError
    from jaxmm.train.hooks import NonFiniteError

    for cls in (ConfigError, ConversionError, DataError, TokenizerError, errors.InputError):
        assert issubclass(cls, ValueError) and cls.exit_code == errors.EXIT_BAD_INPUT
    assert issubclass(NonFiniteError, RuntimeError) and NonFiniteError.exit_code == 1
    assert errors.CheckpointError.exit_code == errors.EXIT_CHECKPOINT == 3
    error = errors.DataError("Split 'x' is empty", hint="Rebuild it.")
    assert str(error) == "Split 'x' is empty. Rebuild it."
    again = pickle.loads(pickle.dumps(error))
    assert type(again) is errors.DataError and str(again) == str(error)
    with pytest.raises(ValueError):
        raise ConfigError("still a ValueError")


@pytest.mark.parametrize("name, candidates, expected", [
    ("num_layer", ["num_layers", "num_heads", "d_model"], ["num_layers"]),
    ("retreival", ["retrieval", "loss"], ["retrieval"]),  # a swap is one edit
    ("lss", ["loss", "lm"], ["loss"]),
    ("b3", ["b1", "b2", "eps"], ["b1", "b2"]),
    ("Adamw", ["adamw", "sgd"], ["adamw"]),
    ("dtype", ["mu_dtype", "momentum"], []),  # unrelated: no hint
    ("x", ["b", "eps"], []),
    ("zzzzzz", ["alpha", "beta"], []),
    ("", ["a", "b"], []),
])
def test_nearest_uses_an_edit_distance_and_stays_quiet_when_nothing_is_close(
        name, candidates, expected):
    from jaxmm.config import did_you_mean, nearest

    assert nearest(name, candidates) == expected
    hint = did_you_mean(name, candidates)
    assert hint == (f" Did you mean {', '.join(map(repr, expected))}?" if expected else "")
