"""The workdir's record of a run: which config trained its checkpoints.

* ``config.json`` is the config of the latest run, and ``config.<step>.json``
  the config of the run that started (``config.0.json``) or resumed at
  ``<step>``, so the history is kept. Both are written only once a run has
  started: built, its data opened, its state restored (:meth:`RunRecord.write`).
  A run that then fails before saving a checkpoint (an error in the data, NaN,
  Ctrl-C) puts the previous record back (:meth:`RunRecord.rollback`), so a
  failed run never changes what the workdir says its checkpoints were
  trained with.
* Resuming with a different config prints the keys that differ. Keys that
  only change how the run continues (:data:`SAFE_TO_CHANGE`: ``num_steps``,
  logging, evaluation, checkpoint cadence, mesh, ...) are accepted; any other
  change (model, task, data, tokenizer, optimizer, batch size, seed, ...)
  stops the run with one line before anything is touched, unless
  ``allow_changes=True``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

import jax
from ml_collections import ConfigDict

from jaxmm import storage
from jaxmm.config import ConfigError

__all__ = ["SAFE_TO_CHANGE", "RunRecord", "checkpoint_steps", "config_changes", "resolve_workdir"]

# Config keys (and sections) that may differ when resuming: they change how the
# run continues, not what its checkpoints and data stream mean.
SAFE_TO_CHANGE = (
    "num_steps", "log", "eval", "checkpoint", "compilation_cache_dir", "device_prefetch",
    "distributed", "mesh", "sharding_rules", "allow_changes",
    "init",  # used only at step 0
    "data.data_dir", "data.prepare", "data.description", "data.prefetch",
    "data.num_parallel_calls", "data.read_chunk",
)
_ABSENT = "(absent)"


def resolve_workdir(workdir: str | os.PathLike) -> str:
    """The absolute workdir, or its ``gs://`` URL unchanged (:func:`jaxmm.storage.resolve`);
    a one-line error if it names something that is not a directory."""
    path = storage.resolve(workdir, "--workdir")
    if storage.exists(path) and not storage.is_dir(path):
        raise ConfigError(f"--workdir {path} exists and is not a directory; pass a directory "
                          "(new or a run's workdir).")
    return path


def checkpoint_steps(directory: str) -> list[int]:
    """Steps with a directory in ``directory`` (``[]`` if it does not exist; a path or URL)."""
    return sorted(int(n) for n in storage.listdir(directory)
                  if n.isdigit() and storage.is_dir(os.path.join(directory, n)))


def _flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, Mapping) and value:
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _safe(key: str) -> bool:
    return any(key == k or key.startswith(k + ".") for k in SAFE_TO_CHANGE)


def config_changes(recorded: Mapping[str, Any], config: Mapping[str, Any]
                   ) -> list[tuple[str, Any, Any]]:
    """``(key, recorded value, new value)`` for every leaf that differs (sorted by key);
    a key missing on one side has the value ``"(absent)"``."""
    old, new = _flatten(recorded), _flatten(config)
    return [(k, old.get(k, _ABSENT), new.get(k, _ABSENT)) for k in sorted(set(old) | set(new))
            if old.get(k, _ABSENT) != new.get(k, _ABSENT)]


def _show(value: Any) -> str:
    text = value if value == _ABSENT else json.dumps(value)
    return text if len(text) <= 60 else text[:57] + "..."


class RunRecord:
    """``config.json`` and ``config.<step>.json`` of a workdir (see the module docstring).

    Args:
      workdir: the run's (absolute) workdir, or its URL.
      config: the resolved run config.
    """

    def __init__(self, workdir: str, config: ConfigDict):
        self.workdir = workdir
        self.path = os.path.join(workdir, "config.json")
        self.text = config.to_json(indent=2)
        self.config = json.loads(self.text)
        self._undo: list[tuple[str, str | None]] = []  # (path, previous text or None)

    def recorded(self) -> dict[str, Any] | None:
        """The recorded config (``None``: no readable ``config.json``)."""
        try:
            return json.loads(storage.read_text(self.path))
        except (OSError, ValueError):
            return None

    def check_resume(self, *, allow_changes: bool) -> list[tuple[str, Any, Any]]:
        """Compares the config with the record before resuming: prints the keys that
        differ and raises :class:`ConfigError` if one of them is not safe to change
        (unless ``allow_changes``). Returns the differences."""
        recorded = self.recorded()
        if recorded is None:
            return []
        changes = [c for c in config_changes(recorded, self.config) if c[0] != "allow_changes"]
        if not changes:
            return []
        listing = "; ".join(f"{k}: {_show(a)} -> {_show(b)}" for k, a, b in changes)
        if jax.process_index() == 0:
            print(f"jaxmm train: the config differs from {self.path} in {len(changes)} key(s): "
                  f"{listing}", flush=True)
        # A key absent on one side comes from another jaxmm version (defaults are
        # filled in), except in the free-form data section, where the user added it.
        unsafe = [c for c in changes if not _safe(c[0])
                  and (_ABSENT not in (c[1], c[2]) or c[0].startswith("data."))]
        if unsafe and not allow_changes:
            raise ConfigError(
                f"Resuming {self.workdir} with a config that changes what its checkpoints "
                "mean: " + ", ".join(f"{k} ({_show(a)} -> {_show(b)})" for k, a, b in unsafe)
                + f". Resume with the recorded config ({self.path}), use a new workdir, or "
                "pass --config.allow_changes=true to resume anyway.")
        return changes

    def write(self, step: int) -> None:
        """Records the config as the latest and as the one that started at ``step``."""
        if jax.process_index() != 0:
            return
        storage.makedirs(self.workdir)
        for path in (self.path, os.path.join(self.workdir, f"config.{step}.json")):
            previous = storage.read_text(path) if storage.exists(path) else None
            self._undo.append((path, previous))
            storage.write_text(path, self.text)

    def rollback(self) -> None:
        """Puts back what :meth:`write` replaced (the run failed before saving)."""
        for path, previous in reversed(self._undo):
            if previous is None:
                if storage.exists(path):
                    storage.remove(path)
            else:
                storage.write_text(path, previous)
        self._undo.clear()
