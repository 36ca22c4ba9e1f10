"""Knowledge distillation: a student learns from a frozen teacher's logits.

``loss = alpha * T^2 * KL(teacher/T || student/T) + (1 - alpha) * CE(student, labels)``
(:func:`jaxmm.losses.distillation_loss`). ``task.student_task`` says what the
logits are: ``classification`` (``label``, ``(B, C)`` logits), ``lm`` (next
token) or ``mlm`` (masked tokens). The teacher is ``config.teacher``: a
registered model name and config, with weights from ``teacher.params`` (a
jaxmm params export) or ``teacher.hf`` (a Hugging Face folder). Its variables
are a sharded constant of the step (no gradients, no optimizer state).

Metrics: ``loss``, ``kd_loss`` (the soft term, times T^2), ``accuracy`` of the
student, ``agreement`` (student and teacher top-1 equal).
"""

from __future__ import annotations

import dataclasses
import logging

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxmm import losses
from jaxmm.config import ConfigBase, ConfigError
from jaxmm.train.tasks.base import (
    IGNORE_INDEX,
    LossOutput,
    Task,
    example_weights,
    get_task,
    register_task,
)

log = logging.getLogger(__name__)

_STUDENT_TASKS = ("classification", "lm", "mlm")


@dataclasses.dataclass(frozen=True)
class DistillationOptions(ConfigBase):
    """alpha: weight of the soft (teacher) term; temperature: T. student_task and
    its options: modality (classification), mask_token_id (mlm)."""

    alpha: float = 0.5
    temperature: float = 2.0
    student_task: str = "classification"
    modality: str = "image"
    mask_token_id: int | None = None

    def validate(self) -> None:
        if self.student_task not in _STUDENT_TASKS:
            raise ConfigError(f"task.student_task={self.student_task!r} is not one of "
                              f"{', '.join(_STUDENT_TASKS)}.")
        if not 0.0 <= self.alpha <= 1.0 or self.temperature <= 0:
            raise ConfigError("task.alpha must be in [0, 1] and task.temperature > 0.")


@register_task
class DistillationTask(Task):
    name = "distillation"
    Options = DistillationOptions

    def __init__(self, options, model, teacher=None):
        super().__init__(options, model, teacher)
        if teacher is None:
            raise ConfigError("task 'distillation' needs a teacher: set teacher.name (and "
                              "teacher.params or teacher.hf for its weights).")
        inner_cls = get_task(options.student_task)
        inner_opts = {"classification": {"modality": options.modality},
                      "mlm": {"mask_token_id": options.mask_token_id}}.get(options.student_task, {})
        self.inner = inner_cls(inner_cls.Options.from_dict(inner_opts), model)
        self.model_inputs = self.inner.model_inputs
        self.layout = self.inner.layout

    def prepare(self, batch, rng, train):
        return self.inner.prepare(batch, rng, train)

    def _targets(self, logits, batch):
        if self.options.student_task == "lm":
            from jaxmm.train.tasks.lm import lm_targets

            return logits[:, :-1], lm_targets(batch)[:, 1:]
        if self.options.student_task == "mlm":
            return logits, batch["labels"]
        label = jnp.where(example_weights(batch) > 0, batch["label"], IGNORE_INDEX)
        return logits, label

    def loss(self, variables, batch, *, train, rng, constants=None) -> LossOutput:
        out, extra = self.apply(variables, batch, train=train, rng=rng)
        t_out, _ = self.apply(constants, batch, train=False, model=self.teacher)
        s_logits, labels = self._targets(out.logits, batch)
        t_logits, _ = self._targets(t_out.logits, batch)
        o = self.options
        valid = (labels != IGNORE_INDEX).astype(jnp.float32)
        n = valid.sum()
        total = losses.distillation_loss(s_logits, t_logits, labels, temperature=o.temperature,
                                         alpha=o.alpha)
        soft = losses.distillation_loss(s_logits, t_logits, None, temperature=o.temperature,
                                        mask=valid)
        s_top, t_top = jnp.argmax(s_logits, -1), jnp.argmax(t_logits, -1)
        metrics = {"kd_loss": (soft * n, n),
                   "accuracy": (((s_top == labels) * valid).sum(), n),
                   "agreement": (((s_top == t_top) * valid).sum(), n)}
        return LossOutput(loss=total * n, weight=n, metrics=metrics, extra=extra)

    def constants(self, config, mesh, rules):
        """The teacher's variables, sharded by their logical axis names."""
        from jaxmm import sharding
        from jaxmm.train.checkpoint import load_exported

        example = self.example_batch(1)
        rng = jax.random.PRNGKey(config.seed + 1)
        with nn.logical_axis_rules(rules):
            boxed = jax.eval_shape(lambda r: self.teacher.init(r, **self.inputs(example)), rng)
        shardings = sharding.logical_shardings(boxed, mesh, rules)
        t = config.teacher
        if t.params:
            return load_exported(t.params, shardings=shardings)[1]
        if t.hf:
            from jaxmm.convert import from_hf

            params = from_hf(t.hf).params
            return jax.device_put({"params": params}, {"params": shardings["params"]})
        log.warning("teacher.params / teacher.hf not set: distilling from a randomly "
                    "initialised teacher (only useful for testing).")
        with nn.logical_axis_rules(rules):
            return jax.jit(lambda r: nn.meta.unbox(self.teacher.init(r, **self.inputs(example))),
                           out_shardings=shardings)(rng)
