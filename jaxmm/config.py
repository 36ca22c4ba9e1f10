"""Configuration: frozen model-config dataclasses and ml_collections run configs.

Two kinds of configuration live in jaxmm:

* **Model configs** are frozen dataclasses that subclass :class:`ConfigBase`.
  They are hashable (so they can be Flax module attributes), validate themselves,
  and reject unknown keys with a message naming the nearest valid ones::

      cfg = GPTConfig.from_dict({"num_layers": 2, "d_model": 64})
      cfg = GPTConfig.from_size("tiny", num_layers=4)

* **Run configs** are ``ml_collections.ConfigDict`` objects built by a
  ``configs/*.py`` file's ``get_config(arg)``, loaded with :func:`load_config`
  (``"configs/x.py:arg"``) and overridden from the command line with
  ``--config.model.num_layers=4``.
"""

from __future__ import annotations

import ast
import dataclasses
import difflib
import importlib.util
import os
import types
import typing
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, TypeVar

import ml_collections

__all__ = [
    "ConfigBase",
    "ConfigError",
    "apply_overrides",
    "load_config",
    "nearest",
    "parse_override_args",
]

T = TypeVar("T", bound="ConfigBase")


class ConfigError(ValueError):
    """A configuration is invalid: unknown key, bad value or bad file."""


def nearest(name: str, candidates: Sequence[str], n: int = 3) -> list[str]:
    """Closest matches to ``name`` among ``candidates`` (for error messages)."""
    return difflib.get_close_matches(name, list(candidates), n=n, cutoff=0.5)


def _unknown_key_message(key: str, valid: Sequence[str], where: str) -> str:
    close = nearest(key, valid)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    return (
        f"Unknown config key {key!r} for {where}.{hint} "
        f"Valid keys: {', '.join(sorted(valid))}."
    )


def _resolve_type(tp: Any) -> Any:
    """Strips Optional[...] / X | None so nested dataclasses can be found."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return tp


@dataclasses.dataclass(frozen=True)
class ConfigBase:
    """Base class for frozen, validated config dataclasses.

    Subclasses are ``@dataclasses.dataclass(frozen=True)`` and may define

    * ``SIZES``: a size table ``{"tiny": {...overrides...}, ...}`` used by
      :meth:`from_size`;
    * ``validate(self)``: raise :class:`ConfigError` for inconsistent values.
    """

    SIZES: ClassVar[Mapping[str, Mapping[str, Any]]] = {}

    def __post_init__(self):
        self.validate()

    def validate(self) -> None:  # pragma: no cover - overridden
        """Checks the values; subclasses raise ConfigError on bad ones."""

    # -- construction ----------------------------------------------------
    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_dict(cls: type[T], values: Mapping[str, Any] | None = None, **kwargs) -> T:
        """Builds the config from a (possibly nested) mapping.

        Unknown keys raise :class:`ConfigError` naming the nearest valid keys.
        Nested ``ConfigBase`` fields accept mappings.
        """
        merged = dict(values or {})
        merged.update(kwargs)
        if isinstance(values, ml_collections.ConfigDict):
            merged = values.to_dict()
            merged.update(kwargs)
        hints = typing.get_type_hints(cls)
        names = cls.field_names()
        out = {}
        for key, val in merged.items():
            if key not in names:
                raise ConfigError(_unknown_key_message(key, names, cls.__name__))
            tp = _resolve_type(hints.get(key))
            if (
                isinstance(tp, type)
                and issubclass(tp, ConfigBase)
                and isinstance(val, Mapping | ml_collections.ConfigDict)
            ):
                val = tp.from_dict(dict(val))
            elif isinstance(val, list):
                val = tuple(val)
            out[key] = val
        return cls(**out)

    @classmethod
    def from_size(cls: type[T], size: str, **overrides) -> T:
        """Builds a config from the class's size table, then applies overrides."""
        if size not in cls.SIZES:
            close = nearest(size, list(cls.SIZES))
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise ConfigError(
                f"Unknown size {size!r} for {cls.__name__}.{hint} "
                f"Available sizes: {', '.join(cls.SIZES)}."
            )
        values = dict(cls.SIZES[size])
        values.update(overrides)
        return cls.from_dict(values)

    def replace(self: T, **changes) -> T:
        """Returns a copy with ``changes`` applied (unknown keys are rejected)."""
        names = self.field_names()
        for key in changes:
            if key not in names:
                raise ConfigError(_unknown_key_message(key, names, type(self).__name__))
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """A plain nested dict (JSON-friendly for simple field types)."""
        out = {}
        for f in dataclasses.fields(self):
            val = getattr(self, f.name)
            if isinstance(val, ConfigBase):
                val = val.to_dict()
            elif isinstance(val, tuple):
                val = list(val)
            out[f.name] = val
        return out


# ---------------------------------------------------------------------------
# Run configs (ml_collections .py files)
# ---------------------------------------------------------------------------


def load_config(spec: str, overrides: Sequence[str] = ()) -> ml_collections.ConfigDict:
    """Loads ``path/to/config.py[:arg]`` and applies ``--config.x.y=v`` overrides.

    The file must define ``get_config(arg=None)`` returning a ConfigDict.
    ``overrides`` holds strings ``"a.b=value"`` (the ``--config.`` prefix is
    optional). The returned config is locked: new keys cannot be added by
    mistake later.
    """
    path, _, arg = spec.partition(":")
    if not os.path.isfile(path):
        raise ConfigError(
            f"Config file {path!r} does not exist. Pass a path to a configs/*.py file, "
            "optionally followed by ':arg', e.g. --config configs/demo.py:tiny"
        )
    module_name = "_jaxmm_config_" + os.path.splitext(os.path.basename(path))[0]
    loader_spec = importlib.util.spec_from_file_location(module_name, path)
    if loader_spec is None or loader_spec.loader is None:
        raise ConfigError(f"Config file {path!r} cannot be imported as Python.")
    module = importlib.util.module_from_spec(loader_spec)
    loader_spec.loader.exec_module(module)
    if not hasattr(module, "get_config"):
        raise ConfigError(f"Config file {path!r} has no get_config(arg) function.")
    config = module.get_config(arg) if arg else module.get_config()
    if not isinstance(config, ml_collections.ConfigDict):
        raise ConfigError(
            f"get_config() in {path!r} returned {type(config).__name__}; "
            "it must return an ml_collections.ConfigDict."
        )
    apply_overrides(config, overrides)
    config.lock()
    return config


def parse_override_args(argv: Sequence[str], prefix: str = "--config.") -> tuple[list, list]:
    """Splits ``argv`` into config overrides (``a.b=v``) and the remaining args.

    Accepts both ``--config.a.b=v`` and ``--config.a.b v``.
    """
    overrides, rest = [], []
    i = 0
    argv = list(argv)
    while i < len(argv):
        arg = argv[i]
        if arg.startswith(prefix):
            body = arg[len(prefix):]
            if "=" not in body:
                if i + 1 >= len(argv):
                    raise ConfigError(f"Override {arg!r} has no value; use {arg}=VALUE.")
                body = f"{body}={argv[i + 1]}"
                i += 1
            overrides.append(body)
        else:
            rest.append(arg)
        i += 1
    return overrides, rest


def _parse_value(text: str, current: Any, path: str) -> Any:
    """Parses an override string into the type of the value it replaces."""
    if isinstance(current, bool):
        low = text.strip().lower()
        if low in ("true", "1", "yes"):
            return True
        if low in ("false", "0", "no"):
            return False
        raise ConfigError(f"Override {path}={text!r}: expected a boolean (true/false).")
    if isinstance(current, str):
        return text
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        if current is None:
            return text
        raise ConfigError(
            f"Override {path}={text!r}: cannot parse as {type(current).__name__}."
        ) from None
    if isinstance(current, float) and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(current, tuple) and isinstance(value, list):
        return tuple(value)
    if current is not None and not isinstance(value, type(current)):
        raise ConfigError(
            f"Override {path}={text!r}: expected {type(current).__name__}, "
            f"got {type(value).__name__}."
        )
    return value


def apply_overrides(config: ml_collections.ConfigDict, overrides: Sequence[str]) -> None:
    """Applies ``"a.b=value"`` overrides in place, checking every key exists."""
    for item in overrides:
        if item.startswith("--config."):
            item = item[len("--config."):]
        path, sep, text = item.partition("=")
        if not sep:
            raise ConfigError(f"Override {item!r} must have the form key.path=value.")
        node = config
        parts = path.split(".")
        for depth, part in enumerate(parts):
            keys = list(node.keys()) if isinstance(node, ml_collections.ConfigDict) else []
            if part not in keys:
                where = ".".join(parts[:depth]) or "the config"
                raise ConfigError(_unknown_key_message(part, keys, where))
            if depth < len(parts) - 1:
                node = node[part]
                if not isinstance(node, ml_collections.ConfigDict):
                    raise ConfigError(
                        f"Override {path!r}: {'.'.join(parts[: depth + 1])} is a value, "
                        "not a section."
                    )
        leaf = parts[-1]
        current = node[leaf]
        if isinstance(current, ml_collections.ConfigDict):
            raise ConfigError(f"Override {path!r} names a whole section; set its fields.")
        with node.unlocked():
            node[leaf] = _parse_value(text, current, path)
