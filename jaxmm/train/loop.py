"""The training loop ``run(config, workdir)`` and checkpoint evaluation.

One straight path, in the order of the banner comments below: build (config ->
mesh -> task and model -> shardings -> jitted steps, :func:`jaxmm.train.build_run`)
-> workdir (the recorded config is compared) -> input (device prefetch) ->
state (restore the newest readable checkpoint, or initialise) -> record
(``config.json``) -> hooks (log, evaluators, checkpoint, preemption) -> loop ->
export and summary. Re-running with the same workdir resumes from the latest
checkpoint (params, optimizer state, step, RNG and every process's data
position). Nothing is written to the workdir before the state is restored, and
a run that fails before its first checkpoint puts the recorded config back
(:mod:`jaxmm.train.workdir`).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from typing import Any

import jax
from jax.sharding import Mesh
from ml_collections import ConfigDict

from jaxmm import storage
from jaxmm.data.device import prefetch_to_device
from jaxmm.evaluate.evaluators import make_evaluators
from jaxmm.train import checkpoint as ckpt_lib
from jaxmm.train import distributed
from jaxmm.train import logging as log_lib
from jaxmm.train.build import Run, build_run, build_task
from jaxmm.train.hooks import (
    CheckpointHook,
    EvalHook,
    Hook,
    LogHook,
    NonFiniteError,
    PreemptionHook,
    StepMetrics,
    Throughput,
)
from jaxmm.train.steps import TrainState
from jaxmm.train.workdir import RunRecord, checkpoint_steps, resolve_workdir

log = logging.getLogger(__name__)

__all__ = ["NonFiniteError", "build_task", "evaluate_checkpoint", "run"]


def _restore_or_init(built: Run, checkpointer: ckpt_lib.Checkpointer, batches: Any
                     ) -> tuple[TrainState, int | None]:
    """The newest readable checkpoint (state and data position), or a fresh state;
    and the checkpoint's step (``None`` when starting)."""
    with jax.set_mesh(built.mesh):
        restored = checkpointer.restore_latest(built.state_target())
    if restored is None:
        return built.init_state(), None
    if restored.data_state is not None:
        batches.set_state(restored.data_state)
    else:
        log.warning("Checkpoint %d has no data state for process %d of %d (saved by another "
                    "process count); the data restarts from its beginning.",
                    restored.step, jax.process_index(), jax.process_count())
    return restored.state, restored.step


def _drop_lost_records(path: str, latest: int | None) -> None:
    """Removes metrics of the steps after the restored checkpoint (they are re-run)."""
    if latest is None or jax.process_index() != 0 or not storage.exists(path):
        return
    kept = [r for r in log_lib.read_jsonl(path) if r["step"] <= latest]
    storage.write_text(path, "".join(json.dumps(r) + "\n" for r in kept))


def run(config: ConfigDict | Mapping[str, Any], workdir: str, *,
        mesh: Mesh | None = None) -> dict[str, Any]:
    """Trains (or resumes) the run ``config`` in ``workdir``; returns the summary.

    ``config`` is a run config (``configs/*.py``'s ``get_config()``, possibly
    partial: it is completed with the defaults of
    :func:`jaxmm.train.run_config.default_config`). ``mesh``: a mesh with the
    axes ``data``, ``fsdp``, ``tensor`` to use instead of ``config.mesh`` (e.g.
    on a subset of the devices). Raises :class:`NonFiniteError` if the loss or
    gradients become NaN/Inf.
    """
    # -- build: config, processes, mesh, task, shardings, steps ---------------
    built = build_run(config, mesh)
    config = built.config

    # -- workdir: resuming with a different config? (nothing written yet) ----
    workdir = resolve_workdir(workdir)
    record = RunRecord(workdir, config)
    if checkpoint_steps(os.path.join(workdir, "checkpoints")):
        record.check_resume(allow_changes=config.allow_changes)

    # -- input: this process's shard, prefetched to the devices ---------------
    batches = prefetch_to_device(
        built.batches(config.data, "train", config.batch_size, shuffle=True, repeat=True),
        built.mesh, size=config.device_prefetch)

    # -- state: restore (newest readable checkpoint) or initialise ------------
    ck = config.checkpoint
    checkpointer = ckpt_lib.Checkpointer(
        os.path.join(workdir, "checkpoints"), keep=ck.keep, best_metric=ck.best_metric,
        best_mode=ck.best_mode, keep_best=ck.keep_best, async_save=ck.async_save,
        on_corrupt=ck.on_corrupt)
    try:
        state, latest = _restore_or_init(built, checkpointer, batches)
        evaluators = make_evaluators(config, built.eval_context())

        # -- record: the run has started --------------------------------------
        record.write(int(jax.device_get(state.step)))
        try:
            return _train(built, workdir, state, latest, batches, checkpointer, evaluators)
        except BaseException:
            if not checkpointer.saved:  # this run saved nothing: its record goes too
                record.rollback()
            raise
    finally:
        checkpointer.close()


def _train(built: Run, workdir: str, state: TrainState, latest: int | None, batches: Any,
           checkpointer: ckpt_lib.Checkpointer, evaluators: Mapping[str, Any]
           ) -> dict[str, Any]:
    """Hooks, the step loop, export and summary of a started run."""
    config, task, ck = built.config, built.task, built.config.checkpoint
    start = int(jax.device_get(state.step))
    writer = log_lib.MetricWriter(workdir, tensorboard=config.log.tensorboard)
    _drop_lost_records(writer.path, latest)
    progress = log_lib.Progress(config.num_steps, start=start,
                                unit="tokens" if task.layout == "text" else "examples",
                                enabled=config.log.progress)
    trained = (f", LoRA rank {built.lora.rank}: {built.num_trainable:,} trained"
               if built.lora else "")
    progress.message(
        f"jaxmm train: task {task.name}, model {config.model.name} ({built.num_params:,} "
        f"params{trained}), mesh {dict(built.mesh.shape)}, {jax.device_count()} "
        f"{jax.default_backend()} device(s), {jax.process_count()} process(es); "
        + (f"resuming from step {start}" if latest is not None else "starting at step 0"))

    # -- hooks: log, evaluators, checkpoint, preemption -----------------------
    peak, peak_how = log_lib.peak_flops_total() if config.log.mfu else (None, "")
    throughput = Throughput(config.batch_size, built.model_flops, peak)
    save = CheckpointHook(ck.every_steps, at_end=ck.save_final, checkpointer=checkpointer,
                          data_state=batches.get_state, last_saved=latest,
                          meta={"mesh": dict(built.mesh.shape), "task": task.name})
    step_metrics = StepMetrics(last_saved=lambda: save.last_saved)
    evals = [EvalHook(name, ev, every_steps=ev.settings.every_steps, at_end=ev.settings.at_end,
                      prefix=ev.settings.prefix, writer=writer, progress=progress,
                      throughput=throughput) for name, ev in evaluators.items()]
    hooks: list[Hook] = [
        LogHook(config.log.every_steps, metrics=step_metrics, throughput=throughput,
                summarize=task.summarize, writer=writer, progress=progress),
        *evals, save, PreemptionHook(progress)]

    # -- loop -----------------------------------------------------------------
    preempted = False
    try:
        with distributed.PreemptionWatch() as watch:
            for step in range(start + 1, config.num_steps + 1):
                batch = next(batches)
                with jax.set_mesh(built.mesh):
                    state, metrics = built.train_step(state, batch, built.constants)
                step_metrics.push(step, metrics)  # fetches (and checks) the previous step's
                if not throughput.started:
                    throughput.start(step, batch, metrics)
                preempted = watch.reached(step)
                due = [h for h in hooks
                       if h.due(step, last=step == config.num_steps, preempted=preempted)]
                if due:
                    step_metrics.flush()  # this step's metrics are needed now
                report: dict[str, float] = {}
                for hook in due:
                    report.update(hook(step, state, report))
                if save in due:  # an object store's metrics.jsonl keeps up with the checkpoints
                    writer.flush_metrics()
                if preempted:
                    break
            step_metrics.flush()
    finally:
        checkpointer.wait()
        writer.flush()

    # -- export and summary ---------------------------------------------------
    if not preempted and start >= config.num_steps:  # already complete: just report
        for hook in evals:
            if hook.at_end:
                hook.evaluate(state)
    if not preempted and ck.export_params:
        ckpt_lib.export_params(state.variables, os.path.join(workdir, "export"),
                               model_name=config.model.name,
                               model_config=config.model.config.to_dict(), task=task.name)
    summary = {
        "step": int(jax.device_get(state.step)), "preempted": preempted,
        "num_params": built.num_params, "num_trainable": built.num_trainable,
        "eval": {k: v for hook in evals for k, v in hook.latest.items()},
        "checkpoints": checkpointer.all_steps(), "mfu_peak_flops": peak,
        "mfu_peak_source": peak_how, "model_flops_per_step": throughput.flops_per_step,
    }
    writer.write_summary(summary, os.path.join(workdir, "summary.json"))
    writer.close()
    return summary


def evaluate_checkpoint(config: ConfigDict | Mapping[str, Any], workdir: str, *,
                        step: int | None = None, params_dir: str | None = None,
                        evaluators: tuple[str, ...] = ()) -> dict[str, Any]:
    """Runs the run's evaluators on a checkpoint (latest, or ``step``) or on an
    exported params directory.

    ``evaluators``: names in ``config.eval.evaluators`` to run (default: all,
    whatever their schedule). Returns ``{"step", "metrics"}`` (metrics named
    ``<prefix><metric>`` as in ``summary.json``) and writes
    ``workdir/eval_<step>.json``.
    """
    workdir = storage.resolve(workdir, "--workdir")
    directory = os.path.join(workdir, "checkpoints")
    if params_dir is None and not checkpoint_steps(directory):
        where = directory if storage.is_dir(workdir) else f"{workdir} (no such directory)"
        raise ckpt_lib.CheckpointError(f"No checkpoint in {where} to evaluate; train first, "
                                       "check --workdir, or pass an exported params directory.")
    built = build_run(config)
    with jax.set_mesh(built.mesh):
        if params_dir is not None:
            _, variables = ckpt_lib.load_exported(params_dir, shardings=built.variable_shardings)
            step = -1
        else:
            checkpointer = ckpt_lib.Checkpointer(directory, create=False)
            try:
                step = checkpoint_steps(directory)[-1] if step is None else step
                variables = built.model_variables(
                    checkpointer.restore_variables(step, built.saved_variables_target()))
            finally:
                checkpointer.close()
    metrics = {}
    for evaluator in make_evaluators(built.config, built.eval_context(), evaluators).values():
        metrics.update({f"{evaluator.settings.prefix}{k}": v
                        for k, v in evaluator(variables).items()})
    result = {"step": step, "metrics": metrics}
    if jax.process_index() == 0:
        storage.makedirs(workdir)
        storage.write_text(os.path.join(workdir, f"eval_{step}.json"),
                           json.dumps(result, indent=2))
    return result
