"""A small registry: model name -> (config class, module class).

Each model family file registers its models::

    @register("gpt", GPTConfig)
    class GPTLMHeadModel(nn.Module): ...

and users build them by name with a size or a config::

    model = jaxmm.models.build("gpt", "tiny", num_layers=4)
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable, Mapping
from typing import Any

from jaxmm.config import ConfigBase, ConfigError
from jaxmm.registry import Registry

__all__ = ["MODELS", "ModelSpec", "available", "build", "get", "name_of", "register"]


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    name: str
    config_cls: type[ConfigBase]
    module_cls: type
    description: str = ""


# Importing the families registers them.
MODELS: Registry[ModelSpec] = Registry(
    "model", config_key="model.name", loader=lambda: importlib.import_module("jaxmm.models"))


def register(name: str, config_cls: type[ConfigBase], description: str = "") -> Callable:
    """Class decorator registering a Flax module under ``name``."""

    def wrap(module_cls):
        MODELS.register(name, ModelSpec(name, config_cls, module_cls, description or
                                        (module_cls.__doc__ or "").strip().split("\n")[0]))
        return module_cls

    return wrap


def available() -> list[str]:
    """Registered model names."""
    return MODELS.names()


def get(name: str) -> ModelSpec:
    """The registry entry for ``name`` (clear error with suggestions if unknown)."""
    return MODELS.get(name)


def name_of(model: Any) -> str:
    """The registered name of a model instance (or module class)."""
    cls = model if isinstance(model, type) else type(model)
    specs = dict(MODELS.items())
    names = [name for name, spec in specs.items() if spec.module_cls is cls]
    # A class registered under several names (bert/roberta): the one whose config
    # class is the instance's.
    config_cls = type(getattr(model, "config", None))
    exact = [n for n in names if specs[n].config_cls is config_cls]
    if exact or names:
        return (exact or names)[0]
    raise ConfigError(
        f"{cls.__name__} is not a registered jaxmm model; register it with "
        "jaxmm.models.register(name, ConfigClass)."
    )


def build(
    name: str, config: str | ConfigBase | Mapping[str, Any] | None = None, **overrides
) -> Any:
    """Builds model ``name`` from a size name, a config object or a mapping."""
    spec = get(name)
    if config is None:
        cfg = spec.config_cls.from_dict(overrides)
    elif isinstance(config, str):
        cfg = spec.config_cls.from_size(config, **overrides)
    elif isinstance(config, ConfigBase):
        cfg = config.replace(**overrides) if overrides else config
    else:
        cfg = spec.config_cls.from_dict({**dict(config), **overrides})
    return spec.module_cls(cfg)
