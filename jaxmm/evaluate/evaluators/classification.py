"""Classifier evaluators over the whole eval set: ``classification`` (accuracy, F1,
Matthews correlation) and ``glue`` (each GLUE task's official metrics).

Predictions are the argmax of the model's ``logits`` on the task's prepared
batch (a regression head with one output gives its value instead, as GLUE's
``stsb`` needs); labels are the prepared batch's ``label``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax.numpy as jnp
import numpy as np

from jaxmm.config import ConfigBase, ConfigError
from jaxmm.evaluate.classification import GLUE_METRICS, accuracy, f1, glue_metrics, matthews
from jaxmm.evaluate.evaluators.base import Evaluator, register_evaluator

__all__ = ["ClassificationEvaluator", "ClassificationOptions", "GLUEEvaluator", "GLUEOptions"]

_METRICS = {
    "accuracy": accuracy,
    "f1": f1,
    "macro_f1": lambda p, y: f1(p, y, average="macro"),
    "matthews": matthews,
}


class _Predictions(Evaluator):
    """``predictions`` and ``labels`` of every real eval row."""

    def __init__(self, *args: Any):
        super().__init__(*args)

        def predict(variables, batch):
            prepared = self.prepare(batch)
            logits = self.forward(variables, prepared).logits
            pred = logits[..., 0] if logits.shape[-1] == 1 else jnp.argmax(logits, -1)
            mask = prepared.get("example_mask", jnp.ones(logits.shape[0], jnp.float32))
            return {"prediction": pred, "label": prepared["label"], "mask": mask}

        self._predict = self.jit(predict)

    def predictions(self, variables: Any) -> tuple[np.ndarray, np.ndarray]:
        """``(predictions, labels)``, each ``(N,)``."""

        def step(local, batch):
            if "label" not in local:
                raise ConfigError(f"Evaluator {self.name!r}: the eval batch has no 'label' "
                                  f"(keys: {sorted(local)}).")
            return {k: self.host_rows(v) for k, v in self._predict(variables, batch).items()}

        rows = self.collect(step)
        return rows["prediction"], rows["label"]


@dataclasses.dataclass(frozen=True)
class ClassificationOptions(ConfigBase):
    """metrics: any of accuracy, f1 (binary, positive class 1), macro_f1, matthews."""

    metrics: tuple[str, ...] = ("accuracy", "macro_f1")

    def validate(self) -> None:
        unknown = [m for m in self.metrics if m not in _METRICS]
        if unknown or not self.metrics:
            raise ConfigError(f"Unknown classification metric(s) {unknown}; choose from "
                              f"{', '.join(_METRICS)}.")


@register_evaluator("classification")
class ClassificationEvaluator(_Predictions):
    """Accuracy / F1 / Matthews correlation (fractions, scikit-learn) of the argmax
    class, plus ``num_examples``."""

    Options = ClassificationOptions

    def evaluate(self, variables: Any) -> dict[str, float]:
        pred, label = self.predictions(variables)
        out = {m: _METRICS[m](pred, label) for m in self.options.metrics}
        out["num_examples"] = float(len(label))
        return out


@dataclasses.dataclass(frozen=True)
class GLUEOptions(ConfigBase):
    """task: the GLUE task (cola, sst2, mrpc, stsb, qqp, mnli, qnli, rte, wnli)."""

    task: str = "sst2"

    def validate(self) -> None:
        if self.task not in GLUE_METRICS:
            raise ConfigError(f"Unknown GLUE task {self.task!r}; choose one of "
                              f"{', '.join(sorted(GLUE_METRICS))}.")


@register_evaluator("glue")
class GLUEEvaluator(_Predictions):
    """The official metric(s) of a GLUE task (:func:`jaxmm.evaluate.glue_metrics`):
    accuracy, F1, Matthews correlation, or Pearson/Spearman for ``stsb``."""

    Options = GLUEOptions

    def evaluate(self, variables: Any) -> dict[str, float]:
        pred, label = self.predictions(variables)
        out = glue_metrics(self.options.task, pred, label)
        out["num_examples"] = float(len(label))
        return out
