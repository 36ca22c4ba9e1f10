"""Named-entity recognition metrics: entity-level precision/recall/F1 (``seqeval``).

Models tag sub-word tokens; NER is scored on words. :func:`word_tags` keeps the
positions that carry a label (each word's first sub-word; -100 elsewhere, as the
``tokenize_words`` preprocessing op writes them) and maps class ids to tag names,
giving word-level gold and predicted tag sequences, as Hugging Face ``run_ner``
does. :func:`ner_metrics` scores them with ``seqeval`` (micro averages over
entities, seqeval's default lenient IOB matching, or ``strict`` IOB2).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from jaxmm.config import ConfigError

__all__ = ["IGNORE_INDEX", "ner_metrics", "word_tags"]

IGNORE_INDEX = -100


def word_tags(predictions: np.ndarray, labels: np.ndarray, label_names: Sequence[str]
              ) -> tuple[list[list[str]], list[list[str]]]:
    """``(gold, predicted)`` word-level tag sequences, one list per row.

    predictions, labels: int ``(N, T)`` class ids per token; positions whose
    label is -100 are dropped.
    """
    predictions, labels = np.asarray(predictions), np.asarray(labels)
    if predictions.shape != labels.shape or labels.ndim != 2:
        raise ValueError(f"word_tags: predictions {predictions.shape} and labels {labels.shape} "
                         "must both be (N, T).")
    names = np.asarray(list(label_names), dtype=object)
    worst = int(max(predictions.max(initial=0), labels.max(initial=0)))
    if worst >= len(names):
        raise ConfigError(f"Class id {worst} has no tag name: label_names has {len(names)} "
                          f"({list(label_names)}); set it to the dataset's tags.")
    keep = labels != IGNORE_INDEX
    gold = [names[row[k]].tolist() for row, k in zip(labels, keep)]
    pred = [names[row[k]].tolist() for row, k in zip(predictions, keep)]
    return gold, pred


def ner_metrics(gold: Sequence[Sequence[str]], pred: Sequence[Sequence[str]], *,
                strict: bool = False) -> dict[str, float]:
    """Entity-level ``precision``, ``recall``, ``f1`` (micro) and token ``accuracy``.

    ``strict``: seqeval's strict IOB2 mode (an entity must start with ``B-``);
    the default is seqeval's (and ``run_ner``'s) lenient matching.
    """
    from seqeval import metrics
    from seqeval.scheme import IOB2

    kwargs = {"mode": "strict", "scheme": IOB2} if strict else {}
    gold, pred = [list(g) for g in gold], [list(p) for p in pred]
    return {"precision": float(metrics.precision_score(gold, pred, zero_division=0, **kwargs)),
            "recall": float(metrics.recall_score(gold, pred, zero_division=0, **kwargs)),
            "f1": float(metrics.f1_score(gold, pred, zero_division=0, **kwargs)),
            "accuracy": float(metrics.accuracy_score(gold, pred))}
