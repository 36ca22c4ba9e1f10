"""SQuAD exact match and F1 with the official answer normalisation.

Normalisation (as in the official v1.1 script): lower case, drop punctuation,
drop the articles a/an/the, collapse whitespace. Each prediction is scored
against every gold answer and the maximum is kept.
"""

from __future__ import annotations

import collections
import re
import string
from collections.abc import Mapping, Sequence

__all__ = ["exact_match", "normalize_answer", "squad_f1", "squad_metrics"]

_PUNCT = set(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize_answer(text: str) -> str:
    text = "".join(ch for ch in text.lower() if ch not in _PUNCT)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def exact_match(prediction: str, gold: Sequence[str]) -> float:
    p = normalize_answer(prediction)
    return float(max(p == normalize_answer(g) for g in gold))


def _f1(prediction: str, truth: str) -> float:
    p, t = normalize_answer(prediction).split(), normalize_answer(truth).split()
    common = collections.Counter(p) & collections.Counter(t)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision, recall = same / len(p), same / len(t)
    return 2 * precision * recall / (precision + recall)


def squad_f1(prediction: str, gold: Sequence[str]) -> float:
    return max(_f1(prediction, g) for g in gold)


def squad_metrics(predictions: Mapping[str, str],
                  references: Mapping[str, Sequence[str]]) -> dict[str, float]:
    """``{"exact_match", "f1"}`` in percent over the questions in ``references``.

    A question without a prediction scores 0 (as in the official script).
    """
    if not references:
        raise ValueError("No reference answers.")
    em = f1 = 0.0
    for qid, gold in references.items():
        if not gold:
            raise ValueError(f"Question {qid!r} has no gold answers.")
        pred = predictions.get(qid)
        if pred is None:
            continue
        em += exact_match(pred, gold)
        f1 += squad_f1(pred, gold)
    n = len(references)
    return {"exact_match": 100.0 * em / n, "f1": 100.0 * f1 / n}
