"""The ``ner`` evaluator: entity-level precision/recall/F1 and token accuracy of a
token classifier (:func:`jaxmm.evaluate.ner.ner_metrics`, ``seqeval``).

Predictions are the argmax of the model's ``logits`` ``(B, T, C)``; gold labels are
the batch's ``labels`` ``(B, T)`` (-100 where no word starts). Both are read at
the labelled positions (each word's first sub-word) and mapped to the tag names
``label_names`` (IOB2), giving word-level sequences for seqeval.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax.numpy as jnp

from jaxmm.config import ConfigBase, ConfigError
from jaxmm.data.catalog import CONLL2003_NER_TAGS
from jaxmm.evaluate.evaluators.base import Evaluator, register_evaluator
from jaxmm.evaluate.ner import ner_metrics, word_tags

__all__ = ["NEROptions", "NEREvaluator"]


@dataclasses.dataclass(frozen=True)
class NEROptions(ConfigBase):
    """label_names: the tag of each class id (default: CoNLL-2003's). strict: seqeval's
    strict IOB2 matching (default: its lenient default, as ``run_ner``)."""

    label_names: tuple[str, ...] = CONLL2003_NER_TAGS
    strict: bool = False

    def validate(self) -> None:
        if not self.label_names:
            raise ConfigError("ner evaluator: label_names is empty; give the dataset's tags.")
        bad = [t for t in self.label_names if t != "O" and t[:2] not in ("B-", "I-")]
        if bad:
            raise ConfigError(f"ner evaluator: tag {bad[0]!r} is not IOB2 (O, B-X or I-X); "
                              f"label_names={list(self.label_names)}.")


@register_evaluator("ner")
class NEREvaluator(Evaluator):
    """Entity ``precision``/``recall``/``f1``, token ``accuracy``, ``num_sentences``."""

    Options = NEROptions

    def __init__(self, *args: Any):
        super().__init__(*args)

        def predict(variables, batch):
            prepared = self.prepare(batch)
            logits = self.forward(variables, prepared).logits
            mask = prepared.get("example_mask", jnp.ones(logits.shape[0], jnp.float32))
            return {"prediction": jnp.argmax(logits, -1), "label": prepared["labels"],
                    "mask": mask}

        self._predict = self.jit(predict)

    def evaluate(self, variables: Any) -> dict[str, float]:
        def step(local, batch):
            if "labels" not in local or local["labels"].ndim != 2:
                raise ConfigError(f"Evaluator {self.name!r}: the eval batch needs per-token "
                                  f"'labels' (B, T) (keys: {sorted(local)}).")
            return {k: self.host_rows(v) for k, v in self._predict(variables, batch).items()}

        rows = self.collect(step)
        gold, pred = word_tags(rows["prediction"], rows["label"], self.options.label_names)
        out = ner_metrics(gold, pred, strict=self.options.strict)
        out["num_sentences"] = float(len(gold))
        return out
