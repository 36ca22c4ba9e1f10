"""Fixtures of the bad-input catalogue: one tiny trained workdir per session, copied
for each test that runs against an existing workdir."""

from __future__ import annotations

import shutil
from dataclasses import dataclass

import pytest

from tests.catalogue.catalogue_tools import run_jaxmm, snapshot
from tests.train.helpers import write_config


@dataclass
class TrainedRun:
    config: str  # the config file it was trained with
    workdir: str  # a fresh copy of its workdir, for this test
    before: dict[str, str]  # snapshot of that copy


@pytest.fixture(scope="session")
def trained_run_source(tmp_path_factory) -> tuple[str, str]:
    """One tiny run per session (4 steps, checkpoints at 2 and 4, an export):
    ``(config file, workdir)``. Tests get a copy (:func:`trained_run`)."""
    base = tmp_path_factory.mktemp("catalogue_run")
    config = write_config(base / "tiny.py", "lm", {
        "num_steps": 4, "checkpoint.every_steps": 2, "checkpoint.export_params": True})
    workdir = str(base / "run")
    result = run_jaxmm("train", "--config", config, "--workdir", workdir)
    assert result.code == 0, result.err[-3000:]
    return config, workdir


@pytest.fixture
def trained_run(trained_run_source, tmp_path) -> TrainedRun:
    """A copy of the session's trained workdir, with its snapshot."""
    config, source = trained_run_source
    workdir = str(tmp_path / "run")
    shutil.copytree(source, workdir)
    return TrainedRun(config, workdir, snapshot(workdir))
