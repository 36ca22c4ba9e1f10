"""The task's own loss and metrics (``loss``), and token perplexity (``perplexity``).

Both sum the task's ``(sum, count)`` eval metrics over every batch and process
(the jitted eval step returns them replicated), so the result is the exact
mean over the eval set, whatever the batch size.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax

from jaxmm.config import ConfigError
from jaxmm.evaluate.evaluators.base import Evaluator, register_evaluator
from jaxmm.evaluate.text import perplexity

__all__ = ["LossEvaluator", "PerplexityEvaluator"]


def _sum_metrics(evaluator: Evaluator, eval_step: Any, variables: Any) -> dict[str, list[float]]:
    """``{metric: [sum, count]}`` of ``eval_step`` over the evaluator's batches."""
    task, constants = evaluator.task, evaluator.context.constants
    sums: dict[str, list[float]] = {}
    for local in evaluator.batches(skip_short=not task.supports_padding):
        out = jax.device_get(eval_step(variables, evaluator.global_batch(local), constants))
        for key, (s, c) in out.items():
            acc = sums.setdefault(key, [0.0, 0.0])
            acc[0] += float(s)
            acc[1] += float(c)
    return sums


@register_evaluator("loss")
class LossEvaluator(Evaluator):
    """The task's eval loss and metrics (as in training: ``loss``, ``accuracy``,
    ``perplexity`` for language tasks, ...), each ``sum / count`` over the data."""

    def evaluate(self, variables: Any) -> dict[str, float]:
        sums = _sum_metrics(self, self.context.eval_step, variables)
        return self.task.summarize({k: s / max(c, 1e-9) for k, (s, c) in sums.items()})


@register_evaluator("perplexity")
class PerplexityEvaluator(Evaluator):
    """Perplexity ``exp(total NLL / total targets)`` of a cross-entropy task: per
    token for language tasks (``lm``, ``mlm``, ``captioning``, ``asr``,
    generative ``vqa``), per label for classification.

    The task's loss is used without label smoothing (smoothing changes the loss,
    not the likelihood). Metrics: ``perplexity``, ``nll`` (nats per target) and
    ``tokens`` (the number of targets).
    """

    def __init__(self, *args: Any):
        super().__init__(*args)
        task = self.task
        smoothing = getattr(task.options, "label_smoothing", None)
        if smoothing is None:
            raise ConfigError(f"Evaluator {self.name!r}: perplexity needs a cross-entropy "
                              f"task (with a label_smoothing option, e.g. lm, mlm, captioning, "
                              f"asr); task {task.name!r} has none.")
        if smoothing:
            options = dataclasses.replace(task.options, label_smoothing=0.0)
            task = type(task)(options, task.model, task.teacher)
            self._eval_step = self.context.make_eval_step(task)
        else:
            self._eval_step = self.context.eval_step

    def evaluate(self, variables: Any) -> dict[str, float]:
        total, tokens = _sum_metrics(self, self._eval_step, variables)["loss"]
        return {"perplexity": perplexity(total, tokens), "nll": total / tokens,
                "tokens": tokens}
