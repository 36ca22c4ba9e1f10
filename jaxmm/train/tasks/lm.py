"""Causal language modelling: next-token cross-entropy (GPT-2, Llama-style models).

Batch: ``input_ids``, ``attention_mask`` ``(B, T)`` and optionally ``labels``
``(B, T)`` aligned with ``input_ids`` (Hugging Face convention: the task shifts
them; ``-100`` = ignore). Without ``labels`` every non-padding token is a target.
Metrics: ``loss`` (per token), ``accuracy`` (next-token top-1), ``perplexity``.
"""

from __future__ import annotations

import dataclasses
import inspect
import math

import jax.numpy as jnp

from jaxmm.config import ConfigBase, ConfigError
from jaxmm.train.tasks.base import (
    IGNORE_INDEX,
    LossOutput,
    Task,
    example_weights,
    register_task,
    softmax_xent,
)


@dataclasses.dataclass(frozen=True)
class LMOptions(ConfigBase):
    """label_smoothing: mass spread uniformly over the vocabulary (0 = off)."""

    label_smoothing: float = 0.0

    def validate(self) -> None:
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ConfigError(
                f"task.label_smoothing must be in [0, 1); got {self.label_smoothing}.")


def lm_targets(batch) -> jnp.ndarray:
    """``labels`` or, without them, the non-padding ``input_ids`` (``-100`` elsewhere)."""
    if "labels" in batch:
        labels = batch["labels"]
    elif "attention_mask" in batch:
        labels = jnp.where(batch["attention_mask"] > 0, batch["input_ids"], IGNORE_INDEX)
    else:
        labels = batch["input_ids"]
    keep = example_weights(batch)[:, None] > 0
    return jnp.where(keep, labels, IGNORE_INDEX)


def perplexity(metrics: dict[str, float]) -> dict[str, float]:
    if "loss" in metrics:
        metrics["perplexity"] = math.exp(min(metrics["loss"], 50.0))
    return metrics


@register_task
class LanguageModelingTask(Task):
    name = "lm"
    Options = LMOptions
    default_model = "gpt"
    model_inputs = ("input_ids", "attention_mask")
    layout = "text"

    def inputs(self, batch):
        """The model inputs; packed rows (``segment_ids``, ``positions``: data.pack mode
        ``segments``) also pass their segments and per-sequence positions."""
        out = super().inputs(batch)
        if "segment_ids" in batch:
            if "segment_ids" not in inspect.signature(type(self.model).__call__).parameters:
                raise ConfigError(
                    f"Packed rows with segment_ids need a model that masks attention per "
                    f"segment (gpt); {type(self.model).__name__} does not. Use pack mode "
                    "'concat' or no packing.")
            out["segment_ids"] = batch["segment_ids"]
            out["position_ids"] = batch["positions"]
        return out

    def loss(self, variables, batch, *, train, rng, constants=None) -> LossOutput:
        out, extra = self.apply(variables, batch, train=train, rng=rng)
        labels = lm_targets(batch)
        nll, correct, n = softmax_xent(out.logits[:, :-1], labels[:, 1:],
                                       label_smoothing=self.options.label_smoothing)
        return LossOutput(loss=nll, weight=n, metrics={"accuracy": (correct, n)}, extra=extra)

    def summarize(self, metrics):
        return perplexity(metrics)
