"""Run-config loading, command-line overrides, and the jaxmm CLI entry point."""

import json
import subprocess
import sys
import textwrap

import pytest

from jaxmm import cli
from jaxmm.config import ConfigError, load_config, parse_override_args

CONFIG = textwrap.dedent(
    """
    import ml_collections

    def get_config(arg=None):
        c = ml_collections.ConfigDict()
        c.size = arg or "tiny"
        c.lr = 1e-3
        c.use_ema = False
        c.model = ml_collections.ConfigDict({"num_layers": 2, "name": "gpt"})
        c.mesh = ml_collections.ConfigDict({"data": -1, "fsdp": 1, "tensor": 1})
        c.shape = (4, 4)
        return c
    """
)


@pytest.fixture
def config_file(tmp_path):
    path = tmp_path / "cfg.py"
    path.write_text(CONFIG)
    return str(path)


def test_load_with_arg_and_overrides(config_file):
    overrides, rest = parse_override_args(
        ["--config.model.num_layers=4", "--config.lr", "3e-4", "--workdir", "w",
         "--config.use_ema=true", "--config.shape=(2, 8)"]
    )
    assert rest == ["--workdir", "w"]
    cfg = load_config(f"{config_file}:small", overrides)
    assert cfg.size == "small"
    assert cfg.model.num_layers == 4 and isinstance(cfg.model.num_layers, int)
    assert cfg.lr == pytest.approx(3e-4)
    assert cfg.use_ema is True
    assert cfg.shape == (2, 8)
    with pytest.raises(AttributeError):
        cfg.new_key = 1  # configs are locked after loading


@pytest.mark.parametrize(
    "override,match",
    [
        ("model.num_layer=4", r"Unknown config key 'num_layer'.*'num_layers'"),
        ("lrr=1", r"Unknown config key 'lrr'.*'lr'"),
        ("model.num_layers=abc", "cannot parse as int"),
        ("model.num_layers=2.5", "expected int"),
        ("lr.x=1", "is a value, not a section"),
        ("use_ema=maybe", "expected a boolean"),
    ],
)
def test_bad_overrides(config_file, override, match):
    with pytest.raises(ConfigError, match=match):
        load_config(config_file, [override])


def test_missing_config_file():
    with pytest.raises(ConfigError, match="does not exist"):
        load_config("configs/nope.py")


def test_cli_help_lists_commands(capsys):
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "commands:" in out and "info" in out and "config" in out


@pytest.mark.parametrize("command", sorted(cli.COMMANDS))
def test_every_command_is_a_module_of_the_cli_package(command, capsys):
    """``jaxmm <command>`` is ``jaxmm.cli.<command>.main``; its --help works."""
    import importlib

    module = importlib.import_module(f"jaxmm.cli.{command}")
    assert callable(module.main)
    with pytest.raises(SystemExit) as e:
        module.main(["--help"])
    assert e.value.code == 0
    assert f"jaxmm {command}" in capsys.readouterr().out


def test_unknown_command_names_the_valid_ones(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["trian"])
    assert e.value.code == 2
    assert "train" in capsys.readouterr().err


RUN_CONFIG = textwrap.dedent(
    """
    import ml_collections

    def get_config(arg=None):
        c = ml_collections.ConfigDict()
        c.task = {"name": "lm"}
        c.model = {"name": "gpt", "size": "tiny", "config": {"num_layers": 2}}
        c.data = {"name": "synthetic"}
        c.num_steps = 3
        return c
    """
)


def test_config_command_prints_what_train_runs(tmp_path):
    """``jaxmm config`` uses train's loader: every default filled in, the same overrides
    accepted (None included), and the JSON is what train writes to config.json."""
    from jaxmm.train.run_config import load_run_config

    path = tmp_path / "run.py"
    path.write_text(RUN_CONFIG)
    overrides = ["--config.model.config.num_layers=7", "--config.eval.num_batches=None"]
    res = subprocess.run([sys.executable, "-m", "jaxmm", "config", "--config", str(path),
                          *overrides, "--json"], capture_output=True, text=True, check=True)
    assert res.stdout.strip() == load_run_config(str(path), overrides).to_json(indent=2)
    printed = json.loads(res.stdout)
    assert printed["model"]["config"]["num_layers"] == 7
    assert printed["eval"]["num_batches"] is None
    assert printed["checkpoint"]["keep"] == 2 and printed["optimizer"]["name"] == "adamw"
    assert "vocab_size" in printed["model"]["config"]  # the model's fields, with defaults
    plain = subprocess.run([sys.executable, "-m", "jaxmm", "config", "--config", str(path)],
                           capture_output=True, text=True, check=True).stdout
    assert "num_layers: 2" in plain and "every_steps: 1000" in plain
    bad = subprocess.run(
        [sys.executable, "-m", "jaxmm", "config", "--config", str(path),
         "--config.model.config.num_layer=7"],
        capture_output=True, text=True,
    )
    assert bad.returncode == 2
    assert "Did you mean 'num_layers'" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_every_key_whose_default_is_none_declares_its_type():
    """``KEY_TYPES`` lists every default_config() key that is None by default (so an
    override of it is checked), and each declared type accepts None."""
    from ml_collections import ConfigDict

    from jaxmm.overrides import accepts_none
    from jaxmm.train.run_config import KEY_TYPES, default_config

    def none_keys(section, prefix=""):
        for key in section.keys():
            value = section[key]
            if isinstance(value, ConfigDict):
                yield from none_keys(value, f"{prefix}{key}.")
            elif value is None:
                yield prefix + key

    assert sorted(k for k in none_keys(default_config()) if k not in KEY_TYPES) == []
    assert all(accepts_none(tp) for tp in KEY_TYPES.values())


@pytest.mark.parametrize("text, annotation, expected", [
    ("None", "int | None", None),
    ("null", "float | None", None),
    ("3", "int | None", 3),
    ("3", "float", 3.0),
    ("1e-3", "float", 1e-3),
    ("yes", "bool", True),
    ("OFF", "bool", False),
    ("(1, 2)", "tuple[int, ...]", (1, 2)),
    ("1,2", "tuple[int, ...]", (1, 2)),
    ("[1, 2]", "tuple[int, ...] | None", (1, 2)),
    ("5", "tuple[int, ...]", (5,)),
    ("a,b", "tuple[str, ...]", ("a", "b")),
    ("(x, y)", "tuple[str, ...]", ("x", "y")),
    ("4", "int | tuple[int, int]", 4),
    ("(4, 8)", "int | tuple[int, int]", (4, 8)),
    ("never", "bool | str", "never"),
    ("bfloat16", "str", "bfloat16"),
    ("None", "str | None", None),
    ("None", "str", "None"),  # a plain str key takes the text as written
    ("7", "typing.Any", 7),
    ("word", "typing.Any", "word"),
])
def test_override_values_parse_by_declared_type(text, annotation, expected):
    import typing  # noqa: F401 - used by eval

    from jaxmm.overrides import parse_value

    value = parse_value(text, eval(annotation), "k")
    assert value == expected and type(value) is type(expected)


@pytest.mark.parametrize("text, annotation, match", [
    ("None", "int", "k does not accept None; expected int"),
    ("abc", "int | None", "cannot parse as int or None"),
    ("(1, 2, 3)", "tuple[int, int]", "expected a tuple"),
    ("(1, 'a')", "tuple[int, ...]", "expected a tuple of int"),
    ("2", "bool", "expected a boolean"),
])
def test_override_values_that_do_not_fit_are_refused(text, annotation, match):
    from jaxmm.overrides import parse_value

    with pytest.raises(ConfigError, match=match.replace("(", r"\(").replace(")", r"\)")):
        parse_value(text, eval(annotation), "k")


def test_debug_flag_is_taken_anywhere_before_a_double_dash():
    from jaxmm.cli.failures import split_debug_flag

    assert split_debug_flag(["--debug", "train", "--x"]) == (["train", "--x"], True)
    assert split_debug_flag(["train", "--debug"]) == (["train"], True)
    assert split_debug_flag(["train", "--", "--debug"]) == (["train", "--", "--debug"], False)
