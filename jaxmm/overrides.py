"""Command-line overrides of a run config: ``--config.a.b=VALUE``, parsed by type.

A value is parsed as the type its key declares. The caller says what a key
declares with ``key_types(path) -> annotation`` (the run config's table and the
type hints of the model, task and evaluator config classes, see
:func:`jaxmm.train.run_config.key_types`); a key without a declaration takes
the type of its current value. What the text may be, per declared type:

=====================  =================================================================
``int``, ``float``     a number (``3``, ``3e-4``; an int is fine for a float)
``bool``               ``true``/``false`` (also ``yes``/``no``, ``on``/``off``, ``1``/``0``)
``str``                the text as written (no quotes needed)
``tuple[X, ...]``      ``(1, 2)``, ``[1, 2]``, ``1,2`` or one value ``3`` (= ``(3,)``)
``X | None``           ``None`` (also ``none``/``null``) or an ``X``
``Literal[...]``       one of the listed values
``Any`` (undeclared,   a Python literal (``3``, ``(1, 2)``, ``'a'``), ``true``/``false``/
current value None)    ``None``, or else the text itself
=====================  =================================================================

``None`` is accepted only by keys that declare it (``int | None``, or a key
whose current value is ``None``): ``--config.num_steps=None`` is refused.
"""

from __future__ import annotations

import ast
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import ml_collections

from jaxmm.errors import ConfigError, did_you_mean

__all__ = ["apply_overrides", "parse_override_args", "parse_value", "unknown_key_message"]

KeyTypes = Callable[[str], Any]  # dotted key path -> its annotation, or None (undeclared)

_NONE_WORDS = ("none", "null")
_TRUE_WORDS = ("true", "yes", "on", "1")
_FALSE_WORDS = ("false", "no", "off", "0")


class _Mismatch(Exception):
    """A parsed value does not fit the declared type (turned into a ConfigError)."""


def unknown_key_message(key: str, valid: Sequence[str], where: str) -> str:
    """``Unknown config key 'k' for <where>. Did you mean ...? Valid keys: ...``."""
    return (f"Unknown config key {key!r} for {where}.{did_you_mean(key, valid)} "
            f"Valid keys: {', '.join(sorted(valid))}.")


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


# ---------------------------------------------------------------------------
# Text -> value of a declared type
# ---------------------------------------------------------------------------


def _union_args(tp: Any) -> tuple[Any, ...] | None:
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return typing.get_args(tp)
    return None


def accepts_none(tp: Any) -> bool:
    """Whether the annotation ``tp`` admits ``None`` (``X | None``, ``Any``)."""
    if tp is Any or tp is type(None):
        return True
    args = _union_args(tp)
    return args is not None and any(accepts_none(a) for a in args)


def implied_type(value: Any) -> Any:
    """The annotation an undeclared key takes from its current value."""
    if value is None:
        return Any
    if isinstance(value, bool | int | float | str):
        return type(value)
    if isinstance(value, tuple | list):
        return tuple
    return Any


def _literal(text: str) -> Any:
    """The Python value a piece of override text spells (see the module docstring)."""
    s = text.strip()
    try:
        return ast.literal_eval(s)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        pass
    low = s.lower()
    if low in ("true", "false"):
        return low == "true"
    if low in _NONE_WORDS:
        return None
    inner = s[1:-1] if s[:1] + s[-1:] in ("()", "[]") else s
    if "," in inner or inner is not s:
        return tuple(_literal(p) for p in inner.split(",") if p.strip())
    return s


def _tuples(value: Any) -> Any:
    if isinstance(value, list | tuple):
        return tuple(_tuples(v) for v in value)
    return value


def _coerce(value: Any, tp: Any, text: str | None) -> Any:
    """``value`` converted to the annotation ``tp``; raises _Mismatch if it does not fit.

    ``text``: what the user typed, for a ``str`` (``None`` inside a tuple)."""
    if tp is Any or tp is object:
        return _tuples(value)
    union = _union_args(tp)
    if union is not None:
        if value is None and type(None) in union:
            return None
        for member in union:
            if member is not type(None):
                try:
                    return _coerce(value, member, text)
                except _Mismatch:
                    continue
        raise _Mismatch
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Literal:
        if value in args or (text is not None and text.strip() in args):
            return value if value in args else text.strip()
        raise _Mismatch
    if tp is type(None):
        if value is None:
            return None
        raise _Mismatch
    if tp is bool:
        return _as_bool(value)
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise _Mismatch
    if tp is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        raise _Mismatch
    if tp is str:
        if isinstance(value, str):
            return value
        if text is not None:
            return text.strip()
        if isinstance(value, int | float) and not isinstance(value, bool):
            return str(value)
        raise _Mismatch
    if tp is tuple or origin is tuple or origin in (list, Sequence) or tp is list:
        return _as_tuple(value, args)
    if tp is dict or origin in (dict, Mapping):
        if isinstance(value, dict):
            return value
        raise _Mismatch
    if isinstance(tp, type):
        if isinstance(value, tp) or (isinstance(value, dict) and hasattr(tp, "from_dict")):
            return value  # a nested config may be given as a mapping
        raise _Mismatch
    return value  # an annotation this parser does not check (a TypeVar, a Callable)


def _as_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _TRUE_WORDS + _FALSE_WORDS:
        return value.strip().lower() in _TRUE_WORDS
    raise _Mismatch


def _as_tuple(value: Any, args: tuple[Any, ...]) -> tuple:
    items = tuple(value) if isinstance(value, list | tuple) else (value,)
    if not args:
        return _tuples(items)
    if len(args) == 2 and args[1] is Ellipsis:
        return tuple(_coerce(v, args[0], None) for v in items)
    if len(items) != len(args):
        raise _Mismatch
    return tuple(_coerce(v, a, None) for v, a in zip(items, args, strict=True))


def describe_type(tp: Any) -> str:
    """``int or None``, ``a tuple of int``, ``a boolean (true/false)``, ... for messages."""
    union = _union_args(tp)
    if union is not None:
        return " or ".join(describe_type(a) for a in union)
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is type(None):
        return "None"
    if tp is bool:
        return "a boolean (true/false)"
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if tp is tuple or origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return f"a tuple of {describe_type(args[0])} like (1, 2)"
        return "a tuple" + (f" ({', '.join(describe_type(a) for a in args)})" if args else "")
    return getattr(tp, "__name__", str(tp))


def parse_value(text: str, tp: Any, path: str) -> Any:
    """The value ``text`` spells for a key declared as ``tp`` (see the module docstring).

    Raises :class:`ConfigError` naming the key, the text and the expected type.
    """
    if accepts_none(tp) and text.strip().lower() in _NONE_WORDS:
        return None
    if tp is str or (_union_args(tp) is not None and set(_union_args(tp)) <= {str, type(None)}):
        return text
    value = _literal(text)
    try:
        return _coerce(value, tp, text)
    except _Mismatch:
        pass
    expected = describe_type(tp)
    if value is None:
        message = f"{path} does not accept None; expected {expected}"
    elif tp is bool:
        message = "expected a boolean (true/false)"
    elif isinstance(value, str) and value == text.strip():  # not a Python literal
        message = f"cannot parse as {expected}"
    else:
        message = f"expected {expected}, got {type(value).__name__}"
    raise ConfigError(f"Override {path}={text!r}: {message}.")


# ---------------------------------------------------------------------------
# Applying overrides to a ConfigDict
# ---------------------------------------------------------------------------


def _leaf(config: ml_collections.ConfigDict, path: str, open_sections: Sequence[str] = ()
          ) -> tuple[ml_collections.ConfigDict, str]:
    """The section holding ``path``'s last key, and that key; unknown keys raise, except
    a last key directly in one of the ``open_sections``."""
    node = config
    parts = path.split(".")
    for depth, part in enumerate(parts):
        keys = list(node.keys()) if isinstance(node, ml_collections.ConfigDict) else []
        if (part not in keys and depth == len(parts) - 1 and depth
                and ".".join(parts[:depth]) in open_sections
                and isinstance(node, ml_collections.ConfigDict)):
            break
        if part not in keys:
            where = ".".join(parts[:depth]) or "the config"
            raise ConfigError(unknown_key_message(part, keys, where))
        if depth < len(parts) - 1:
            node = node[part]
            if not isinstance(node, ml_collections.ConfigDict):
                raise ConfigError(f"Override {path!r}: {'.'.join(parts[: depth + 1])} is a "
                                  "value, not a section.")
    return node, parts[-1]


def apply_overrides(config: ml_collections.ConfigDict, overrides: Sequence[str],
                    key_types: KeyTypes | None = None, open_sections: Sequence[str] = ()
                    ) -> None:
    """Applies ``"a.b=value"`` overrides in place, checking every key exists.

    ``key_types(path)``: the annotation declared for the key at ``path``
    (``None``: undeclared, so the current value's type). A section accepts only
    ``None`` (to drop it), and only where its declaration allows ``None``.
    ``open_sections``: sections (``"data"``) whose consumer checks the keys, so an
    override may add a key to them (``--config.data.data_dir=DIR``).
    """
    for item in overrides:
        item = item.removeprefix("--config.")
        path, sep, text = item.partition("=")
        if not sep:
            raise ConfigError(f"Override {item!r} must have the form key.path=value.")
        node, leaf = _leaf(config, path, open_sections)
        current = node.get(leaf)
        declared = key_types(path) if key_types is not None else None
        tp = implied_type(current) if declared is None else declared
        if isinstance(current, ml_collections.ConfigDict):
            if not (accepts_none(tp) and declared is not None
                    and text.strip().lower() in _NONE_WORDS):
                raise ConfigError(f"Override {path!r} names a whole section; set its fields "
                                  f"(--config.{path}.KEY=VALUE).")
        value = parse_value(text, tp, path)
        with node.unlocked(), node.ignore_type():
            node[leaf] = value
