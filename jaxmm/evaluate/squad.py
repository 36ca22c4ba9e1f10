"""SQuAD exact match and F1 as the official SQuAD v1.1 evaluation computes them.

Reference: ``evaluate-v1.1.py``, the official SQuAD v1.1 script (Rajpurkar et al.,
rajpurkar.github.io/SQuAD-explorer), run under Python 3 (the Hugging Face ``squad``
metric is the same code).

* Normalisation: lower case; delete the ASCII punctuation of ``string.punctuation``
  (so "1,000" -> "1000", "U.S." -> "us", "don't" -> "dont"; typographic marks such as
  "’" or "–" stay); replace the whole words a/an/the by a space; collapse white space.
* Exact match: the normalised strings are equal (two answers that both normalise to
  "" match).
* F1: bag-of-tokens overlap of the normalised strings (repeated tokens count up to
  their multiplicity on both sides); 0 when nothing overlaps, including when either
  side normalises to "" (the v2.0 script's no-answer rule is :func:`squad_v2_metrics`).
* Each prediction takes its best score over the gold answers; the corpus scores are
  means in percent over the questions of the reference set, an unanswered question
  scoring 0, predictions for other questions ignored.
"""

from __future__ import annotations

import collections
import re
import string
from collections.abc import Mapping, Sequence

__all__ = ["exact_match", "normalize_answer", "squad_f1", "squad_metrics", "squad_v2_metrics"]

_PUNCT = frozenset(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize_answer(text: str) -> str:
    """The official SQuAD answer normalisation (see the module docstring)."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCT)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def _check_gold(gold: Sequence[str]) -> None:
    if isinstance(gold, str):
        raise TypeError(f"gold must be a list of answers, not the string {gold!r}; "
                        f"pass [{gold!r}].")
    if not gold:
        raise ValueError("A question needs at least one gold answer.")


def exact_match(prediction: str, gold: Sequence[str]) -> float:
    """1.0 if ``prediction`` normalises to the same string as any gold answer, else 0.0."""
    _check_gold(gold)
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
    """Best token F1 in [0, 1] of ``prediction`` over the gold answers."""
    _check_gold(gold)
    return max(_f1(prediction, g) for g in gold)


def squad_metrics(predictions: Mapping[str, str],
                  references: Mapping[str, Sequence[str]]) -> dict[str, float]:
    """``{"exact_match", "f1"}`` in percent over the questions in ``references``.

    Args:
      predictions: question id -> predicted answer text.
      references: question id -> the gold answer texts of that question.

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


def _f1_v2(prediction: str, truth: str) -> float:
    p, t = normalize_answer(prediction).split(), normalize_answer(truth).split()
    if not p or not t:  # the v2.0 rule: an empty side scores 1 only against an empty side
        return float(p == t)
    return _f1(prediction, truth)


def squad_v2_metrics(predictions: Mapping[str, str],
                     references: Mapping[str, Sequence[str]]) -> dict[str, float]:
    """SQuAD v2.0 ``exact_match`` and ``f1`` in percent, as the official v2.0 script.

    A question whose gold answers are all empty after normalisation (``[]`` or
    ``[""]``) has no answer: the prediction ``""`` scores 1 and anything else 0.
    Otherwise the empty gold answers are dropped and a prediction scores as in v1.1,
    except that ``""`` scores 0. Also ``has_answer_*`` / ``no_answer_*`` means over
    the two kinds of question and their counts (``has_answer_total``, ...); a
    question without a prediction scores 0.
    """
    if not references:
        raise ValueError("No reference answers.")
    scores = {True: [], False: []}  # has an answer -> [(em, f1)]
    for qid, gold in references.items():
        if isinstance(gold, str):
            raise TypeError(f"gold of {qid!r} must be a list of answers, not a string.")
        gold = [g for g in gold if normalize_answer(g)]
        pred = predictions.get(qid)
        if pred is None:
            scores[bool(gold)].append((0.0, 0.0))
            continue
        truths = gold or [""]
        em = max(float(normalize_answer(pred) == normalize_answer(g)) for g in truths)
        scores[bool(gold)].append((em, max(_f1_v2(pred, g) for g in truths)))
    every = scores[True] + scores[False]
    out = {"exact_match": 100.0 * sum(s[0] for s in every) / len(every),
           "f1": 100.0 * sum(s[1] for s in every) / len(every)}
    for has, name in ((True, "has_answer"), (False, "no_answer")):
        if scores[has]:
            out[f"{name}_exact_match"] = 100.0 * sum(s[0] for s in scores[has]) / len(scores[has])
            out[f"{name}_f1"] = 100.0 * sum(s[1] for s in scores[has]) / len(scores[has])
        out[f"{name}_total"] = float(len(scores[has]))
    return out
