"""The non-finite guard and clear configuration errors."""

import os

import jax
import numpy as np
import pytest

from jaxmm.config import ConfigError
from jaxmm.train import Checkpointer, NonFiniteError, resolve_config, run
from tests.train.helpers import run_cli, tiny_config, write_config


@pytest.mark.slow
def test_nan_stops_run_and_keeps_last_good_checkpoint(tmp_path):
    # Batch index 6 (step 7) is all-NaN images; a checkpoint is written every 5 steps.
    cfg = tiny_config("classification", {
        "num_steps": 10, "checkpoint.every_steps": 5, "data.nan_at_batch": 6,
        "data.image_size": 16})
    workdir = str(tmp_path / "run")
    with pytest.raises(NonFiniteError) as err:
        run(cfg, workdir)
    msg = str(err.value)
    assert "step 7" in msg and "loss=nan" in msg and "grad_norm=nan" in msg
    assert "last checkpoint (step 5) is intact" in msg
    ck = Checkpointer(os.path.join(workdir, "checkpoints"))
    assert ck.all_steps() == [5]  # nothing saved after the bad step
    variables = ck.restore_variables(5)
    ck.close()
    assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(variables))


@pytest.mark.parametrize("overrides,match", [
    ({"task.name": "langauge_model"}, r"Unknown task 'langauge_model' \(config key task.name\)"),
    ({"optimizer.name": "adamm"}, r"Unknown optimizer 'adamm' \(config key optimizer.name\)"
                                  r".*Did you mean 'adamw'"),
    ({"schedule.name": "cosin"}, r"Unknown schedule 'cosin' \(config key schedule.name\)"),
    ({"mesh.data": 3}, r"mesh: data\*fsdp\*tensor = 3\*1\*1 = 3, but there are 8 devices"),
    ({"batch_size": 12}, r"batch_size=12 is not divisible by the data-parallel size 8"),
    ({"grad_accum_steps": 3, "batch_size": 16}, r"times grad_accum_steps=3"),
    ({"optimizer.weight_decy": 0.1}, r"Unknown config key 'optimizer.weight_decy'.*"
                                     r"'optimizer.weight_decay'"),
    ({"model.config.num_layer": 2}, r"Unknown config key 'num_layer' for TinyConfig.*"
                                    r"'num_layers'"),
    ({"task.label_smothing": 0.1}, r"task 'lm'.*Unknown config key 'label_smothing'"),
    ({"data.vocab": 10}, r"Unknown synthetic data option\(s\) \['vocab'\]"),
    ({"model.name": "test_tiny_lmm"}, r"Unknown model 'test_tiny_lmm'.*'test_tiny_lm'"),
])
def test_bad_config_names_the_key(tmp_path, overrides, match):
    with pytest.raises(ConfigError, match=match):
        run(tiny_config("lm", overrides), str(tmp_path / "run"))


@pytest.mark.slow
def test_bad_override_on_the_command_line(tmp_path):
    cfg = write_config(tmp_path / "cfg.py")
    res = run_cli("train", "--config", cfg, "--workdir", str(tmp_path / "run"),
                  "--config.optimizer.learning_rat=1e-3")
    assert res.returncode == 2
    assert "Unknown config key 'learning_rat'" in res.stderr
    assert "Did you mean 'learning_rate'" in res.stderr
    assert "Traceback" not in res.stderr


def test_resolve_fills_every_model_and_task_field():
    cfg = resolve_config(tiny_config("lm"))
    assert cfg.model.config.num_heads == 2 and cfg.model.config.vocab_size == 64
    assert cfg.task.label_smoothing == 0.0
    # Idempotent: resolving a resolved config changes nothing.
    assert resolve_config(cfg).to_dict() == cfg.to_dict()
