"""``build_run(config, mesh)``: everything a run sets up before its first step.

Training (:func:`jaxmm.train.run`) and evaluation (:func:`jaxmm.train.evaluate_checkpoint`,
``jaxmm eval``, the demo) share it, so the set-up is written once:

config -> processes -> mesh -> task and model (+ teacher) -> abstract state and
its shardings (from the logical axis names) -> optimizer -> constants -> jitted
train and eval steps.

Nothing here allocates the model: the state exists only as shapes until
:meth:`Run.init_state` or a checkpoint restore fills it, directly sharded.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import traverse_util
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from ml_collections import ConfigDict

from jaxmm import lora as lora_lib
from jaxmm import sharding
from jaxmm.config import ConfigError
from jaxmm.models import registry
from jaxmm.train import distributed
from jaxmm.train import logging as log_lib
from jaxmm.train.input import make_source
from jaxmm.train.optim import make_optimizer, trainable_mask
from jaxmm.train.pretrained import initial_params
from jaxmm.train.run_config import resolve_config
from jaxmm.train.steps import TrainState, make_eval_step, make_train_step
from jaxmm.train.tasks import Task, get_task

__all__ = ["Run", "build_run", "build_task", "check_batch_size"]


def build_task(config: ConfigDict) -> Task:
    """The task named by ``config.task.name`` with its model (and teacher)."""
    task_cls = get_task(config.task.name)
    model = registry.build(config.model.name, config.model.config.to_dict())
    teacher = None
    if config.teacher.name:
        teacher = registry.build(config.teacher.name, config.teacher.config.to_dict())
    return task_cls.from_config(config.task.to_dict(), model, teacher)


def check_batch_size(config: ConfigDict, mesh: Mesh) -> int:
    """Checks ``batch_size`` against the mesh, accumulation and processes; returns
    the data-parallel size (``data`` x ``fsdp``)."""
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


def _example(task: Task, config: ConfigDict) -> dict[str, np.ndarray]:
    """A one-row batch with the run's shapes (for init and abstract evaluation)."""
    dims = {k: v for k, v in dict(config.data).items()
            if k in ("seq_len", "image_size", "frames", "n_mels", "channels")}
    return task.example_batch(1, **dims)


def _with_shardings(tree: Any, shardings: Any) -> Any:
    return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                        tree, shardings)


@dataclasses.dataclass(frozen=True)
class Run:
    """A built run (see :func:`build_run`); every array here is abstract or sharded.

    config: the resolved run config. mesh / rules: the device mesh and the
    logical-axis rules. task: the task with its model. tokenizer: the loaded
    ``config.tokenizer`` or ``None``. example: a one-row synthetic batch with the
    run's shapes. abstract_state: the :class:`TrainState` as ``ShapeDtypeStruct``s;
    state_shardings: its shardings (``variable_shardings`` for the model
    variables ``{"params": ..., **collections}``). constants: the task's frozen
    inputs (sharded) or ``None``. tx / schedule: the optimizer and learning rate.
    train_step: ``(state, batch, constants) -> (state, metrics)``, jitted with
    explicit shardings and the state donated. num_params: parameter count.
    init_rng / state_rng: the keys of the initial variables and of the state.
    lora: the :class:`jaxmm.lora.LoraConfig` of a LoRA run, else ``None``.
    num_trainable: scalars trained (the adapters' with LoRA, else ``num_params``).
    """

    config: ConfigDict
    mesh: Mesh
    rules: tuple
    task: Task
    tokenizer: Any
    example: dict[str, np.ndarray]
    abstract_state: TrainState
    state_shardings: TrainState
    constants: Any
    tx: optax.GradientTransformation
    schedule: optax.Schedule
    train_step: Callable[..., tuple[TrainState, dict[str, jax.Array]]]
    num_params: int
    init_rng: jax.Array
    state_rng: jax.Array
    lora: lora_lib.LoraConfig | None = None
    num_trainable: int = 0

    @property
    def variable_shardings(self) -> dict[str, Any]:
        return {"params": self.state_shardings.params, **self.state_shardings.extra}

    def saved_variables_target(self) -> dict[str, Any]:
        """What a checkpoint's ``model`` item holds (:attr:`TrainState.saved_variables`),
        as ``ShapeDtypeStruct``s with shardings."""
        return _with_shardings(self.abstract_state.saved_variables,
                               self.state_shardings.saved_variables)

    def model_variables(self, saved: dict[str, Any]) -> dict[str, Any]:
        """Saved variables -> the variables to run the model with (adapters merged)."""
        saved = dict(saved)
        adapters = saved.pop("lora", None)
        if adapters is not None:
            saved["params"] = lora_lib.merge(saved["params"], adapters, self.lora.scale)
        return saved

    @property
    def data_sharding(self) -> NamedSharding:
        return NamedSharding(self.mesh, PartitionSpec(("data", "fsdp")))

    @functools.cached_property
    def eval_step(self) -> Callable[..., dict[str, tuple[jax.Array, jax.Array]]]:
        """``(variables, batch, constants) -> {metric: (sum, count)}`` of the task, jitted."""
        return self.jit_eval_step(self.task)

    def state_target(self) -> TrainState:
        """The state as ``ShapeDtypeStruct``s with shardings (a restore target)."""
        return _with_shardings(self.abstract_state, self.state_shardings)

    def variables_target(self) -> dict[str, Any]:
        """The model variables as ``ShapeDtypeStruct``s with shardings."""
        return _with_shardings(self.abstract_state.variables, self.variable_shardings)

    def init_state(self) -> TrainState:
        """A fresh state, initialised directly sharded, with ``config.init`` weights."""
        init = _state_initializer(self.task, self.tx, self.example, self.state_rng, self.lora)
        with jax.set_mesh(self.mesh):
            state = jax.jit(init, out_shardings=self.state_shardings)(self.init_rng)
        state = state.replace(params=initial_params(self.config, state.params,
                                                    self.state_shardings.params))
        if state.lora is not None and self.lora.train_full:  # copies of the loaded weights
            with jax.set_mesh(self.mesh):
                state = state.replace(lora=jax.jit(
                    lora_lib.refresh_full, out_shardings=self.state_shardings.lora)(
                        state.lora, state.params))
        return state

    def batches(self, data: Mapping[str, Any] | None, split: str, batch_size: int, *,
                shuffle: bool = False, repeat: bool = False,
                num_batches: int | None = None) -> Iterator[dict[str, np.ndarray]]:
        """This process's host batches of ``split`` (``data``: a data section)."""
        return make_source(data, task=self.task, split=split, batch_size=batch_size,
                           seed=self.config.seed, shuffle=shuffle, repeat=repeat,
                           tokenizer=self.tokenizer, num_batches=num_batches)

    def jit_eval_step(self, task: Task) -> Callable[..., Any]:
        """``make_eval_step(task)`` jitted with this run's shardings."""
        return jax.jit(
            make_eval_step(task, rules=self.rules),
            in_shardings=(self.variable_shardings, self.data_sharding,
                          jax.tree.map(lambda x: x.sharding, self.constants)),
            out_shardings=NamedSharding(self.mesh, PartitionSpec()))

    def eval_context(self) -> Any:
        """What evaluators need (:class:`jaxmm.evaluate.evaluators.EvalContext`)."""
        from jaxmm.evaluate.evaluators import EvalContext

        def source(data, split, batch_size, num_batches):
            return self.batches(data, split, batch_size, num_batches=num_batches)

        return EvalContext(task=self.task, mesh=self.mesh, rules=self.rules,
                           constants=self.constants, tokenizer=self.tokenizer,
                           make_source=source, make_eval_step=self.jit_eval_step,
                           eval_step=self.eval_step)

    def model_flops(self, batch: Mapping[str, jax.Array]) -> float | None:
        """Model FLOPs of one train step on ``batch``: 3x XLA's forward FLOPs of the loss."""
        rng = jax.random.PRNGKey(0)
        task = self.task
        fwd = lambda v, b, c: task.loss(v, task.prepare(b, rng, False), train=False,  # noqa: E731
                                        rng=rng, constants=c).loss
        shapes = {k: jax.ShapeDtypeStruct(v.shape, v.dtype) for k, v in batch.items()}
        with jax.set_mesh(self.mesh), nn.logical_axis_rules(self.rules):
            flops = log_lib.forward_flops(fwd, self.abstract_state.variables, shapes,
                                          self.constants)
        return 3.0 * flops if flops else None


def _state_initializer(task: Task, tx: optax.GradientTransformation, example: Any,
                       state_rng: jax.Array, lora: lora_lib.LoraConfig | None = None
                       ) -> Callable[[jax.Array], TrainState]:
    """``init_state(init_rng) -> TrainState`` at step 0 (``state_rng``: the state's key).
    With ``lora`` the state holds adapters and the optimizer state tracks them alone."""

    def init_state(rng: jax.Array) -> TrainState:
        variables = dict(nn.meta.unbox(task.init(rng, example)))
        params = variables.pop("params")
        if lora is None:
            return TrainState(step=jnp.zeros((), jnp.int32), params=params, extra=variables,
                              opt_state=tx.init(params), rng=state_rng)
        adapters = lora_lib.init_adapters(params, jax.random.fold_in(rng, 0x10A), lora)
        return TrainState(step=jnp.zeros((), jnp.int32), params=params, extra=variables,
                          opt_state=tx.init(adapters), rng=state_rng, lora=adapters,
                          lora_scale=lora.scale)

    return init_state


def _state_shardings(task: Task, abstract: TrainState, example: Any, rng: jax.Array,
                     mesh: Mesh, rules: tuple) -> TrainState:
    """The state's shardings: variables by their logical axis names, the optimizer
    state like the params it tracks, step and key replicated."""
    with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
        boxed = jax.eval_shape(task.init, rng, example)
    variables = dict(sharding.logical_shardings(boxed, mesh, rules))
    params = variables.pop("params")
    replicated = NamedSharding(mesh, PartitionSpec())
    if abstract.lora is None:
        return TrainState(step=replicated, params=params, extra=variables,
                          opt_state=sharding.shardings_like(abstract.opt_state, abstract.params,
                                                            params, mesh),
                          rng=replicated)
    # LoRA factors are small (rank r): replicated, like their optimizer state; a
    # train_full copy is sharded like the param it copies.
    flat_params = traverse_util.flatten_dict(params, sep="/")
    adapters = traverse_util.unflatten_dict(
        {k: flat_params[k[: -len("/full")]] if k.endswith("/full") else replicated
         for k in traverse_util.flatten_dict(abstract.lora, sep="/")}, sep="/")
    return abstract.replace(step=replicated, params=params, extra=variables,
                            opt_state=sharding.shardings_like(abstract.opt_state, abstract.lora,
                                                              adapters, mesh),
                            rng=replicated, lora=adapters)


def check_vocab(tokenizer: Any, task: Any, where: str) -> None:
    """The model's vocabulary must hold every id the tokenizer gives: a larger id is not
    an error inside XLA (embedding lookups clamp it), so it would train silently wrong."""
    vocab = task.synthetic_dims().get("vocab_size")
    if vocab is not None and tokenizer.vocab_size > vocab:
        raise ConfigError(
            f"The tokenizer {where!r} has {tokenizer.vocab_size} ids, but the model's "
            f"vocab_size is {vocab}, so ids {vocab} and up would be clamped in the embedding.",
            hint=f"Set --config.model.config.vocab_size={tokenizer.vocab_size} (the configs' "
            "vocab= argument), or use a tokenizer of the model's vocabulary.")


def build_run(config: ConfigDict | Mapping[str, Any], mesh: Mesh | None = None) -> Run:
    """Resolves ``config`` and builds the run's task, shardings, optimizer and steps.

    ``config``: a run config (possibly partial; completed with
    :func:`jaxmm.train.run_config.default_config`). ``mesh``: a mesh with the
    axes ``data``, ``fsdp``, ``tensor`` to use instead of ``config.mesh`` (e.g.
    on a subset of the devices). Starts ``jax.distributed`` first when the run
    spans several processes.
    """
    # -- config & processes ---------------------------------------------------
    config = resolve_config(config)
    distributed.initialize(config.distributed)
    if config.compilation_cache_dir:
        jax.config.update("jax_compilation_cache_dir", config.compilation_cache_dir)

    # -- mesh -----------------------------------------------------------------
    mesh = mesh or sharding.make_mesh(config.mesh)
    rules = tuple(tuple(r) for r in config.sharding_rules) + sharding.DEFAULT_RULES
    check_batch_size(config, mesh)

    # -- task & model ---------------------------------------------------------
    task = build_task(config)
    tokenizer = None
    if config.tokenizer:
        from jaxmm.data import tokenizers

        tokenizer = tokenizers.load(config.tokenizer)
        check_vocab(tokenizer, task, config.tokenizer)

    # -- abstract state, shardings, optimizer ---------------------------------
    tx, schedule = make_optimizer(config)
    lora = lora_config(config)
    example = _example(task, config)
    init_rng, state_rng = jax.random.split(jax.random.PRNGKey(config.seed))
    with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
        abstract = jax.eval_shape(_state_initializer(task, tx, example, state_rng, lora),
                                  init_rng)
    state_shardings = _state_shardings(task, abstract, example, init_rng, mesh, rules)
    with jax.set_mesh(mesh):
        constants = task.constants(config, mesh, rules)
    const_shardings = jax.tree.map(lambda x: x.sharding, constants)
    trained = abstract.params if lora is None else abstract.lora
    trainable = trainable_mask(trained, tuple(config.optimizer.freeze))

    # -- steps ----------------------------------------------------------------
    train_step = jax.jit(
        make_train_step(task, tx, schedule=schedule, accum_steps=config.grad_accum_steps,
                        trainable=trainable if config.optimizer.freeze else None,
                        mesh=mesh, rules=rules),
        in_shardings=(state_shardings, NamedSharding(mesh, PartitionSpec(("data", "fsdp"))),
                      const_shardings),
        out_shardings=(state_shardings, NamedSharding(mesh, PartitionSpec())),
        donate_argnums=(0,))
    return Run(config=config, mesh=mesh, rules=rules, task=task, tokenizer=tokenizer,
               example=example, abstract_state=abstract, state_shardings=state_shardings,
               constants=constants, tx=tx, schedule=schedule, train_step=train_step,
               num_params=lora_lib.num_params(abstract.params),
               init_rng=init_rng, state_rng=state_rng, lora=lora,
               num_trainable=lora_lib.num_params(trained))


def lora_config(config: ConfigDict) -> lora_lib.LoraConfig | None:
    """The run's :class:`jaxmm.lora.LoraConfig` (``None`` when ``lora.rank`` is 0)."""
    c = config.lora
    if not c.rank:
        return None
    return lora_lib.LoraConfig(rank=int(c.rank), alpha=float(c.alpha),
                               targets=tuple(c.targets), init=str(c.init),
                               train_full=tuple(c.train_full))
