"""n-best span decoding against a brute-force search, and the SQuAD v2.0 metric."""

import collections
import itertools
import re
import string

import numpy as np
import pytest

from jaxmm.evaluate.span_decoding import best_span, decode_answer
from jaxmm.evaluate.squad import squad_v2_metrics


def brute_force(start, end, ctx, max_len, allowed_starts=None, allowed_ends=None):
    """Best (score, window, s, e) over every valid span, by enumeration."""
    best = (-np.inf, -1, 0, 0)
    w, t = start.shape
    for win, s, e in itertools.product(range(w), range(t), range(t)):
        if not (ctx[win, s] and ctx[win, e] and s <= e < s + max_len):
            continue
        if allowed_starts is not None and (s not in allowed_starts[win]
                                           or e not in allowed_ends[win]):
            continue
        score = start[win, s] + end[win, e]
        if score > best[0]:
            best = (score, win, s, e)
    return best


@pytest.mark.parametrize("seed", range(6))
def test_best_span_equals_brute_force_over_all_spans(seed):
    rng = np.random.default_rng(seed)
    w, t = 3, 14
    start, end = rng.normal(size=(w, t)), rng.normal(size=(w, t))
    ctx = np.zeros((w, t), bool)
    ctx[:, 4:13] = True
    ctx[2, 9:] = False  # a shorter last window
    max_len = int(rng.integers(1, 6))
    span = best_span(start, end, ctx, n_best=t, max_answer_length=max_len)
    score, win, s, e = brute_force(start, end, ctx, max_len)
    assert (span.window, span.start, span.end) == (win, s, e)
    assert span.score == pytest.approx(score)
    assert span.null_score == pytest.approx(min(start[:, 0] + end[:, 0]))


@pytest.mark.parametrize("seed", range(4))
def test_n_best_searches_the_top_k_starts_and_ends(seed):
    rng = np.random.default_rng(100 + seed)
    w, t, k = 2, 20, 3
    start, end = rng.normal(size=(w, t)), rng.normal(size=(w, t))
    ctx = np.zeros((w, t), bool)
    ctx[:, 5:19] = True
    top = lambda x: [set(np.argsort(-np.where(ctx[i], x[i], -np.inf))[:k]) for i in range(w)]  # noqa: E731
    span = best_span(start, end, ctx, n_best=k, max_answer_length=8)
    score, win, s, e = brute_force(start, end, ctx, 8, top(start), top(end))
    if win < 0:
        assert span.window == -1
    else:
        assert (span.window, span.start, span.end) == (win, s, e)


def test_decode_maps_back_to_text_and_v2_threshold():
    context = "the cat sat on the mat"
    # one window: [CLS] q [SEP] the cat sat on the mat [SEP]
    offsets = np.full((1, 10, 2), -1)
    spans = [(m.start(), m.end()) for m in re.finditer(r"\S+", context)]
    offsets[0, 3:9] = spans
    start, end = np.zeros((1, 10)), np.zeros((1, 10))
    start[0, 4], end[0, 5] = 5.0, 4.0  # "cat sat": score 9
    assert decode_answer(start, end, offsets, context) == "cat sat"
    start[0, 0], end[0, 0] = 6.0, 6.0  # null score 12 beats 9 by 3
    assert decode_answer(start, end, offsets, context) == "cat sat"  # v1.1: always answers
    assert decode_answer(start, end, offsets, context, null_threshold=0.0) == ""
    assert decode_answer(start, end, offsets, context, null_threshold=3.5) == "cat sat"
    assert decode_answer(start, end, offsets, context, max_answer_length=1) in (
        "cat", "sat")


def _official_v2(predictions, references):
    """The SQuAD v2.0 script's rule, written out: normalise; an empty gold list means the
    gold is ['']; an empty side gives F1 = (both empty)."""
    def norm(s):
        s = "".join(ch for ch in s.lower() if ch not in set(string.punctuation))
        return " ".join(re.sub(r"\b(a|an|the)\b", " ", s).split())

    def f1(g, p):
        gt, pt = norm(g).split(), norm(p).split()
        if not gt or not pt:
            return float(gt == pt)
        same = sum((collections.Counter(gt) & collections.Counter(pt)).values())
        if not same:
            return 0.0
        prec, rec = same / len(pt), same / len(gt)
        return 2 * prec * rec / (prec + rec)

    em = f = 0.0
    for qid, gold in references.items():
        gold = [g for g in gold if norm(g)] or [""]
        p = predictions[qid]
        em += max(float(norm(g) == norm(p)) for g in gold)
        f += max(f1(g, p) for g in gold)
    return 100 * em / len(references), 100 * f / len(references)


def test_squad_v2_metrics_match_the_official_rule():
    refs = {"a": ["the Eiffel Tower", "Eiffel tower"], "b": [], "c": ["", ""], "d": ["Paris"],
            "e": ["in 1889"], "f": []}
    preds = {"a": "Eiffel", "b": "", "c": "something", "d": "", "e": "1889", "f": "the"}
    out = squad_v2_metrics(preds, refs)
    em, f1 = _official_v2(preds, refs)
    assert out["exact_match"] == pytest.approx(em) and out["f1"] == pytest.approx(f1)
    # b and f ("the" normalises to nothing) are right, c is wrong
    assert out["no_answer_exact_match"] == pytest.approx(200 / 3)
    assert out["no_answer_total"] == 3 and out["has_answer_total"] == 3
