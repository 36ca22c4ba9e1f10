"""Installing jaxmm: the declared dependencies, the configs shipped in the wheel, and the
installed ``jaxmm`` command run from a directory outside the checkout.

The slow tests use the ``installed_wheel`` fixture (tests/conftest.py): a wheel built from
this checkout and installed, not editable, into a fresh virtualenv.
"""

import ast
import glob
import json
import math
import os
import subprocess
import sys
import tomllib

import pytest
from packaging.requirements import Requirement

from jaxmm.config import ConfigError, builtin_configs, load_config, resolve_config_file

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HANG_GUARD_S = 1800  # a hang guard, not a time limit (the quiet-machine time is ~2 minutes)


def _pyproject():
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        return tomllib.load(f)


def _constraints() -> dict[str, str]:
    pins = {}
    with open(os.path.join(ROOT, "constraints.txt"), encoding="utf-8") as f:
        for line in f:
            line = line.split("#")[0].strip()
            if line:
                req = Requirement(line)
                (spec,) = req.specifier
                assert spec.operator == "==", line
                pins[req.name.lower().replace("_", "-")] = spec.version
    return pins


# ---------------------------------------------------------------------------
# Declared dependencies and packaging
# ---------------------------------------------------------------------------


def test_dependencies_are_ranges_and_constraints_pin_a_version_inside_each():
    project = _pyproject()["project"]
    pins = _constraints()
    for group, reqs in [("base", project["dependencies"]),
                        ("test", project["optional-dependencies"]["test"])]:
        for line in reqs:
            req = Requirement(line)
            ops = {s.operator for s in req.specifier}
            assert ops == {">=", "<"}, f"{group}: {line} is not a >=,< range"
            name = req.name.lower().replace("_", "-")
            assert name in pins, f"constraints.txt has no exact version of {req.name}"
            assert req.specifier.contains(pins[name]), (line, pins[name])
            lower = next(s.version for s in req.specifier if s.operator == ">=")
            assert lower == pins[name], f"{line}: the lower bound is the tested version"
    extras = project["optional-dependencies"]
    assert [Requirement(r).name for r in extras["tpu"]] == ["jax"]
    assert Requirement(extras["tpu"][0]).extras == {"tpu"}
    assert Requirement(extras["cuda12"][0]).extras == {"cuda12"}
    jax_range = next(Requirement(r).specifier for r in project["dependencies"]
                     if r.startswith("jax>"))
    for extra in ("tpu", "cuda12"):  # the accelerator build is the same JAX as the base
        assert Requirement(extras[extra][0]).specifier == jax_range


def test_makefile_installs_with_the_constraints():
    with open(os.path.join(ROOT, "Makefile"), encoding="utf-8") as f:
        installs = [line.strip() for line in f if "$(PIP) install" in line and "pip" not in
                    line.split("install", 1)[1]]
    assert installs and all("-c constraints.txt" in line for line in installs), installs
    order = [line.split()[-1] for line in installs]
    assert order.index("torch") < order.index("'.[test]'")  # torch before transformers


def test_package_list_names_every_package_and_the_configs():
    setuptools = _pyproject()["tool"]["setuptools"]
    on_disk = sorted(os.path.relpath(os.path.dirname(p), ROOT).replace(os.sep, ".")
                     for p in glob.glob(os.path.join(ROOT, "jaxmm", "**", "__init__.py"),
                                        recursive=True))
    assert sorted(setuptools["packages"]) == sorted(on_disk + ["jaxmm.configs"])
    assert _pyproject()["tool"]["setuptools"]["package-dir"] == {"jaxmm.configs": "configs"}


def test_repository_url_is_declared_once():
    url = _pyproject()["project"]["urls"]["Repository"]
    assert url == "https://github.com/jaxmm/jaxmm"


# ---------------------------------------------------------------------------
# Built-in configs by name
# ---------------------------------------------------------------------------


def test_builtin_config_names_resolve_from_any_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    shipped = sorted(os.path.basename(p) for p in glob.glob(os.path.join(ROOT, "configs", "*.py")))
    assert builtin_configs() == shipped
    want = os.path.join(ROOT, "configs", "lm_gpt.py")
    for name in ("lm_gpt.py", "lm_gpt", "configs/lm_gpt.py"):
        assert os.path.samefile(resolve_config_file(name), want), name
    config = load_config("lm_gpt.py:tiny,steps=7", ["batch_size=3"])
    assert config.num_steps == 7 and config.batch_size == 3 and config.model.size == "tiny"


def test_an_existing_local_file_wins_over_the_builtin(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "lm_gpt.py").write_text(
        "import ml_collections\n\n\ndef get_config(arg=None):\n"
        "    return ml_collections.ConfigDict({'local': arg})\n")
    assert resolve_config_file("lm_gpt.py") == "lm_gpt.py"
    assert load_config("lm_gpt.py:mine").local == "mine"


def test_demo_reads_the_builtin_demo_config_not_a_local_one(tmp_path, monkeypatch):
    from jaxmm.demo import _config_file

    monkeypatch.chdir(tmp_path)
    (tmp_path / "demo.py").write_text("raise SystemExit('a local demo.py was loaded')\n")
    assert os.path.samefile(_config_file(), os.path.join(ROOT, "configs", "demo.py"))


@pytest.mark.parametrize("name", ["nope.py", "configs/nope", "elsewhere/lm_gpt.py"])
def test_unknown_config_name_lists_the_builtins(tmp_path, monkeypatch, name):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as info:
        load_config(f"{name}:tiny")
    message = str(info.value)
    assert "\n" not in message and f"{name!r} does not exist" in message
    assert all(config in message for config in builtin_configs())


def test_cli_reports_an_unknown_config_in_one_line(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "jaxmm", "config", "--config", "no_such_config.py:tiny"],
        cwd=tmp_path, capture_output=True, text=True, timeout=600,
        env={**os.environ, "PYTHONPATH": ROOT})
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("jaxmm config: error:"), proc.stderr
    assert "lm_gpt.py" in lines[0] and "demo.py" in lines[0]


def test_local_launcher_uses_the_project_environment(tmp_path):
    """launch/local.sh runs the checkout's .venv python when there is one (or python3),
    never a bare ``python``: with no ``python`` on PATH it still reaches jaxmm."""
    launcher = os.path.join(ROOT, "launch", "local.sh")
    bin_dir = tmp_path / "bin"  # bash and python3 only: no `python`
    bin_dir.mkdir()
    for tool in ("bash", "dirname", "python3"):
        path = next((os.path.join(d, tool) for d in os.environ["PATH"].split(os.pathsep)
                     if os.access(os.path.join(d, tool), os.X_OK)), None)
        if path:
            os.symlink(path, bin_dir / tool)
    env = {"PATH": str(bin_dir), "HOME": str(tmp_path)}
    proc = subprocess.run([os.path.join(bin_dir, "bash"), launcher, "nope.py", str(tmp_path / "w")],
                          cwd=tmp_path, capture_output=True, text=True, env=env, timeout=600)
    has_venv = os.access(os.path.join(ROOT, ".venv", "bin", "python"), os.X_OK)
    want = ".venv/bin/python" if has_venv else "python3"
    assert f"launch/local.sh: using {want}" in proc.stderr
    assert proc.returncode == 2, proc.stderr  # jaxmm ran and refused the config
    assert "jaxmm train: error: Config file 'nope.py' does not exist" in proc.stderr
    proc = subprocess.run([os.path.join(bin_dir, "bash"), launcher, "nope.py", "w"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=600,
                          env={**env, "JAXMM_PYTHON": sys.executable})
    assert f"using {sys.executable}" in proc.stderr and proc.returncode == 2


# ---------------------------------------------------------------------------
# The installed wheel
# ---------------------------------------------------------------------------


def _run(installed, args, cwd):
    proc = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=HANG_GUARD_S,
                          env=installed.env(TF_CPP_MIN_LOG_LEVEL="2"))
    assert proc.returncode == 0, f"{args}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


@pytest.mark.slow
def test_wheel_is_installed_outside_the_checkout(installed_wheel, tmp_path):
    """The venv imports jaxmm from the wheel (not this checkout, not the test environment's
    editable install) and finds the configs inside the installed package."""
    proc = _run(installed_wheel, [installed_wheel.python, "-c", (
        "import json, jaxmm, jaxmm.config as c; "
        "print(json.dumps([jaxmm.__file__, str(c.builtin_config_dir() / 'demo.py'), "
        "c.builtin_configs()]))")], tmp_path)
    module_file, demo_config, names = json.loads(proc.stdout.strip().splitlines()[-1])
    package = os.path.join(installed_wheel.site_packages, "jaxmm")
    assert module_file == os.path.join(package, "__init__.py")
    assert demo_config == os.path.join(package, "configs", "demo.py")
    shipped = sorted(os.path.basename(p) for p in glob.glob(os.path.join(ROOT, "configs", "*.py")))
    assert names == shipped
    for name in shipped:  # byte-identical copies of the checkout's configs
        with open(os.path.join(ROOT, "configs", name), "rb") as a, \
                open(os.path.join(package, "configs", name), "rb") as b:
            assert a.read() == b.read(), name


@pytest.mark.slow
def test_installed_cli_trains_evaluates_and_configures_a_builtin_config(installed_wheel,
                                                                         tmp_path):
    """The README's train / config / eval commands from the installed ``jaxmm``, in a
    directory without configs/: train finds the built-in config by name, ``config --json``
    prints exactly the config.json train wrote, ``eval`` reproduces the run's own
    evaluation, and an empty workdir is refused in one line with nothing written."""
    cwd = tmp_path / "elsewhere"  # no configs/ here
    cwd.mkdir()
    args = ["--config", "lm_gpt.py:tiny,steps=4,batch=4,seq_len=32",
            "--config.eval.num_batches=1", "--config.eval.every_steps=4",
            "--config.log.every_steps=2", "--config.checkpoint.every_steps=4"]
    _run(installed_wheel, [installed_wheel.jaxmm, "train", *args, "--workdir", "gpt"], cwd)
    workdir = cwd / "gpt"
    summary = json.loads((workdir / "summary.json").read_text())
    assert summary["step"] == 4 and summary["checkpoints"] == [4]
    config = json.loads((workdir / "config.json").read_text())
    assert config["model"]["name"] == "gpt" and config["batch_size"] == 4
    # A randomly initialised LM predicts nearly uniformly: loss ~ ln(vocab size).
    vocab = config["model"]["config"].get("vocab_size") or 50257
    records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    losses = [r["train/loss"] for r in records if "train/loss" in r]
    assert losses and all(abs(loss - math.log(vocab)) < 0.5 for loss in losses), losses

    printed = _run(installed_wheel, [installed_wheel.jaxmm, "config", *args, "--json"], cwd)
    assert json.loads(printed.stdout) == config

    _run(installed_wheel, [installed_wheel.jaxmm, "eval", *args, "--workdir", "gpt"], cwd)
    evaluated = json.loads((workdir / "eval_4.json").read_text())
    (in_run,) = [r["eval/loss"] for r in records if "eval/loss" in r]
    assert evaluated["step"] == 4
    assert evaluated["metrics"]["loss"] == pytest.approx(in_run, rel=1e-5)

    (cwd / "empty").mkdir()
    proc = subprocess.run([installed_wheel.jaxmm, "eval", *args, "--workdir", "empty"], cwd=cwd,
                          capture_output=True, text=True, timeout=HANG_GUARD_S,
                          env=installed_wheel.env(TF_CPP_MIN_LOG_LEVEL="2"))
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 3 and len(lines) == 1, proc.stderr
    assert "No checkpoint in" in lines[0] and os.listdir(cwd / "empty") == []


@pytest.mark.slow
@pytest.mark.parametrize("model, message", [
    ("runs/gpt/export", "Model folder 'runs/gpt/export' does not exist."),
    ("gpt2", "Model folder 'gpt2' does not exist, and the Hub id is not in the local Hugging "
             "Face Hub cache. Pass --download"),
])
def test_installed_cli_generate_names_the_missing_model_folder(installed_wheel, tmp_path,
                                                               model, message):
    """``jaxmm generate`` from the installed command names the missing model folder (not a
    missing tokenizer) in one line; a Hub id is looked up in the (here empty) Hub cache."""
    proc = subprocess.run([installed_wheel.jaxmm, "generate", model, "--prompt", "hi"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=HANG_GUARD_S,
                          env=installed_wheel.env(TF_CPP_MIN_LOG_LEVEL="2", HF_HUB_OFFLINE="1",
                                                  HF_HOME=str(tmp_path / "hf")))
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert message in lines[0], lines[0]


@pytest.mark.slow
@pytest.mark.heavy
def test_installed_jaxmm_demo_runs_from_the_package(installed_wheel, tmp_path):
    """``jaxmm demo`` at its smallest (tiny data, 10-12 steps per run) reads configs/demo.py
    from the installed package and writes its results."""
    _run(installed_wheel, [installed_wheel.jaxmm, "demo", "--workdir", "demo", "--size", "tiny",
                           "--steps-scale", "0.02", "--samples", "2", "--decodings", "greedy"],
         tmp_path)
    workdir = tmp_path / "demo"
    results = json.loads((workdir / "results.json").read_text())
    # The step counts follow the checkout's configs/demo.py (read here independently).
    tree = ast.parse(open(os.path.join(ROOT, "configs", "demo.py"), encoding="utf-8").read())
    defaults = next(ast.literal_eval(node.value) for node in tree.body
                    if isinstance(node, ast.Assign)
                    and getattr(node.targets[0], "id", "") == "DEFAULT_STEPS")
    for run in ("clip", "captioner", "vqa"):
        assert results["train"][run]["step"] == max(10, round(defaults[run] * 0.02)), run
    assert results["size"] == "tiny" and results["clip"]["num_images"] == 64
    assert results["vqa"]["num_questions"] == 256
    for png in ("samples.png", "attention.png", "training_curves.png"):
        with open(workdir / png, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n", png


@pytest.mark.slow
def test_editable_install_finds_the_checkout_configs(tmp_path):
    """``pip install -e`` (what ``make demo`` / ``make test`` do) keeps working: the built-in
    configs are the checkout's configs/ folder, found from any directory."""
    import shutil
    import sysconfig

    source = tmp_path / "checkout"
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE", "jaxmm", "configs"):
        copy = shutil.copytree if os.path.isdir(os.path.join(ROOT, name)) else shutil.copy2
        copy(os.path.join(ROOT, name), source / name)
    venv = tmp_path / "venv"
    run = dict(check=True, capture_output=True, text=True, timeout=900)
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], **run)
    python = str(venv / "bin" / "python")
    purelib = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()"
                              "['purelib'])"], **run).stdout.strip()
    with open(os.path.join(purelib, "_deps.pth"), "w") as f:
        f.write(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", python, "install", "-q", "--no-deps",
                    "--no-build-isolation", "--disable-pip-version-check", "-e", str(source)],
                   **run)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "XLA_FLAGS")}
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    out = subprocess.run([python, "-c", "import json, jaxmm, jaxmm.config as c; print(json.dumps("
                          "[jaxmm.__file__, str(c.builtin_config_dir())]))"],
                         cwd=elsewhere, env=env, **run).stdout
    assert json.loads(out.strip().splitlines()[-1]) == [
        str(source / "jaxmm" / "__init__.py"), str(source / "configs")]
    printed = subprocess.run([str(venv / "bin" / "jaxmm"), "config", "--config",
                              "lm_gpt.py:tiny,steps=9"], cwd=elsewhere, env=env, **run).stdout
    assert "num_steps: 9" in printed
