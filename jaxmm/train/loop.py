"""The training loop: ``run(config, workdir)``.

One straight path, in the order of the banner comments below: config ->
mesh -> task and model -> input -> sharded state (init or restore) -> jitted
steps -> checkpoints -> eval -> loop -> final eval, export and summary.
Re-running with the same workdir resumes from the latest checkpoint (params,
optimizer state, step, RNG and every process's data position).
"""

from __future__ import annotations

import collections
import json
import logging
import math
import os
import time
from collections.abc import Iterator, Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from ml_collections import ConfigDict

from jaxmm import sharding
from jaxmm.config import ConfigError
from jaxmm.models import registry
from jaxmm.train import checkpoint as ckpt_lib
from jaxmm.train import distributed
from jaxmm.train import input as input_lib
from jaxmm.train import logging as log_lib
from jaxmm.train.optim import make_optimizer, trainable_mask
from jaxmm.train.run_config import resolve_config
from jaxmm.train.steps import TrainState, make_eval_step, make_train_step
from jaxmm.train.tasks import Task, get_task

log = logging.getLogger(__name__)

__all__ = ["NonFiniteError", "build_task", "evaluate", "evaluate_checkpoint", "run"]


class NonFiniteError(RuntimeError):
    """Training produced NaN/Inf; the message names the step and the metrics."""


# ---------------------------------------------------------------------------
# Helpers (each used once by run(); kept here so run() reads top to bottom)
# ---------------------------------------------------------------------------


def build_task(config: ConfigDict) -> Task:
    """The task named by ``config.task.name`` with its model (and teacher)."""
    task_cls = get_task(config.task.name)
    model = registry.build(config.model.name, config.model.config.to_dict())
    teacher = None
    if config.teacher.name:
        teacher = registry.build(config.teacher.name, config.teacher.config.to_dict())
    return task_cls.from_config(config.task.to_dict(), model, teacher)


def _check_batch(config: ConfigDict, mesh) -> int:
    dp = mesh.shape["data"] * mesh.shape["fsdp"]
    k = int(config.grad_accum_steps)
    if k < 1:
        raise ConfigError(f"grad_accum_steps must be >= 1; got {k}.")
    if config.batch_size % (dp * k):
        raise ConfigError(
            f"batch_size={config.batch_size} is not divisible by the data-parallel size "
            f"{dp} (mesh data={mesh.shape['data']} x fsdp={mesh.shape['fsdp']})"
            + (f" times grad_accum_steps={k}" if k > 1 else "")
            + f"; use a multiple of {dp * k}."
        )
    if config.batch_size % jax.process_count():
        raise ConfigError(f"batch_size={config.batch_size} is not divisible by the "
                          f"{jax.process_count()} processes.")
    return dp


def _flat_params(tree: Any) -> dict[tuple[str, ...], Any]:
    return {tuple(sharding._tree_key_str(k) for k in path): v
            for path, v in jax.tree_util.tree_leaves_with_path(tree)}


# How deep _merge_initial looks for a checkpoint's place in the model.
_MAX_ADD, _MAX_DROP = 3, 2


def _merge_initial(init: Any, loaded: Any, source: str) -> Any:
    """Takes ``loaded`` params where path and shape match ``init`` (fine-tuning).

    The checkpoint may be nested differently from the model: a base encoder
    (e.g. a Hugging Face ``BertModel`` folder) loaded into a model with a head
    (its encoder under ``bert``), a checkpoint with a head loaded into the bare
    encoder, or one tower of a bigger model (a CLIP image tower under
    ``vision_model``) loaded into another model's encoder (a captioner's
    ``encoder/vision_model``, a VQA model's image encoder). A nesting drops up
    to :data:`_MAX_DROP` leading keys from the checkpoint's paths and puts up to
    :data:`_MAX_ADD` keys in front; the one that matches the most parameters
    (the plainest on ties) is used.
    """
    flat_init, flat_new = _flat_params(init), _flat_params(loaded)
    by_suffix: dict[tuple[str, ...], list[tuple[str, ...]]] = collections.defaultdict(list)
    for path in flat_init:
        for a in range(min(_MAX_ADD, len(path) - 1) + 1):
            by_suffix[path[a:]].append(path[:a])
    votes: collections.Counter = collections.Counter()
    for path, value in flat_new.items():
        for d in range(min(_MAX_DROP, len(path) - 1) + 1):
            for add in by_suffix.get(path[d:], ()):
                if np.shape(value) == np.shape(flat_init[add + path[d:]]):
                    votes[(add, path[:d])] += 1
    if not votes:
        raise ConfigError(f"init from {source}: no parameter matches the model (by path and "
                          "shape); check model.name / model.config.")
    add, drop = max(votes, key=lambda n: (votes[n], -len(n[0]) - len(n[1])))
    used = {add + path[len(drop):]: value for path, value in flat_new.items()
            if path[:len(drop)] == drop and add + path[len(drop):] in flat_init
            and np.shape(value) == np.shape(flat_init[add + path[len(drop):]])}
    missing = [k for k in flat_init if k not in used]
    log.info("init from %s: %d params loaded, %d kept from random init%s", source, len(used),
             len(missing), f" (e.g. {['/'.join(k) for k in missing[:3]]})" if missing else "")

    def pick(path, leaf):
        key = tuple(sharding._tree_key_str(k) for k in path)
        return jnp.asarray(used[key], leaf.dtype) if key in used else leaf

    return jax.tree_util.tree_map_with_path(pick, init)


def _initial_params(config: ConfigDict, params: Any, shardings: Any) -> Any:
    if config.init.params:
        _, variables = ckpt_lib.load_exported(config.init.params)
        loaded, source = variables["params"], config.init.params
    elif config.init.hf:
        from jaxmm.convert import from_hf

        loaded, source = from_hf(config.init.hf).params, config.init.hf
    else:
        return params
    merged = _merge_initial(jax.device_get(params), jax.device_get(loaded), source)
    return jax.tree.map(jax.device_put, merged, shardings)


def _example(task: Task, config: ConfigDict) -> dict[str, np.ndarray]:
    """A one-row batch with the run's shapes (for init and abstract evaluation)."""
    dims = {k: v for k, v in dict(config.data).items()
            if k in ("seq_len", "image_size", "frames", "n_mels", "channels")}
    return task.example_batch(1, **dims)


def _variable_shardings(task: Task, example, rng, mesh, rules) -> tuple[Any, dict[str, Any]]:
    """``(param shardings, {collection: shardings})`` from the logical axis names."""
    with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
        boxed = jax.eval_shape(task.init, rng, example)
    shardings = dict(sharding.logical_shardings(boxed, mesh, rules))
    return shardings.pop("params"), shardings


def _fetch(metrics: Mapping[str, jax.Array]) -> dict[str, float]:
    return {k: float(v) for k, v in jax.device_get(dict(metrics)).items()}


def _check_finite(step: int, metrics: Mapping[str, float], last_saved: int | None) -> None:
    bad = sorted(k for k, v in metrics.items() if not math.isfinite(v))
    if bad:
        where = (f"the last checkpoint (step {last_saved}) is intact"
                 if last_saved is not None else "no checkpoint was written")
        raise NonFiniteError(
            f"Non-finite values at step {step}: {', '.join(f'{k}={metrics[k]}' for k in bad)}. "
            f"Training stopped without saving this state; {where}. Check the data of this "
            "step, lower the learning rate, or enable gradient clipping (optimizer.clip_norm)."
        )


def evaluate(eval_step, variables: Any, constants: Any, batches: Iterator, mesh, *,
             per_process_rows: int, num_batches: int | None, task: Task) -> dict[str, float]:
    """Sums eval metrics over ``batches`` (short batches padded and masked)."""
    sums: dict[str, list[float]] = {}
    count = 0
    while num_batches is None or count < num_batches:
        local = next(batches, None)
        if input_lib.any_process(local is None) if num_batches is None else local is None:
            break
        short = len(next(iter(local.values()))) < per_process_rows
        if not task.supports_padding and input_lib.any_process(short):
            log.warning("Skipping the short last eval batch: task %s cannot mask padding.",
                        task.name)
            break
        local = input_lib.pad_batch(local, per_process_rows)
        out = jax.device_get(eval_step(variables, input_lib.to_global(local, mesh), constants))
        for k, (s, c) in out.items():
            acc = sums.setdefault(k, [0.0, 0.0])
            acc[0] += float(s)
            acc[1] += float(c)
        count += 1
    if not count:
        raise ConfigError("The eval data yielded no batches; check eval.data / eval.split.")
    return task.summarize({k: s / max(c, 1e-9) for k, (s, c) in sums.items()})


# ---------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------


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
    # -- config & processes ---------------------------------------------------
    config = resolve_config(config)
    distributed.initialize(config.distributed)
    if config.compilation_cache_dir:
        jax.config.update("jax_compilation_cache_dir", config.compilation_cache_dir)
    workdir = os.path.abspath(workdir)
    is_main = jax.process_index() == 0
    if is_main:
        os.makedirs(workdir, exist_ok=True)
        with open(os.path.join(workdir, "config.json"), "w") as f:
            f.write(config.to_json(indent=2))

    # -- mesh -----------------------------------------------------------------
    mesh = mesh or sharding.make_mesh(config.mesh)
    rules = tuple(tuple(r) for r in config.sharding_rules) + sharding.DEFAULT_RULES
    _check_batch(config, mesh)
    repl = NamedSharding(mesh, PartitionSpec())
    data_sharding = NamedSharding(mesh, PartitionSpec(("data", "fsdp")))

    # -- task & model ---------------------------------------------------------
    task = build_task(config)
    tokenizer = None
    if config.tokenizer:
        from jaxmm.data import tokenizers

        tokenizer = tokenizers.load(config.tokenizer)

    # -- input ----------------------------------------------------------------
    train_iter = input_lib.make_source(
        config.data, task=task, split="train", batch_size=config.batch_size,
        seed=config.seed, shuffle=True, repeat=True, tokenizer=tokenizer)
    eval_cfg = config.eval
    eval_batch = eval_cfg.batch_size or config.batch_size
    eval_rows = eval_batch // jax.process_count()

    def eval_batches():
        data = eval_cfg.data if eval_cfg.data is not None else config.data
        return input_lib.make_source(
            data, task=task, split=eval_cfg.split, batch_size=eval_batch, seed=config.seed,
            shuffle=False, repeat=False, tokenizer=tokenizer, num_batches=eval_cfg.num_batches)

    # -- shard: abstract state, shardings, optimizer ----------------------------
    tx, schedule = make_optimizer(config)
    example = _example(task, config)
    init_rng, state_rng = jax.random.split(jax.random.PRNGKey(config.seed))

    def init_state(rng) -> TrainState:
        variables = nn.meta.unbox(task.init(rng, example))
        variables = dict(variables)
        params = variables.pop("params")
        return TrainState(step=jnp.zeros((), jnp.int32), params=params, extra=variables,
                          opt_state=tx.init(params), rng=state_rng)

    param_shardings, var_shardings = _variable_shardings(task, example, init_rng, mesh, rules)
    with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
        abstract = jax.eval_shape(init_state, init_rng)
    state_shardings = TrainState(
        step=repl, params=param_shardings, extra=var_shardings,
        opt_state=sharding.shardings_like(abstract.opt_state, abstract.params,
                                          param_shardings, mesh),
        rng=repl)
    target = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                          abstract, state_shardings)
    with jax.set_mesh(mesh):
        constants = task.constants(config, mesh, rules)
    const_shardings = jax.tree.map(lambda x: x.sharding, constants)
    trainable = trainable_mask(abstract.params, tuple(config.optimizer.freeze))
    n_params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(abstract.params))

    # -- step -----------------------------------------------------------------
    train_step = jax.jit(
        make_train_step(task, tx, schedule=schedule, accum_steps=config.grad_accum_steps,
                        trainable=trainable if config.optimizer.freeze else None,
                        mesh=mesh, rules=rules),
        in_shardings=(state_shardings, data_sharding, const_shardings),
        out_shardings=(state_shardings, repl), donate_argnums=(0,))
    eval_step = jax.jit(
        make_eval_step(task, rules=rules),
        in_shardings=({"params": param_shardings, **var_shardings}, data_sharding,
                      const_shardings),
        out_shardings=repl)

    # -- checkpoint: restore or initialise --------------------------------------
    ck = config.checkpoint
    checkpointer = ckpt_lib.Checkpointer(
        os.path.join(workdir, "checkpoints"), keep=ck.keep, best_metric=ck.best_metric,
        best_mode=ck.best_mode, keep_best=ck.keep_best, async_save=ck.async_save)
    writer = log_lib.MetricWriter(workdir, tensorboard=config.log.tensorboard)
    latest = checkpointer.latest_step()
    with jax.set_mesh(mesh):
        if latest is not None:
            state, data_state = checkpointer.restore(latest, target)
            if data_state is not None:
                train_iter.set_state(data_state)
            else:
                log.warning("Checkpoint %d has no data state for process %d of %d (saved by "
                            "another process count); the data restarts from its beginning.",
                            latest, jax.process_index(), jax.process_count())
            if is_main and os.path.exists(writer.path):  # drop records of lost steps
                kept = [r for r in log_lib.read_jsonl(writer.path) if r["step"] <= latest]
                with open(writer.path, "w") as f:
                    f.writelines(json.dumps(r) + "\n" for r in kept)
        else:
            state = jax.jit(init_state, out_shardings=state_shardings)(init_rng)
            state = state.replace(params=_initial_params(config, state.params, param_shardings))
    start = int(jax.device_get(state.step))
    last_saved = latest
    progress = log_lib.Progress(config.num_steps, start=start,
                                unit="tokens" if task.layout == "text" else "examples",
                                enabled=config.log.progress)
    progress.message(
        f"jaxmm train: task {task.name}, model {config.model.name} ({n_params:,} params), "
        f"mesh {dict(mesh.shape)}, {jax.device_count()} {jax.default_backend()} device(s), "
        f"{jax.process_count()} process(es); "
        + (f"resuming from step {start}" if latest is not None else "starting at step 0"))

    def save(step_metrics: dict[str, float] | None = None) -> None:
        nonlocal last_saved
        last_saved = checkpointer.save(state, data_state=train_iter.get_state(),
                                       metrics=step_metrics,
                                       meta={"mesh": dict(mesh.shape), "task": task.name})

    def run_eval() -> dict[str, float]:
        with jax.set_mesh(mesh):
            return evaluate(eval_step, state.variables, constants, eval_batches(), mesh,
                            per_process_rows=eval_rows, num_batches=eval_cfg.num_batches,
                            task=task)

    # -- MFU ------------------------------------------------------------------
    flops_per_step, peak, peak_how = None, None, ""
    if config.log.mfu:
        peak, peak_how = log_lib.peak_flops_total()

    def model_flops(batch) -> float | None:
        """3x XLA's forward FLOPs of the loss on this (global) batch."""
        rng = jax.random.PRNGKey(0)
        fwd = lambda v, b, c: task.loss(v, task.prepare(b, rng, False), train=False,  # noqa: E731
                                        rng=rng, constants=c).loss
        shapes = {k: jax.ShapeDtypeStruct(v.shape, v.dtype) for k, v in batch.items()}
        with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
            f = log_lib.forward_flops(fwd, abstract.variables, shapes, constants)
        return 3.0 * f if f else None

    # -- loop -----------------------------------------------------------------
    preempted = False
    history: dict[str, list[float]] = {}
    eval_metrics: dict[str, float] = {}
    pending = None  # (step, device metrics) of the previous step: checked one step late
    t_mark, step_mark = None, start
    tokens_per_example = 0

    def finish_step(step: int, device_metrics) -> dict[str, float]:
        metrics = _fetch(device_metrics)
        _check_finite(step, metrics, last_saved)
        for k, v in metrics.items():
            history.setdefault(k, []).append(v)
        return metrics

    try:
        with distributed.PreemptionWatch() as watch:
            for step in range(start + 1, config.num_steps + 1):
                batch = input_lib.to_global(next(train_iter), mesh)
                with jax.set_mesh(mesh):
                    state, metrics = train_step(state, batch, constants)
                if pending is not None:
                    finish_step(*pending)
                pending = (step, metrics)
                if t_mark is None:  # exclude compilation from throughput
                    if "input_ids" in batch:
                        tokens_per_example = int(np.prod(batch["input_ids"].shape[1:]))
                    if peak:
                        flops_per_step = model_flops(batch)
                    jax.block_until_ready(metrics)
                    t_mark, step_mark = time.perf_counter(), step
                is_last = step == config.num_steps
                stop = watch.reached(step)
                do_log = step % config.log.every_steps == 0 or is_last or stop
                do_eval = bool(eval_cfg.every_steps and step % eval_cfg.every_steps == 0) \
                    or (is_last and eval_cfg.at_end)
                do_save = (step % ck.every_steps == 0) or (is_last and ck.save_final) or stop
                if do_log or do_eval or do_save:
                    finish_step(*pending)
                    pending = None
                if do_log:
                    now = time.perf_counter()
                    window = {k: float(np.mean(v)) for k, v in history.items()}
                    history.clear()
                    window = task.summarize(window)
                    steps_done = step - step_mark
                    if steps_done > 0:
                        rate = steps_done / (now - t_mark)
                        window["steps_per_sec"] = rate
                        window["examples_per_sec"] = rate * config.batch_size
                        if tokens_per_example:
                            window["tokens_per_sec"] = rate * config.batch_size * \
                                tokens_per_example
                        if flops_per_step and peak:
                            window["mfu"] = flops_per_step * rate / peak
                        t_mark, step_mark = now, step
                    writer.write(step, {f"train/{k}": v for k, v in window.items()})
                    progress.update(step, window)
                step_eval = None
                if do_eval:
                    eval_metrics = run_eval()
                    step_eval = {f"eval/{k}": v for k, v in eval_metrics.items()}
                    writer.write(step, step_eval)
                    progress.message(f"eval @ {step}: " + ", ".join(
                        f"{k} {v:.4f}" for k, v in eval_metrics.items()))
                    t_mark, step_mark = time.perf_counter(), step  # eval is not train time
                if do_save:
                    save(step_eval)
                if stop:
                    preempted = True
                    progress.message(f"Preemption notice: saved step {step}; exiting cleanly. "
                                     "Re-run the same command to resume.")
                    break
            if pending is not None:
                finish_step(*pending)
    finally:
        checkpointer.wait()
        writer.flush()

    # -- final eval, export, summary ------------------------------------------
    final_step = int(jax.device_get(state.step))
    if not preempted and eval_cfg.at_end and start >= config.num_steps:
        eval_metrics = run_eval()  # the run was already complete: just report
    if not preempted and ck.export_params:
        ckpt_lib.export_params(state.variables, os.path.join(workdir, "export"),
                               model_name=config.model.name,
                               model_config=config.model.config.to_dict(), task=task.name)
    summary = {
        "step": final_step, "preempted": preempted, "num_params": n_params,
        "eval": eval_metrics, "checkpoints": checkpointer.all_steps(),
        "mfu_peak_flops": peak, "mfu_peak_source": peak_how,
        "model_flops_per_step": flops_per_step,
    }
    checkpointer.close()
    writer.write_summary(summary, os.path.join(workdir, "summary.json"))
    writer.close()
    return summary


def evaluate_checkpoint(config: ConfigDict | Mapping[str, Any], workdir: str, *,
                        step: int | None = None, params_dir: str | None = None
                        ) -> dict[str, Any]:
    """Evaluates a run's checkpoint (latest, or ``step``) or an exported params dir.

    Returns ``{"step", "metrics"}`` and writes ``workdir/eval_<step>.json``.
    """
    config = resolve_config(config)
    distributed.initialize(config.distributed)
    mesh = sharding.make_mesh(config.mesh)
    rules = tuple(tuple(r) for r in config.sharding_rules) + sharding.DEFAULT_RULES
    task = build_task(config)
    example = _example(task, config)
    param_shardings, var_shardings = _variable_shardings(
        task, example, jax.random.PRNGKey(0), mesh, rules)
    shardings = {"params": param_shardings, **var_shardings}
    with jax.set_mesh(mesh):
        if params_dir is not None:
            _, variables = ckpt_lib.load_exported(params_dir, shardings=shardings)
            step = -1
        else:
            checkpointer = ckpt_lib.Checkpointer(os.path.join(workdir, "checkpoints"))
            step = checkpointer.latest_step() if step is None else step
            if step is None:
                raise ConfigError(f"No checkpoint in {workdir}/checkpoints to evaluate; train "
                                  "first or pass an exported params directory.")
            with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
                boxed = jax.eval_shape(task.init, jax.random.PRNGKey(0), example)
            target = jax.tree.map(
                lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                nn.meta.unbox(boxed), shardings)
            variables = checkpointer.restore_variables(step, target)
            checkpointer.close()
        constants = task.constants(config, mesh, rules)
        eval_step = jax.jit(make_eval_step(task, rules=rules))
        eval_batch = config.eval.batch_size or config.batch_size
        batches = input_lib.make_source(
            config.eval.data if config.eval.data is not None else config.data, task=task,
            split=config.eval.split, batch_size=eval_batch, seed=config.seed, shuffle=False,
            repeat=False, num_batches=config.eval.num_batches)
        metrics = evaluate(eval_step, variables, constants, batches, mesh,
                           per_process_rows=eval_batch // jax.process_count(),
                           num_batches=config.eval.num_batches, task=task)
    result = {"step": step, "metrics": metrics}
    if jax.process_index() == 0:
        os.makedirs(workdir, exist_ok=True)
        with open(os.path.join(workdir, f"eval_{step}.json"), "w") as f:
            json.dump(result, f, indent=2)
    return result
