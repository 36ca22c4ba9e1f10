"""The train state and the pure train/eval step functions.

``make_train_step`` returns ``step(state, batch, constants) -> (state, metrics)``,
a pure function the loop compiles with ``jax.jit`` (explicit in/out shardings,
state donated).

Gradient accumulation is a ``lax.scan`` over ``k`` micro-batches inside the one
compiled step, rather than ``optax.MultiSteps``: the step stays a single
dispatch, no accumulator lives in the (checkpointed) optimizer state, the
optimizer, schedule and logging count real optimizer steps, and because tasks
return loss *sums*, ``sum(grad(loss_sum_i)) / sum(weight_i)`` is exactly the
full-batch gradient even when micro-batches hold different numbers of tokens
(MultiSteps averages per-micro-batch means). Micro-batch ``j`` takes rows
``j, j + k, j + 2k, ...`` so every device keeps its share of every micro-batch
and the split needs no communication.

Non-finite guard: when the loss, any metric or the gradient norm is NaN/Inf,
the step returns the *input* state unchanged (the update is dropped) and the
metrics show the non-finite values; the loop stops on them, so a bad state is
never saved.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxmm import lora as lora_lib
from jaxmm.train.tasks.base import LossOutput, Task

Array = jax.Array

__all__ = ["TrainState", "make_eval_step", "make_train_step", "split_microbatches"]


@flax.struct.dataclass
class TrainState:
    """Everything a run needs to continue exactly.

    step: int32 scalar, optimizer steps taken. params: model parameters.
    extra: other model collections updated in training (``batch_stats``) or
    ``{}``. opt_state: Optax state. rng: ``uint32[2]`` base key; step ``s``
    uses ``fold_in(rng, s)`` so the dropout stream does not depend on restarts.
    lora: LoRA adapters (:mod:`jaxmm.lora`) or ``None``; with adapters, they are
    what is trained (``opt_state`` tracks them) and ``params`` is the frozen
    base. lora_scale: the adapters' ``alpha / rank`` (static).
    """

    step: Array
    params: Any
    extra: Any
    opt_state: Any
    rng: Array
    lora: Any = None
    lora_scale: float = flax.struct.field(pytree_node=False, default=1.0)

    @property
    def variables(self) -> dict[str, Any]:
        """The model variables to run the model with (LoRA adapters merged in)."""
        return {"params": self.model_params, **self.extra}

    @property
    def model_params(self) -> Any:
        """``params``, with the LoRA adapters merged in when there are any."""
        if self.lora is None:
            return self.params
        return lora_lib.merge(self.params, self.lora, self.lora_scale)

    @property
    def saved_variables(self) -> dict[str, Any]:
        """What a checkpoint stores as the model: the base variables, and the
        adapters under ``"lora"`` when there are any."""
        extra = {} if self.lora is None else {"lora": self.lora}
        return {"params": self.params, **self.extra, **extra}


def split_microbatches(batch: dict[str, Array], k: int, mesh: Mesh | None) -> dict[str, Array]:
    """``(B, ...)`` -> ``(k, B/k, ...)`` with micro-batch ``j`` = rows ``j::k``."""

    def split(x):
        y = jnp.swapaxes(x.reshape(x.shape[0] // k, k, *x.shape[1:]), 0, 1)
        if mesh is not None:
            spec = PartitionSpec(None, ("data", "fsdp"), *([None] * (x.ndim - 1)))
            y = jax.lax.with_sharding_constraint(y, NamedSharding(mesh, spec))
        return y

    return jax.tree.map(split, batch)


def _tree_sum(a, b):
    return jax.tree.map(jnp.add, a, b)


def _all_finite(tree) -> Array:
    leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.array(True)


def make_train_step(
    task: Task,
    tx: optax.GradientTransformation,
    *,
    schedule: optax.Schedule | None = None,
    accum_steps: int = 1,
    trainable: Any = None,
    mesh: Mesh | None = None,
    rules: Any = None,
) -> Callable[[TrainState, dict[str, Array], Any], tuple[TrainState, dict[str, Array]]]:
    """Builds the pure train step.

    Args:
      task: supplies ``prepare`` and ``loss``.
      tx: the Optax transformation (:func:`jaxmm.train.optim.make_optimizer`).
      schedule: learning-rate schedule, only to report ``learning_rate``.
      accum_steps: micro-batches per step (the batch is split ``k`` ways).
      trainable: tree of bools (``optim.trainable_mask``) over what is trained
        (params, or the LoRA adapters); gradients of frozen leaves are zeroed
        (and so never computed).
      mesh / rules: mesh and logical-axis rules active while tracing.

    Returns ``step(state, batch, constants) -> (new_state, metrics)`` where
    metrics are float32 scalars: ``loss``, the task's metrics, ``grad_norm``,
    ``param_norm``, ``learning_rate``, and ``tokens``/``examples`` weights.

    With LoRA (``state.lora`` set) the step trains the adapters: the loss runs
    on ``merge(params, adapters)`` and is differentiated with respect to the
    adapters only; ``params`` passes through untouched (bit-identical), and
    ``grad_norm``/``param_norm`` are the adapters'.
    """

    def micro(state, weights, extra, batch, rng, constants):
        """Gradients with respect to ``weights``: the params, or the adapters."""

        def loss_fn(w):
            p = w if state.lora is None else lora_lib.merge(state.params, w, state.lora_scale)
            b = task.prepare(batch, jax.random.fold_in(rng, 1), True)
            out: LossOutput = task.loss({"params": p, **extra}, b, train=True,
                                        rng=jax.random.fold_in(rng, 2), constants=constants)
            return out.loss, out

        (_, out), grads = jax.value_and_grad(loss_fn, has_aux=True)(weights)
        if trainable is not None:
            grads = jax.tree.map(lambda g, t: g if t else jnp.zeros_like(g), grads, trainable)
        return grads, out

    def step(state: TrainState, batch: dict[str, Array], constants: Any = None):
        with nn.logical_axis_rules(rules or ()):
            rng = jax.random.fold_in(state.rng, state.step)
            weights = state.params if state.lora is None else state.lora
            if accum_steps == 1:
                grads, out = micro(state, weights, state.extra, batch, rng, constants)
                extra = out.extra if out.extra is not None else state.extra
                loss_sum, weight, msums = out.loss, out.weight, out.metrics
            else:
                micro_batches = split_microbatches(batch, accum_steps, mesh)

                def body(carry, xs):
                    g_acc, l_acc, w_acc, m_acc, extra = carry
                    i, mb = xs
                    g, out = micro(state, weights, extra, mb, jax.random.fold_in(rng, i),
                                   constants)
                    new_extra = out.extra if out.extra is not None else extra
                    return (_tree_sum(g_acc, g), l_acc + out.loss, w_acc + out.weight,
                            _tree_sum(m_acc, out.metrics), new_extra), None

                first = jax.eval_shape(
                    lambda: micro(state, weights, state.extra,
                                  jax.tree.map(lambda x: x[0], micro_batches), rng, constants))
                zeros = lambda t: jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), t)  # noqa: E731
                init = (zeros(first[0]), jnp.zeros((), jnp.float32), jnp.zeros((), jnp.float32),
                        zeros(first[1].metrics), state.extra)
                (grads, loss_sum, weight, msums, extra), _ = jax.lax.scan(
                    body, init, (jnp.arange(accum_steps), micro_batches))
            denom = jnp.maximum(weight, 1e-9)
            grads = jax.tree.map(lambda g: g / denom.astype(g.dtype), grads)
            updates, opt_state = tx.update(grads, state.opt_state, weights)
            weights = optax.apply_updates(weights, updates)
            metrics = {"loss": loss_sum / denom}
            metrics.update({k: s / jnp.maximum(c, 1e-9) for k, (s, c) in msums.items()})
            metrics["grad_norm"] = optax.tree.norm(grads)
            finite = _all_finite(metrics)
            metrics["param_norm"] = optax.tree.norm(weights)
            metrics["weight"] = weight
            if schedule is not None:
                metrics["learning_rate"] = jnp.asarray(schedule(state.step), jnp.float32)
            keep = lambda n, o: jnp.where(finite, n, o)  # noqa: E731
            weights = jax.tree.map(keep, weights, state.params if state.lora is None
                                   else state.lora)
            new = state.replace(step=state.step + 1, extra=extra, opt_state=opt_state,
                                **({"params": weights} if state.lora is None
                                   else {"lora": weights}))
            new = new.replace(extra=jax.tree.map(keep, new.extra, state.extra),
                              opt_state=jax.tree.map(keep, new.opt_state, state.opt_state),
                              step=jnp.where(finite, new.step, state.step))
            return new, {k: v.astype(jnp.float32) for k, v in metrics.items()}

    return step


def make_eval_step(task: Task, *, rules: Any = None) -> Callable[..., dict[str, tuple]]:
    """``eval_step(variables, batch, constants) -> {name: (sum, count)}`` (loss included)."""

    def eval_step(variables, batch, constants=None):
        with nn.logical_axis_rules(rules or ()):
            rng = jax.random.key_data(jax.random.key(0))
            b = task.prepare(batch, rng, False)
            out: LossOutput = task.loss(variables, b, train=False, rng=rng, constants=constants)
            sums = {"loss": (out.loss, out.weight), **out.metrics}
            return {k: (s.astype(jnp.float32), c.astype(jnp.float32)) for k, (s, c) in sums.items()}

    return eval_step
