"""Configuration: frozen model-config dataclasses and ml_collections run configs.

Two kinds of configuration live in jaxmm:

* **Model configs** are frozen dataclasses that subclass :class:`ConfigBase`.
  They are hashable (so they can be Flax module attributes), validate themselves,
  and reject unknown keys with a message naming the nearest valid ones::

      cfg = GPTConfig.from_dict({"num_layers": 2, "d_model": 64})
      cfg = GPTConfig.from_size("tiny", num_layers=4)

  Fields that several families have (widths, dropout, dtypes, token ids) are
  declared once in field groups (:mod:`jaxmm.layers.config_fields`,
  :mod:`jaxmm.models.config_fields`) that the families inherit; a family sets
  its own defaults for them in ``DEFAULTS``.

* **Run configs** are ``ml_collections.ConfigDict`` objects built by a
  ``configs/*.py`` file's ``get_config(arg)``, loaded with :func:`load_config`
  (``"configs/x.py:arg"``) and overridden from the command line with
  ``--config.model.num_layers=4``.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.resources.abc
import importlib.util
import os
import traceback
import types
import typing
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import ml_collections

from jaxmm.errors import ConfigError, did_you_mean, nearest
from jaxmm.overrides import apply_overrides, parse_override_args, unknown_key_message

__all__ = [
    "ConfigBase",
    "ConfigError",
    "apply_overrides",
    "did_you_mean",
    "load_config",
    "nearest",
    "parse_override_args",
]

T = TypeVar("T", bound="ConfigBase")


def _resolve_type(tp: Any) -> Any:
    """Strips Optional[...] / X | None so nested dataclasses can be found."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return tp


@functools.cache
def _nested_config_types(cls: type) -> dict[str, type[ConfigBase]]:
    """``{field name: ConfigBase subclass}`` for the fields of ``cls`` that hold a config."""
    try:
        hints = typing.get_type_hints(cls)
    except NameError:  # e.g. a class defined in a function: use the resolved annotations
        hints = {f.name: f.type for f in dataclasses.fields(cls) if not isinstance(f.type, str)}
    out = {}
    for f in dataclasses.fields(cls):
        tp = _resolve_type(hints.get(f.name))
        if isinstance(tp, type) and issubclass(tp, ConfigBase):
            out[f.name] = tp
    return out


def _inherited_fields(cls: type) -> dict[str, tuple[type, dataclasses.Field]]:
    """``{name: (declaring class, Field)}`` of the dataclass fields ``cls`` inherits."""
    out: dict[str, tuple[type, dataclasses.Field]] = {}
    for base in reversed(cls.__mro__[1:]):
        if dataclasses.is_dataclass(base):
            out.update({f.name: (base, f) for f in dataclasses.fields(base)})
    return out


def _apply_defaults(cls: type, defaults: Mapping[str, Any]) -> None:
    """Re-declares inherited fields of ``cls`` with new defaults, before @dataclass runs.

    The field keeps its type, position and options; only the default changes.
    """
    own = cls.__dict__.get("__annotations__")
    if own is None:
        own = {}
        cls.__annotations__ = own
    inherited = _inherited_fields(cls)
    redeclared = [name for name in own if name in inherited]
    if redeclared:
        name = redeclared[0]
        raise TypeError(
            f"{cls.__name__} re-declares the field {name!r} it inherits from "
            f"{inherited[name][0].__name__}; change its default with "
            f"DEFAULTS = {{{name!r}: ...}} instead."
        )
    for name, value in defaults.items():
        if name not in inherited:
            raise TypeError(unknown_key_message(name, list(inherited), f"{cls.__name__}.DEFAULTS"))
        owner, f = inherited[name]
        try:
            tp = typing.get_type_hints(owner)[name]
        except (NameError, TypeError):  # unresolvable string annotation: keep it as written
            tp = f.type
        own[name] = tp
        setattr(cls, name, dataclasses.field(
            default=value, repr=f.repr, hash=f.hash, compare=f.compare, metadata=f.metadata,
            kw_only=f.kw_only))


def _bind_positional(cls: type, args: tuple, kwargs: dict[str, Any]) -> dict[str, Any]:
    """Names positional constructor arguments (fields that are not keyword-only)."""
    positional = [f.name for f in dataclasses.fields(cls) if f.init and not f.kw_only]
    if len(args) > len(positional):
        raise ConfigError(f"{cls.__name__} takes at most {len(positional)} positional "
                          f"arguments; got {len(args)}. Pass fields by name.")
    out = dict(kwargs)
    for name, value in zip(positional, args, strict=False):
        if name in out:
            raise ConfigError(f"{cls.__name__}: {name} is given twice.")
        out[name] = value
    return out


@functools.cache
def _init_fields(cls: type) -> tuple[tuple[dataclasses.Field, ...], frozenset[str]]:
    """The ``__init__`` fields of ``cls`` and the keys its constructor accepts."""
    fields = tuple(f for f in dataclasses.fields(cls) if f.init)
    return fields, frozenset(f.name for f in fields) | frozenset(cls.PASS_DOWN)


@functools.cache
def _field_checks(cls: type) -> tuple[Callable[[Any], None], ...]:
    """Every ``check_fields`` defined along the MRO of ``cls``, bases first."""
    return tuple(vars(k)["check_fields"] for k in reversed(cls.__mro__)
                 if "check_fields" in vars(k))


class _ConfigMeta(type):
    """Runs :meth:`ConfigBase.prepare` before a config's dataclass ``__init__``.

    Every way of making a config (``Cls(...)``, ``from_dict``, ``from_size``,
    ``replace``, ``dataclasses.replace``) passes through here, so a frozen
    config is complete and normalised when it comes into existence.
    """

    def __call__(cls, *args, **kwargs):
        if args:
            kwargs = _bind_positional(cls, args, kwargs)
        fields, valid = _init_fields(cls)
        for key in kwargs:
            if key not in valid:
                raise ConfigError(unknown_key_message(key, sorted(valid), cls.__name__))
        values = dict(kwargs)
        for f in fields:
            if f.name in values:
                continue
            if f.default is not dataclasses.MISSING:
                values[f.name] = f.default
            elif f.default_factory is not dataclasses.MISSING:
                values[f.name] = f.default_factory()
            else:
                raise ConfigError(f"{cls.__name__}: {f.name} has no default; pass it, e.g. "
                                  f"{cls.__name__}({f.name}=...).")
        return super().__call__(**cls.prepare(values))


@dataclasses.dataclass(frozen=True, kw_only=True)
class ConfigBase(metaclass=_ConfigMeta):
    """Base class for frozen, validated config dataclasses.

    Subclasses are ``@dataclasses.dataclass(frozen=True, kw_only=True)`` and may
    define

    * ``SIZES``: a size table ``{"tiny": {...overrides...}, ...}`` used by
      :meth:`from_size`;
    * ``DEFAULTS``: new defaults for fields they inherit, ``{"d_model": 768}``.
      A field is declared once (in a shared field group such as
      :class:`jaxmm.layers.config_fields.TransformerFields`); a family changes its
      default here and never re-declares it (that raises ``TypeError``);
    * ``check_fields(self)``: the checks of a field group's own fields. Every
      class's ``check_fields`` in the MRO runs (bases first), so a family's
      ``validate`` cannot skip them;
    * ``validate(self)``: raise :class:`ConfigError` for inconsistent values;
    * ``prepare(cls, values)``: normalise the constructor's values before the
      object exists (see below);
    * ``PASS_DOWN``: keys a composite config accepts and hands to every
      sub-config field that has them (``CLIPConfig(dtype="bfloat16")`` sets both
      towers' ``dtype``); ``None`` leaves the sub-configs' own values. They are
      not fields: ``to_dict`` does not list them.

    Construction. Every way of making a config (``Cls(**values)``,
    :meth:`from_dict`, :meth:`from_size`, :meth:`replace`) fills in the defaults,
    rejects unknown keys naming the nearest valid ones, and calls
    :meth:`prepare` on the complete values; then the frozen dataclass is built
    and validated. Nothing mutates a config after that. The generic
    :meth:`prepare` turns a mapping given for a config-typed field into that
    config, lists into tuples, and applies ``PASS_DOWN`` keys; families extend it
    for derived values (a captioner's decoder ids, an encoder named by size).
    """

    SIZES: ClassVar[Mapping[str, Mapping[str, Any]]] = {}
    DEFAULTS: ClassVar[Mapping[str, Any]] = {}
    PASS_DOWN: ClassVar[tuple[str, ...]] = ()

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        _apply_defaults(cls, cls.__dict__.get("DEFAULTS", {}))

    def __post_init__(self):
        for check in _field_checks(type(self)):
            check(self)
        self.validate()

    def validate(self) -> None:  # pragma: no cover - overridden
        """Checks the values; subclasses raise ConfigError on bad ones."""

    # -- checks shared by the field groups and families ------------------
    def config_error(self, message: str) -> ConfigError:
        """``ConfigError("<ClassName>: message")`` (raise it)."""
        return ConfigError(f"{type(self).__name__}: {message}")

    def require_one_of(self, name: str, allowed: Iterable[Any]) -> None:
        """``self.<name>`` must be one of ``allowed``."""
        allowed = tuple(allowed)
        value = getattr(self, name)
        if value not in allowed:
            raise self.config_error(
                f"{name}={value!r} is not one of {', '.join(str(a) for a in allowed)}.")

    def require_at_least(self, low: float, *names: str) -> None:
        """Each of ``self.<names>`` must be ``>= low``."""
        for name in names:
            if getattr(self, name) < low:
                raise self.config_error(f"{name} must be >= {low}; got {getattr(self, name)}.")

    def require_rate(self, *names: str) -> None:
        """Each of ``self.<names>`` must be a probability in ``[0, 1)``."""
        for name in names:
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                raise self.config_error(f"{name} must be in [0, 1); got {value}.")

    # -- construction ----------------------------------------------------
    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def prepare(cls, values: dict[str, Any]) -> dict[str, Any]:
        """Normalises the complete constructor values (every field present).

        Generic rules: a mapping for a config-typed field becomes that config
        (``from_dict``); a list becomes a tuple; ``PASS_DOWN`` keys are removed
        and applied to every sub-config that has them. Families override this
        (calling ``super().prepare``) for derived values; it must not depend on
        anything but ``values``.
        """
        nested = _nested_config_types(cls)
        for name, val in values.items():
            if isinstance(val, list):
                values[name] = tuple(val)
            elif name in nested and isinstance(val, Mapping | ml_collections.ConfigDict):
                values[name] = nested[name].from_dict(val)
        if cls.PASS_DOWN:
            shared = {k: values.pop(k) for k in cls.PASS_DOWN if k in values}
            shared = {k: v for k, v in shared.items() if v is not None}
            for name in nested if shared else ():
                sub = values[name]
                given = {k: v for k, v in shared.items() if k in sub.field_names()}
                values[name] = sub.replace(**given) if given else sub
        return values

    @classmethod
    def from_dict(cls: type[T], values: Mapping[str, Any] | None = None, **kwargs) -> T:
        """Builds the config from a (possibly nested) mapping.

        Unknown keys raise :class:`ConfigError` naming the nearest valid keys.
        Nested ``ConfigBase`` fields accept mappings.
        """
        if isinstance(values, ml_collections.ConfigDict):
            values = values.to_dict()
        merged = dict(values or {})
        merged.update(kwargs)
        return cls(**merged)

    @classmethod
    def from_size(cls: type[T], size: str, **overrides) -> T:
        """Builds a config from the class's size table, then applies overrides."""
        if size not in cls.SIZES:
            hint = did_you_mean(size, list(cls.SIZES))
            raise ConfigError(
                f"Unknown size {size!r} for {cls.__name__}.{hint} "
                f"Available sizes: {', '.join(cls.SIZES)}."
            )
        values = dict(cls.SIZES[size])
        values.update(overrides)
        return cls.from_dict(values)

    def replace(self: T, **changes) -> T:
        """Returns a copy with ``changes`` applied (unknown keys are rejected)."""
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


def builtin_config_dir() -> Path | importlib.resources.abc.Traversable:
    """The folder of jaxmm's built-in configs (the repository's ``configs/``).

    In a source checkout (editable install, or the checkout on ``sys.path``) that is
    ``configs/`` next to the package; an installed wheel ships it as the data package
    ``jaxmm.configs``, found through :mod:`importlib.resources`.
    """
    checkout = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if os.path.isfile(os.path.join(checkout, "pyproject.toml")) and \
            os.path.isdir(os.path.join(checkout, "configs")):
        return Path(checkout, "configs")
    return importlib.resources.files("jaxmm.configs")


def builtin_configs() -> list[str]:
    """The file names of the built-in configs (``["asr_whisper.py", ...]``)."""
    try:
        folder = builtin_config_dir()
        names = [f.name for f in folder.iterdir()]
    except (ModuleNotFoundError, OSError):
        return []
    return sorted(n for n in names if n.endswith(".py") and not n.startswith("_"))


def resolve_config_file(path: str) -> str:
    """``path`` when it is a file; else the built-in config of that name.

    A bare name (``lm_gpt.py`` or ``lm_gpt``) or ``configs/<name>`` that is not a
    local file names a built-in config, so ``jaxmm train --config lm_gpt.py:tiny``
    works from any directory after ``pip install``. An existing local file wins.
    """
    if os.path.isfile(path):
        return path
    folder, name = os.path.split(os.path.normpath(path)) if path else ("", "")
    builtin = builtin_configs()
    if folder in ("", "configs") and name:
        name = name if name.endswith(".py") else name + ".py"
        if name in builtin:
            return str(builtin_config_dir() / name)
    raise ConfigError(
        f"Config file {path!r} does not exist and is not a built-in config "
        f"(built-in: {', '.join(builtin) or 'none found'}).",
        hint="Pass a path to a config file (like configs/*.py) or a built-in name, optionally "
             "followed by ':arg', e.g. --config lm_gpt.py:tiny",
    )


def load_config(spec: str, overrides: Sequence[str] = ()) -> ml_collections.ConfigDict:
    """Loads ``path/to/config.py[:arg]`` and applies ``--config.x.y=v`` overrides.

    ``path`` may also name a built-in config (``lm_gpt.py:tiny``; see
    :func:`resolve_config_file`). The file must define ``get_config(arg=None)``
    returning a ConfigDict.
    ``overrides`` holds strings ``"a.b=value"`` (the ``--config.`` prefix is
    optional). The returned config is locked: new keys cannot be added by
    mistake later.
    """
    path, _, arg = spec.partition(":")
    path = resolve_config_file(path)
    module_name = "_jaxmm_config_" + os.path.splitext(os.path.basename(path))[0]
    loader_spec = importlib.util.spec_from_file_location(module_name, path)
    if loader_spec is None or loader_spec.loader is None:
        raise ConfigError(f"Config file {path!r} cannot be imported as Python.")
    module = importlib.util.module_from_spec(loader_spec)
    try:
        loader_spec.loader.exec_module(module)
    except SyntaxError as e:
        raise ConfigError(f"{path}:{e.lineno}: syntax error in the config file: {e.msg}.",
                          hint="Fix the file (python -m py_compile FILE shows the spot)."
                          ) from e
    except Exception as e:  # noqa: BLE001 - any failure of the user's file is reported
        raise _config_file_error(path, "importing it", e) from e
    if not callable(getattr(module, "get_config", None)):
        raise ConfigError(f"Config file {path!r} has no get_config(arg) function.")
    try:
        config = module.get_config(arg) if arg else module.get_config()
    except Exception as e:  # noqa: BLE001
        call = f"get_config({arg!r})" if arg else "get_config()"
        raise _config_file_error(path, call, e) from e
    if not isinstance(config, ml_collections.ConfigDict):
        raise ConfigError(
            f"get_config() in {path!r} returned {type(config).__name__}; "
            "it must return an ml_collections.ConfigDict."
        )
    apply_overrides(config, overrides)
    config.lock()
    return config


def _config_file_error(path: str, doing: str, error: Exception) -> ConfigError:
    """``ConfigError("path:line: <doing> failed: <error>")``; the line is the last one
    of the config file in the error's traceback."""
    target = os.path.abspath(path)
    lines = [f.lineno for f in traceback.extract_tb(error.__traceback__)
             if os.path.abspath(f.filename) == target]
    where = f"{path}:{lines[-1]}" if lines else path
    what = str(error) if isinstance(error, ConfigError) else \
        f"{type(error).__name__}: {error}".rstrip(": ")
    return ConfigError(f"{where}: {doing} failed: {what}",
                       hint=None if isinstance(error, ConfigError) else
                       "Fix the config file (or its :arg).")
