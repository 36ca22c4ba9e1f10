"""Orbax checkpoints of a run, and params export for inference.

A checkpoint step directory ``workdir/checkpoints/<step>/`` holds four items:

* ``model``: the model variables ``{"params": ..., **other collections}``;
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

:func:`export_params` (in :mod:`jaxmm.convert.folders`, re-exported here)
writes the variables alone plus ``model.json`` (model name and config) for
inference; :func:`load_exported` reads them back.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from typing import Any

import jax
import orbax.checkpoint as ocp
from etils import epath

from jaxmm.config import ConfigError
from jaxmm.convert.folders import configure_orbax, export_params, load_exported
from jaxmm.train.steps import TrainState

log = logging.getLogger(__name__)

__all__ = ["Checkpointer", "export_params", "load_exported"]  # the last two: convert.folders


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
    """

    def __init__(self, directory: str | os.PathLike, *, keep: int = 2,
                 best_metric: str | None = None, best_mode: str = "min", keep_best: int = 1,
                 async_save: bool = True):
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
            create=True,
        )
        self.directory = epath.Path(directory)
        self.best_metric = best_metric
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
            model=ocp.args.StandardSave(state.variables),
            train=ocp.args.StandardSave(
                {"step": state.step, "rng": state.rng, "opt_state": state.opt_state}),
            data=ProcessJsonSave(data_state),
            meta=ocp.args.JsonSave({"step": step, "process_count": jax.process_count(),
                                    **(meta or {})}),
        )
        self.manager.save(step, args=args, metrics=metrics, force=True)
        return step

    def restore(self, step: int, target: TrainState) -> tuple[TrainState, Any]:
        """Restores ``step`` onto ``target`` (a TrainState of ``ShapeDtypeStruct``s
        with shardings). Returns ``(state, this process's data state or None)``."""
        restored = self.manager.restore(step, args=ocp.args.Composite(
            model=ocp.args.StandardRestore(target.variables),
            train=ocp.args.StandardRestore(
                {"step": target.step, "rng": target.rng, "opt_state": target.opt_state}),
            data=ProcessJsonRestore(),
        ))
        variables, train = dict(restored.model), restored.train
        params = variables.pop("params")
        state = TrainState(step=train["step"], params=params, extra=variables,
                           opt_state=train["opt_state"], rng=train["rng"])
        return state, restored.data

    def restore_variables(self, step: int, target: Any = None) -> Any:
        """Restores only the model variables of ``step`` (evaluation, export).

        ``target``: a tree of ``ShapeDtypeStruct`` with shardings; ``None``
        restores with the saved shardings where the devices allow.
        """
        return self.manager.restore(
            step, args=ocp.args.Composite(model=ocp.args.StandardRestore(target))).model

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.close()
