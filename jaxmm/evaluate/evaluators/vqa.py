"""The ``vqa`` evaluator: VQA accuracy of every question, overall and by question type.

A ``classify`` model's answer is ``answers[argmax(logits)]`` (the answer
vocabulary in label order); a ``generate`` model's answer is generated with
:func:`jaxmm.generate` and decoded with the run's tokenizer. Each answer is
scored with :func:`jaxmm.evaluate.vqa_accuracy` (official answer normalisation;
``min(#humans who gave it / 3, 1)`` averaged over the 10 subsets of 9 humans).
A question with ONE gold answer counts it as given by all ten humans, so the
score is exact match.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import jax.numpy as jnp
import numpy as np

from jaxmm.config import ConfigError
from jaxmm.evaluate.evaluators.base import register_evaluator, texts
from jaxmm.evaluate.evaluators.text_generation import GeneratingEvaluator, GenerationOptions
from jaxmm.evaluate.vqa import vqa_accuracy

__all__ = ["VQAEvaluator", "VQAOptions", "VQAPredictions"]


@dataclasses.dataclass(frozen=True)
class VQAOptions(GenerationOptions):
    """answers: the answer vocabulary in label order (classify models; also maps
    ``label`` to gold answers when the batch has no answer strings).
    gold: the batch's gold answer strings, ``(B, Q)`` or ``(B, Q, humans)``.
    types: the batch's question (or answer) type strings, ``(B, Q)`` ("" = none).
    Generation options apply to ``generate`` models."""

    DEFAULTS: ClassVar = {"max_new_tokens": 8, "references": "answers"}
    answers: tuple[str, ...] = ()
    types: str = "question_types"


@dataclasses.dataclass(frozen=True)
class VQAPredictions:
    """Answers to every real eval question (all processes, in order).

    image_ids: ``(N,)`` the question's image. predictions: ``N`` answers.
    gold: ``N`` lists of human answers. types: ``N`` question types or ``None``.
    """

    image_ids: np.ndarray
    predictions: list[str]
    gold: list[list[str]]
    types: list[str] | None


def _per_question(value: np.ndarray, rows: int) -> np.ndarray:
    """``(B, ...)`` per-image or ``(B, Q, ...)`` per-question host field -> ``rows`` rows."""
    value = np.asarray(value)
    per_image = rows // value.shape[0]
    if value.ndim >= 2 and value.shape[1] == per_image and per_image > 1:
        return value.reshape(rows, *value.shape[2:])
    return np.repeat(value, per_image, axis=0) if per_image > 1 else value


@register_evaluator("vqa")
class VQAEvaluator(GeneratingEvaluator):
    """VQA accuracy (percent): ``accuracy``, ``accuracy/<type>`` and ``num_questions``.

    Batches: ``image``, the question(s) ``input_ids`` / ``attention_mask``
    (``(B, Q, T)`` for several per image; empty questions are padding), gold
    answers (``references`` strings, or ``label`` with ``answers``), optionally
    question types (``types``) and ``image_id``.
    """

    Options = VQAOptions

    def __init__(self, *args: Any):
        super().__init__(*args)
        if not self.generates:
            if not self.options.answers:
                raise ConfigError(f"Evaluator {self.name!r}: a classify VQA model needs the "
                                  "answer vocabulary (answers=...) to name its predictions.")

            def answer(variables, batch):
                prepared = self.prepare(batch)
                logits = self.forward(variables, prepared).logits
                mask = prepared.get("example_mask", jnp.ones((logits.shape[0],), jnp.float32))
                return {"answer": jnp.argmax(logits, -1), "mask": mask}

            self._answer = self.jit(answer)

    @property
    def generates(self) -> bool:
        return getattr(self.task.options, "mode", "classify") == "generate"

    def _answers(self, variables: Any, params: Any, batch: dict) -> tuple[list[str], np.ndarray]:
        """This process's answers to the batch's questions and their row mask."""
        if self.generates:
            tokens, mask = self.generate_tokens(variables, params, batch)
            return list(self.require_tokenizer().decode(tokens)), mask
        out = {k: self.host_rows(v) for k, v in self._answer(variables, batch).items()}
        return [self.options.answers[int(i)] for i in out["answer"]], out["mask"]

    def _gold(self, local: dict[str, np.ndarray], rows: int) -> np.ndarray:
        key, vocab = self.options.references, self.options.answers
        if key in local:
            gold = texts(local[key])
        elif "label" in local and vocab:
            gold = np.vectorize(lambda i: vocab[int(i)], otypes=[object])(local["label"])
        else:
            raise ConfigError(f"Evaluator {self.name!r}: the eval batch has no {key!r} answer "
                              f"strings (nor 'label' with answers=...); keys: {sorted(local)}.")
        return _per_question(gold, rows)

    def predict(self, variables: Any) -> VQAPredictions:
        params = self.generation_params(variables) if self.generates else None

        def step(local, batch):
            answers, mask = self._answers(variables, params, batch)
            rows = len(answers)
            out = {"prediction": texts(np.asarray(answers, object)), "mask": mask,
                   "gold": self._gold(local, rows)}
            if self.options.types in local:
                out["type"] = _per_question(texts(local[self.options.types]), rows)
            if "image_id" in local:
                out["image_id"] = _per_question(local["image_id"], rows)
            return out

        rows = self.collect(step)
        gold = [[str(a) for a in np.atleast_1d(g) if a] for g in rows["gold"]]
        return VQAPredictions(
            image_ids=rows.get("image_id", np.arange(len(gold))),
            predictions=[str(p) for p in rows["prediction"]], gold=gold,
            types=[str(t) for t in rows["type"]] if "type" in rows else None)

    def score(self, predictions: VQAPredictions) -> dict[str, float]:
        gold = [g * 10 if len(g) == 1 else g for g in predictions.gold]
        out = vqa_accuracy(predictions.predictions, gold, predictions.types)
        out["num_questions"] = float(len(gold))
        return out

    def evaluate(self, variables: Any) -> dict[str, float]:
        return self.score(self.predict(variables))
