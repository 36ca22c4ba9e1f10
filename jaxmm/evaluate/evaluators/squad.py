"""The ``squad`` evaluator: SQuAD exact match and F1 of decoded answer spans.

The eval batches are the ``squad`` preset's (:func:`jaxmm.data.catalog.squad`): all
doc-stride windows of each example ``(B, W, T)`` with their character ``offsets``,
and the host fields ``context``, ``answers/text`` (``''``-padded) and ``id``. The
model's start/end logits of every window are decoded on the host into one answer
per example (:func:`jaxmm.evaluate.span_decoding.decode_answer`: n-best spans, the
best over the windows, cut from the context through the offsets), then scored with
:func:`jaxmm.evaluate.squad_metrics` (v1.1) or :func:`jaxmm.evaluate.squad_v2_metrics`
(v2.0: an example whose gold answers are all ``''`` has no answer, and the
prediction is ``''`` when the null score beats the best span by ``null_threshold``).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from jaxmm.config import ConfigBase, ConfigError
from jaxmm.evaluate.evaluators.base import Evaluator, register_evaluator, texts
from jaxmm.evaluate.span_decoding import decode_answer
from jaxmm.evaluate.squad import squad_metrics, squad_v2_metrics

__all__ = ["SquadEvaluator", "SquadOptions"]

_NEEDS = ("offsets", "context", "answers/text")


@dataclasses.dataclass(frozen=True)
class SquadOptions(ConfigBase):
    """version: 1 (SQuAD v1.1: always answer) or 2 (v2.0: may answer nothing).
    n_best: start/end candidates per window. max_answer_length: in tokens.
    null_threshold: v2 predicts no answer when ``null - best span > null_threshold``."""

    version: int = 1
    n_best: int = 20
    max_answer_length: int = 30
    null_threshold: float = 0.0

    def validate(self) -> None:
        if self.version not in (1, 2):
            raise ConfigError(f"squad evaluator: version must be 1 or 2; got {self.version}.")
        if self.n_best < 1 or self.max_answer_length < 1:
            raise ConfigError("squad evaluator: n_best and max_answer_length must be >= 1; got "
                              f"{self.n_best} and {self.max_answer_length}.")


@register_evaluator("squad")
class SquadEvaluator(Evaluator):
    """``exact_match`` and ``f1`` (percent) of the decoded answers, ``num_examples``
    (v2 also ``has_answer_*`` / ``no_answer_*``)."""

    Options = SquadOptions

    def __init__(self, *args: Any):
        super().__init__(*args)

        def logits(variables, batch):
            b, w, t = batch["input_ids"].shape
            out = self.forward(variables, self.prepare(batch))
            return {"start": out.start_logits.reshape(b, w, t),
                    "end": out.end_logits.reshape(b, w, t)}

        self._logits = self.jit(logits)

    def predictions(self, variables: Any) -> tuple[list[str], list[str], list[list[str]]]:
        """``(ids, predicted answers, gold answers)`` of every eval example."""
        o = self.options

        def step(local, batch):
            missing = [k for k in _NEEDS if k not in local]
            if missing or np.ndim(local["input_ids"]) != 3:
                raise ConfigError(
                    f"Evaluator {self.name!r}: the eval batches need the squad preset's "
                    f"windows (B, W, T) and {', '.join(_NEEDS)}; missing {missing or 'windows'} "
                    f"(keys: {sorted(local)}). Use data=squad (jaxmm.data.catalog.squad).")
            out = {k: self.host_rows(v) for k, v in self._logits(variables, batch).items()}
            contexts = texts(local["context"])
            answers = [decode_answer(out["start"][i], out["end"][i], local["offsets"][i],
                                     contexts[i], n_best=o.n_best,
                                     max_answer_length=o.max_answer_length,
                                     null_threshold=o.null_threshold if o.version == 2 else None)
                       for i in range(len(contexts))]
            ids = texts(local["id"]) if "id" in local else np.asarray(
                [str(i) for i in range(len(contexts))], object)
            return {"id": ids, "prediction": np.asarray(answers, object),
                    "gold": texts(local["answers/text"]), "mask": local["example_mask"]}

        rows = self.collect(step)
        ids = [str(i) for i in rows["id"]]
        return ids, list(rows["prediction"]), [list(g) for g in rows["gold"]]

    def evaluate(self, variables: Any) -> dict[str, float]:
        ids, preds, golds = self.predictions(variables)
        # Rows are examples: key them by position (ids of padded duplicates repeat).
        keys = [f"{i}:{qid}" for i, qid in enumerate(ids)]
        predictions = dict(zip(keys, preds))
        if self.options.version == 2:
            out = squad_v2_metrics(predictions, dict(zip(keys, golds)))
        else:
            references = {k: [a for a in g if a] for k, g in zip(keys, golds)}
            empty = [k for k, g in references.items() if not g]
            if empty:
                raise ConfigError(
                    f"Evaluator {self.name!r}: example {empty[0].partition(':')[2]!r} has no "
                    "gold answer, which SQuAD v1.1 does not allow; for SQuAD v2.0 data set "
                    f"eval.evaluators.{self.name}.version=2.")
            out = squad_metrics(predictions, references)
        out["num_examples"] = float(len(keys))
        return out
