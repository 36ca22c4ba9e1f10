"""Orbax checkpoints of a run, and params export for inference.

A checkpoint step directory ``workdir/checkpoints/<step>/`` holds four items:

* ``model``: the model variables ``{"params": ..., **other collections}`` (a
  LoRA run: the frozen base params, and the adapters under ``"lora"``);
* ``train``: ``{"step", "rng", "opt_state"}``;
* ``data``: one JSON file per process with its data iterator's
  ``get_state()`` (``process_<i>-of-<n>.json``), so every process resumes its
  own data shard exactly;
* ``meta``: JSON with the step, process count and mesh shape.

Saves are asynchronous (the device-to-host copy happens in ``save``; writing
runs in the background) and atomic: Orbax writes to a temporary directory and
renames it when complete, and temporary leftovers of a killed save are removed
on the next start, so a hard kill never leaves a checkpoint that looks valid
but is not. The latest ``keep`` steps are kept, plus the ``keep_best`` best by
``best_metric`` when set. Restoring onto a different mesh or device count is
a matter of passing a target with the new shardings (Orbax reshards).

Corrupt checkpoints (a truncated array chunk, a missing ``_METADATA``, an empty
step directory, one written by a different model): :meth:`Checkpointer.restore_latest`
tries the steps newest first. With ``on_corrupt="fallback"`` each unreadable
step is renamed ``<step>.corrupt-<n>`` (never deleted) with a warning naming
what failed, and the run resumes from the newest readable one; with ``"fail"``
the first unreadable step stops the run. When no step can be read the run stops
with a :class:`CheckpointError` and nothing is renamed: it never starts from
scratch over existing checkpoints.

:func:`export_params` (in :mod:`jaxmm.convert.folders`, re-exported here)
writes the variables alone plus ``model.json`` (model name and config) for
inference; :func:`load_exported` reads them back.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import json
import logging
import os
import sys
import threading
from collections.abc import Iterator
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath

from jaxmm.convert.folders import configure_orbax, export_params, load_exported
from jaxmm.errors import CheckpointError, ConfigError
from jaxmm.train.steps import TrainState

log = logging.getLogger(__name__)

__all__ = ["CheckpointError", "Checkpointer", "Restored", "export_params",
           "load_exported"]  # the last two: convert.folders

ON_CORRUPT = ("fallback", "fail")
# Files Orbax writes into every step directory; without them an item cannot be
# restored without a target (``jaxmm eval``) or, for ``train``, at all.
_REQUIRED_FILES = ("model/_METADATA", "train/_METADATA")


@dataclasses.dataclass(frozen=True)
class Restored:
    """What :meth:`Checkpointer.restore_latest` restored: the ``step``, the ``state``,
    this process's ``data_state`` (``None``: saved by another process count) and the
    unreadable newer steps it ``moved`` aside as ``(step, new path, what failed)``."""

    step: int
    state: TrainState
    data_state: Any
    moved: tuple[tuple[int, str, str], ...] = ()


# ---------------------------------------------------------------------------
# Per-process JSON (data iterator state)
# ---------------------------------------------------------------------------


class ProcessJsonHandler(ocp.CheckpointHandler):
    """Saves one JSON document per process (each process writes its own file)."""

    @staticmethod
    def _name() -> str:
        return f"process_{jax.process_index()}-of-{jax.process_count()}.json"

    def save(self, directory: epath.Path, args: ProcessJsonSave) -> None:
        directory = epath.Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / self._name()).write_text(json.dumps(args.state))

    def restore(self, directory: epath.Path, args: ProcessJsonRestore | None = None) -> Any:
        path = epath.Path(directory) / self._name()
        if not path.exists():
            return None
        return json.loads(path.read_text())

    def metadata(self, directory: epath.Path) -> None:
        return None

    def finalize(self, directory: epath.Path) -> None:
        pass

    def close(self) -> None:
        pass


@ocp.args.register_with_handler(ProcessJsonHandler, for_save=True)
@dataclasses.dataclass
class ProcessJsonSave(ocp.args.CheckpointArgs):
    state: Any


@ocp.args.register_with_handler(ProcessJsonHandler, for_restore=True)
@dataclasses.dataclass
class ProcessJsonRestore(ocp.args.CheckpointArgs):
    pass


# ---------------------------------------------------------------------------
# Checkpoint manager
# ---------------------------------------------------------------------------


class Checkpointer:
    """A run's checkpoints (see the module docstring).

    Args:
      directory: where step directories go (created).
      keep: latest checkpoints kept. best_metric / best_mode / keep_best:
        also keep the ``keep_best`` checkpoints with the best value of that
        metric (``"eval/loss"``...) among those saved with metrics.
      async_save: write in the background.
      on_corrupt: what :meth:`restore_latest` does with an unreadable step:
        ``"fallback"`` (move it aside, try the next older) or ``"fail"``.
      create: create ``directory`` if missing (``False`` for read-only use).
    """

    def __init__(self, directory: str | os.PathLike, *, keep: int = 2,
                 best_metric: str | None = None, best_mode: str = "min", keep_best: int = 1,
                 async_save: bool = True, on_corrupt: str = "fallback", create: bool = True):
        if on_corrupt not in ON_CORRUPT:
            raise ConfigError(f"checkpoint.on_corrupt must be one of {ON_CORRUPT}; got "
                              f"{on_corrupt!r}.")
        if best_mode not in ("min", "max"):
            raise ConfigError(f"checkpoint.best_mode must be 'min' or 'max'; got {best_mode!r}.")
        if keep < 1:
            raise ConfigError(f"checkpoint.keep must be >= 1; got {keep}.")
        configure_orbax()
        pp = ocp.checkpoint_managers
        policies = [pp.LatestN(keep)]
        if best_metric:
            policies.append(pp.BestN(get_metric_fn=lambda m: m[best_metric],
                                     reverse=best_mode == "min", n=keep_best,
                                     keep_checkpoints_without_metrics=False))
        options = ocp.CheckpointManagerOptions(
            preservation_policy=pp.AnyPreservationPolicy(policies),
            enable_async_checkpointing=async_save,
            cleanup_tmp_directories=True,
            create=create,
        )
        self.directory = epath.Path(directory)
        self.best_metric, self.on_corrupt = best_metric, on_corrupt
        self.saved: list[int] = []  # steps this Checkpointer has saved
        self.manager = ocp.CheckpointManager(
            self.directory, options=options,
            item_names=("model", "train", "data", "meta"),
        )

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def all_steps(self) -> list[int]:
        return list(self.manager.all_steps())

    def save(self, state: TrainState, *, data_state: Any = None,
             metrics: dict[str, float] | None = None, meta: dict[str, Any] | None = None) -> int:
        """Starts saving ``state`` at ``state.step`` (waits for a previous save first)."""
        step = int(jax.device_get(state.step))
        if metrics is not None and self.best_metric and self.best_metric not in metrics:
            metrics = None
        args = ocp.args.Composite(
            model=ocp.args.StandardSave(state.saved_variables),
            train=ocp.args.StandardSave(
                {"step": state.step, "rng": state.rng, "opt_state": state.opt_state}),
            data=ProcessJsonSave(data_state),
            meta=ocp.args.JsonSave({"step": step, "process_count": jax.process_count(),
                                    **(meta or {})}),
        )
        self.manager.save(step, args=args, metrics=metrics, force=True)
        self.saved.append(step)
        return step

    def restore(self, step: int, target: TrainState) -> tuple[TrainState, Any]:
        """Restores ``step`` onto ``target`` (a TrainState of ``ShapeDtypeStruct``s
        with shardings). Returns ``(state, this process's data state or None)``."""
        restored = self.manager.restore(step, args=ocp.args.Composite(
            model=ocp.args.StandardRestore(target.saved_variables),
            train=ocp.args.StandardRestore(
                {"step": target.step, "rng": target.rng, "opt_state": target.opt_state}),
            data=ProcessJsonRestore(),
        ))
        variables, train = dict(restored.model), restored.train
        params = variables.pop("params")
        adapters = variables.pop("lora", None)
        state = target.replace(step=train["step"], params=params, extra=variables,
                               opt_state=train["opt_state"], rng=train["rng"], lora=adapters)
        return state, restored.data

    def restore_variables(self, step: int, target: Any = None) -> Any:
        """Restores only the model variables of ``step`` (evaluation, export).

        ``target``: a tree of ``ShapeDtypeStruct`` with shardings; ``None``
        restores with the saved shardings where the devices allow. Raises
        :class:`CheckpointError` (one line, naming what failed) if it cannot be read.
        """
        if step not in self.step_dirs():
            raise CheckpointError(f"No checkpoint step {step} in {self.directory}; available: "
                                  f"{self.step_dirs() or 'none'}.")
        with _quiet_async_errors():
            try:
                self._check_files(step)
                return self.manager.restore(
                    step, args=ocp.args.Composite(model=ocp.args.StandardRestore(target))).model
            except Exception as e:  # noqa: BLE001 - any read failure is reported the same way
                why = describe_failure(e)
        older = [s for s in self.step_dirs() if s < step]
        raise CheckpointError(f"Checkpoint step {step} in {self.directory} cannot be read: {why}"
                              + (f" Evaluate an older step (--step {older[-1]})." if older
                                 else ""))

    # -- corrupt checkpoints -------------------------------------------------

    def step_dirs(self) -> list[int]:
        """Steps present on disk (integer-named directories, whatever their content)."""
        self.manager.reload()
        on_disk = []
        if self.directory.exists():
            on_disk = [int(p.name) for p in self.directory.iterdir()
                       if p.name.isdigit() and p.is_dir()]
        return sorted(set(on_disk) | set(self.manager.all_steps()))

    def _check_files(self, step: int) -> None:
        for name in _REQUIRED_FILES:
            path = self.directory / str(step) / name
            if not path.exists():
                raise FileNotFoundError(f"missing file {path}")

    def _try_restore(self, step: int, target: TrainState) -> tuple[TrainState, Any] | str:
        """``restore(step)``, or why it failed (one line; agreed by all processes)."""
        with _quiet_async_errors():  # (exits after the failure's traceback is released)
            try:
                self._check_files(step)
                result: tuple[TrainState, Any] | str = self.restore(step, target)
            except Exception as e:  # noqa: BLE001 - every read failure means "unreadable"
                result = describe_failure(e)
        ok = not isinstance(result, str)
        if jax.process_count() > 1:  # unreadable for one process: unreadable for all
            from jax.experimental import multihost_utils

            ok = bool(np.all(multihost_utils.process_allgather(np.int32(ok))))
            if not ok and not isinstance(result, str):
                result = "another process could not read it."
        return result

    def restore_latest(self, target: TrainState) -> Restored | None:
        """Restores the newest readable step onto ``target`` (``None``: no step at all).

        Unreadable newer steps are moved aside (``on_corrupt="fallback"``) or stop
        the run (``"fail"``); see the module docstring. Raises
        :class:`CheckpointError` when no step can be read (nothing is renamed then).
        """
        failed: list[tuple[int, str]] = []
        for step in reversed(self.step_dirs()):
            result = self._try_restore(step, target)
            if not isinstance(result, str):
                moved = tuple((s, self._move_aside(s), why) for s, why in failed)
                for s, path, why in moved:
                    log.warning("CORRUPT CHECKPOINT: step %d in %s cannot be read: %s Moved it "
                                "aside to %s (nothing was deleted); resuming from step %d.",
                                s, self.directory, why, path, step)
                return Restored(step, *result, moved=moved)
            failed.append((step, result))
            if self.on_corrupt == "fail":
                raise CheckpointError(
                    f"Checkpoint step {step} in {self.directory} cannot be read: {failed[-1][1]} "
                    "Nothing was changed (checkpoint.on_corrupt='fail'); set "
                    "--config.checkpoint.on_corrupt=fallback to resume from the newest readable "
                    "step (unreadable ones are moved aside, not deleted).")
        if not failed:
            return None
        raise CheckpointError(
            f"No checkpoint in {self.directory} can be read ("
            + "; ".join(f"step {s}: {why}" for s, why in failed)
            + ") and nothing was changed. If the model or its shapes changed, resume with the "
            "config the checkpoints were trained with; to start from scratch, move "
            f"{self.directory} aside.")

    def _move_aside(self, step: int) -> str:
        """Renames step directory ``step`` to ``<step>.corrupt-<n>``; returns the new path."""
        src, n = self.directory / str(step), 1
        while (self.directory / f"{step}.corrupt-{n}").exists():
            n += 1
        dst = self.directory / f"{step}.corrupt-{n}"
        _sync_processes(f"jaxmm_checkpoint_move_{step}")  # every process has named it
        if jax.process_index() == 0:
            src.rename(dst)
        _sync_processes(f"jaxmm_checkpoint_moved_{step}")
        self.manager.reload()
        return str(dst)

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.close()


def _sync_processes(name: str) -> None:
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def describe_failure(error: BaseException) -> str:
    """One line saying why a checkpoint could not be read.

    The innermost cause is the most specific (TensorStore names the array and
    the database file that failed); the TensorStore spec dump is dropped.
    """
    inner, seen = error, {id(error)}
    while True:
        nxt = inner.__cause__ or inner.__context__
        if nxt is None or id(nxt) in seen or not str(nxt).strip():
            break
        seen.add(id(nxt))
        inner = nxt
    text = str(inner).strip().strip("'\"").splitlines()[0] if str(inner).strip() else ""
    text = text.split(" [tensorstore_spec=")[0]
    first, dot, _ = text.partition(". ")
    text = (first + dot).strip() or type(inner).__name__
    if len(text) > 400:
        text = text[:400] + "..."
    return f"{type(inner).__name__}: {text}" + ("" if text.endswith(".") else ".")


@contextlib.contextmanager
def _quiet_async_errors() -> Iterator[None]:
    """Keeps the echoes of a failed read off the console while it runs.

    When one array of a checkpoint cannot be read, Orbax's other read coroutines
    and threads fail too and report it as "exception never retrieved" /
    "Event loop is closed" tracebacks; the caller reports the one failure that
    matters.
    """
    asyncio_log = logging.getLogger("asyncio")
    level, unraisable, thread_hook = asyncio_log.level, sys.unraisablehook, threading.excepthook
    asyncio_log.setLevel(logging.CRITICAL)
    sys.unraisablehook = lambda _: None
    threading.excepthook = lambda _: None
    try:
        yield
    finally:
        gc.collect()  # finalise abandoned coroutines while their reports are muted
        asyncio_log.setLevel(level)
        sys.unraisablehook, threading.excepthook = unraisable, thread_hook
