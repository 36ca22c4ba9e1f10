"""Shared helpers for the training-system tests: tiny run configs and subprocess runs."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import textwrap

import ml_collections

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CACHE = os.path.join(ROOT, ".cache", "jax-tests")

MODELS = {"lm": "test_tiny_lm", "classification": "test_tiny_classifier"}


def tiny_config(task: str = "lm", overrides: dict | None = None) -> ml_collections.ConfigDict:
    """A few-step run of a tiny model on synthetic data (no eval, no TensorBoard)."""
    c = ml_collections.ConfigDict()
    c.imports = ("tests.train.tiny_models",)
    c.task = ml_collections.ConfigDict({"name": task})
    c.model = ml_collections.ConfigDict({"name": MODELS.get(task)})
    c.num_steps = 6
    c.batch_size = 16
    c.data = ml_collections.ConfigDict({"name": "synthetic", "seq_len": 16})
    c.optimizer = ml_collections.ConfigDict({"learning_rate": 3e-3})
    c.schedule = ml_collections.ConfigDict({"name": "constant"})
    c.log = ml_collections.ConfigDict(
        {"every_steps": 1, "tensorboard": False, "mfu": False, "progress": False})
    c.eval = ml_collections.ConfigDict({"every_steps": 0, "num_batches": 2, "at_end": False})
    c.checkpoint = ml_collections.ConfigDict({"every_steps": 1000, "export_params": False})
    c.compilation_cache_dir = CACHE
    for key, value in (overrides or {}).items():
        node = c
        *parents, leaf = key.split(".")
        for p in parents:
            if p not in node:
                node[p] = ml_collections.ConfigDict()
            node = node[p]
        node[leaf] = value
    return c


def write_config(path, task: str = "lm", overrides: dict | None = None) -> str:
    """A configs/*.py-style file returning :func:`tiny_config` (for CLI subprocesses)."""
    text = textwrap.dedent(f"""
        from tests.train.helpers import tiny_config

        def get_config(arg=None):
            return tiny_config({task!r}, {overrides or {}!r})
    """)
    with open(path, "w") as f:
        f.write(text)
    return str(path)


def jaxmm_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "jaxmm", *args]


def cpu_env(devices: int = 8, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    env["JAX_PLATFORMS"] = "cpu"
    env.update(extra)
    return env


# Hang guard for a subprocess running a few steps of a tiny model: far above the
# quiet-machine time (seconds), so only a hang trips it, never a busy machine.
HANG_GUARD_S = 1800
# How long a multi-process worker waits for its peer: both start together, so only a
# peer that never arrives trips it (the quiet-machine start-up gap is seconds).
PEER_GUARD_S = 600


def run_cli(*args: str, devices: int = 8, timeout: float = HANG_GUARD_S,
            **env) -> subprocess.CompletedProcess:
    """Runs ``python -m jaxmm ARGS`` in the repo root and returns the finished process."""
    return subprocess.run(jaxmm_cmd(*args), cwd=ROOT, env=cpu_env(devices, **env),
                          capture_output=True, text=True, timeout=timeout)


def losses(workdir: str) -> dict[int, float]:
    """step -> train/loss from a run's metrics.jsonl."""
    from jaxmm.train.logging import read_jsonl

    return {r["step"]: r["train/loss"] for r in read_jsonl(os.path.join(workdir, "metrics.jsonl"))
            if "train/loss" in r}


def snapshot(workdir) -> dict[str, str]:
    """relative path -> SHA-256 of every file under ``workdir`` (to assert "untouched")."""
    out = {}
    for root, _, files in os.walk(workdir):
        for name in files:
            path = os.path.join(root, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, workdir)] = hashlib.sha256(f.read()).hexdigest()
    return out


WALL_CLOCK = ("steps_per_sec", "examples_per_sec", "tokens_per_sec", "mfu", "time", "seconds")


def metrics_without_wall_clock(workdir) -> list[dict]:
    """A run's metrics.jsonl records without the fields that measure time."""
    from jaxmm.train.logging import read_jsonl

    return [{k: v for k, v in r.items() if not any(w in k for w in WALL_CLOCK)}
            for r in read_jsonl(os.path.join(workdir, "metrics.jsonl"))]


# Overrides for a quick CLI train + eval of a shipped config: one eval batch, at the end
# only; a log record every step; no TensorBoard, progress line or export; the shared cache.
QUICK_CLI = ("--config.eval.num_batches=1", "--config.eval.every_steps=0",
             "--config.log.every_steps=1", "--config.log.tensorboard=false",
             "--config.log.progress=false", "--config.checkpoint.export_params=false",
             f"--config.compilation_cache_dir={CACHE}")


def train_and_eval_cli(config: str, workdir: str, overrides, capsys) -> dict:
    """``jaxmm train`` then ``jaxmm eval`` in-process (both must exit 0); the eval's JSON."""
    import json

    from jaxmm import cli

    assert cli.main(["train", "--config", config, "--workdir", workdir, *overrides]) == 0
    capsys.readouterr()
    assert cli.main(["eval", "--config", config, "--workdir", workdir, *overrides]) == 0
    return json.loads(capsys.readouterr().out)
