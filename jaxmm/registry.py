"""One registry class behind every "pick it by name" table in jaxmm.

Models, training tasks, Hugging Face converters, preprocessing ops, data presets
and evaluators are all looked up by name from a config. Each kind keeps one
:class:`Registry`::

    MODELS = Registry("model", config_key="model.name",
                      loader=lambda: importlib.import_module("jaxmm.models"))

    @MODELS.register("gpt")
    class GPTLMHeadModel(nn.Module): ...

    MODELS.get("gtp")   # ConfigError: Unknown model 'gtp' (config key model.name).
                        # Did you mean 'gpt'? Registered models: bert, gpt, ...

``loader`` imports the modules that register the built-in entries; it runs once,
on the first lookup, so importing a registry stays cheap. Tests (and notebooks)
add an entry for a block of code only with :meth:`Registry.temporary`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

from jaxmm.config import ConfigError, nearest

__all__ = ["Registry"]

T = TypeVar("T")
_MISSING = object()


class Registry(Generic[T]):
    """A name -> entry table with nearest-name errors.

    Args:
      kind: what the entries are, singular ("model", "task", "preprocessing op"),
        used in messages.
      config_key: the run-config key that names an entry (for the message).
      loader: called once before the first lookup; imports the modules whose
        import registers the built-in entries.
      error: the exception class raised for an unknown name (default
        :class:`jaxmm.config.ConfigError`).
    """

    def __init__(self, kind: str, *, config_key: str | None = None,
                 loader: Callable[[], Any] | None = None,
                 error: type[Exception] | None = None):
        self.kind = kind
        self.config_key = config_key
        self._loader = loader
        self._loaded = loader is None
        self._error = error
        self._entries: dict[str, T] = {}

    # -- adding ---------------------------------------------------------------
    def register(self, name: str, entry: Any = _MISSING) -> Any:
        """Adds ``entry`` under ``name``; without ``entry``, a decorator that does.

        Registering a different entry under a taken name raises ``ValueError``
        (re-registering the same object, e.g. on a module reload, is allowed).
        """
        if entry is _MISSING:
            def decorator(obj: T) -> T:
                self.register(name, obj)
                return obj

            return decorator
        if not name or not isinstance(name, str):
            raise ValueError(f"A {self.kind} needs a non-empty string name; got {name!r}.")
        old = self._entries.get(name, _MISSING)
        if old is not _MISSING and not _same_entry(old, entry):
            raise ValueError(f"{self.kind.capitalize()} name {name!r} is already registered "
                             f"({_describe(old)}); pick another name.")
        self._entries[name] = entry
        return entry

    @contextlib.contextmanager
    def temporary(self, name: str, entry: T) -> Iterator[T]:
        """Registers ``entry`` for the ``with`` block, then restores the table."""
        self._ensure_loaded()
        old = self._entries.get(name, _MISSING)
        self._entries[name] = entry
        try:
            yield entry
        finally:
            if old is _MISSING:
                self._entries.pop(name, None)
            else:
                self._entries[name] = old

    # -- looking up -------------------------------------------------------------
    def _ensure_loaded(self) -> None:
        if not self._loaded:
            self._loaded = True  # set first: the loader's imports register entries
            try:
                self._loader()
            except BaseException:
                self._loaded = False
                raise

    def get(self, name: str) -> T:
        """The entry registered as ``name``; an unknown name raises naming close ones."""
        self._ensure_loaded()
        try:
            return self._entries[name]
        except (KeyError, TypeError):
            raise self.unknown(name) from None

    def unknown(self, name: Any) -> Exception:
        """The error for an unknown ``name`` (nearest names, then every name)."""
        close = nearest(str(name), list(self._entries))
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        where = f" (config key {self.config_key})" if self.config_key else ""
        error = self._error or ConfigError
        listing = ", ".join(sorted(self._entries)) or "none"
        return error(f"Unknown {self.kind} {name!r}{where}.{hint} "
                     f"Registered {self.kind}s: {listing}.")

    def names(self) -> list[str]:
        """Registered names, sorted."""
        self._ensure_loaded()
        return sorted(self._entries)

    def items(self) -> list[tuple[str, T]]:
        """``(name, entry)`` pairs, sorted by name."""
        self._ensure_loaded()
        return sorted(self._entries.items())

    def __contains__(self, name: object) -> bool:
        self._ensure_loaded()
        return name in self._entries

    def __len__(self) -> int:
        self._ensure_loaded()
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {len(self._entries)} entries)"


def _describe(entry: Any) -> str:
    module = getattr(entry, "__module__", None)
    qualname = getattr(entry, "__qualname__", None)
    return f"{module}.{qualname}" if module and qualname else repr(entry)


def _same_entry(old: Any, new: Any) -> bool:
    """Whether ``new`` may replace ``old``: the same object, an equal value, or
    the same definition run again (same module and qualified name: re-executing
    a module with ``importlib.reload`` or a notebook cell creates new objects)."""
    if old is new:
        return True
    try:
        if bool(old == new):
            return True
    except Exception:  # noqa: BLE001 - values without a usable ==
        pass
    name = getattr(old, "__qualname__", None)
    return (name is not None and name == getattr(new, "__qualname__", None)
            and getattr(old, "__module__", None) == getattr(new, "__module__", None))
