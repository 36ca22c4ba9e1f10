"""The shipped configs/*.py load, take their :args, and resolve against the registries."""

import glob
import os

import pytest

from jaxmm.config import ConfigError, load_config
from jaxmm.models import registry
from jaxmm.train import resolve_config
from jaxmm.train.run_config import parse_config_arg
from tests.train.helpers import ROOT

CONFIGS = sorted(glob.glob(os.path.join(ROOT, "configs", "*.py")))


@pytest.mark.parametrize("path", CONFIGS, ids=[os.path.basename(p) for p in CONFIGS])
def test_config_loads_and_resolves(path):
    cfg = load_config(path)
    assert cfg.task.name and cfg.model.name and cfg.num_steps > 0
    if cfg.model.name in registry.available():  # families still landing resolve later
        resolved = resolve_config(cfg)
        assert resolved.model.config.to_dict()  # every model field filled in


def test_parse_config_arg():
    a = parse_config_arg("tiny,steps=5,lit=true", size="base", steps=10, lit=False)
    assert (a.size, a.steps, a.lit) == ("tiny", 5, True)
    with pytest.raises(ConfigError, match="Unknown config argument 'step'.*'steps'"):
        parse_config_arg("step=5", size="base", steps=10)
    cfg = load_config(os.path.join(ROOT, "configs", "vit_classification.py") + ":tiny,steps=7")
    assert cfg.num_steps == 7 and cfg.model.config.image_size == 32
