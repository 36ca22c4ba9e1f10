"""SQuAD EM/F1 against a restatement of the official v1.1 evaluation script's rules.

The reference functions follow ``evaluate-v1.1.py`` step by step (normalise: lower,
drop ``string.punctuation``, articles to a space, collapse white space; F1 from the
token-count intersection; best over gold answers; corpus totals over the dataset's
questions, a missing prediction counting 0).
"""

import random
import re
import string
from collections import Counter

import pytest

from jaxmm import evaluate as ev


def ref_normalize(s):
    s = s.lower()
    exclude = set(string.punctuation)
    s = "".join(ch for ch in s if ch not in exclude)
    s = re.sub(r"\b(a|an|the)\b", " ", s)
    return " ".join(s.split())


def ref_f1(prediction, ground_truth):
    prediction_tokens = ref_normalize(prediction).split()
    ground_truth_tokens = ref_normalize(ground_truth).split()
    common = Counter(prediction_tokens) & Counter(ground_truth_tokens)
    num_same = sum(common.values())
    if num_same == 0:
        return 0
    precision = 1.0 * num_same / len(prediction_tokens)
    recall = 1.0 * num_same / len(ground_truth_tokens)
    return (2 * precision * recall) / (precision + recall)


def ref_exact(prediction, ground_truth):
    return ref_normalize(prediction) == ref_normalize(ground_truth)


def ref_evaluate(dataset, predictions):
    """``dataset``: [(question id, [gold texts])] in file order."""
    f1 = exact_match = total = 0
    for qid, ground_truths in dataset:
        total += 1
        if qid not in predictions:
            continue
        prediction = predictions[qid]
        exact_match += max(ref_exact(prediction, gt) for gt in ground_truths)
        f1 += max(ref_f1(prediction, gt) for gt in ground_truths)
    return {"exact_match": 100.0 * exact_match / total, "f1": 100.0 * f1 / total}


EDGE_CASES = [
    # (prediction, gold answers)
    ("the Eiffel Tower", ["Eiffel Tower", "tower"]),  # article, capitals
    ("Eiffel Tower, Paris", ["Eiffel Tower"]),  # punctuation, partial overlap
    ("Paris", ["Eiffel Tower", "in Paris"]),  # best over several golds
    ("1,000", ["1000"]), ("1,000 people", ["one thousand people"]),  # commas in numbers
    ("U.S.", ["US"]), ("3.5 km", ["35 km"]),  # periods vanish, also inside numbers
    ("don't", ["dont"]), ("don’t", ["dont"]),  # ASCII apostrophe goes, typographic stays
    ("an apple", ["A  Apple."]), ("theater", ["the theater"]),  # articles only as words
    ("Anne and the band", ["anne band"]), ("the the the", ["the"]),
    ("", [""]), ("the", ["a"]), ("", ["something"]), ("x", [""]),  # empty after normalising
    ("a a b", ["a b b"]), ("b b b", ["b"]),  # token multiplicity
    ("New\tYork\n", ["new york"]), ("1990–1995", ["1990 1995"]),  # white space; en dash kept
    ("Café", ["cafe", "CAFÉ"]), ("two", ["2"]),  # no number-word or accent folding
]


@pytest.mark.parametrize("prediction,gold", EDGE_CASES)
def test_question_scores_match_official_rules(prediction, gold):
    assert ev.exact_match(prediction, gold) == float(max(ref_exact(prediction, g) for g in gold))
    assert ev.squad_f1(prediction, gold) == pytest.approx(max(ref_f1(prediction, g) for g in gold),
                                                          abs=1e-15)
    for g in gold:
        assert ev.normalize_answer(g) == ref_normalize(g)


def test_corpus_scores_match_official_rules():
    rng = random.Random(0)
    words = ["the", "The", "a", "an", "Eiffel", "tower", "Tower,", "Paris.", "1,000", "U.S.",
             "don't", "(1990)", "new", "York", "and", "Anne", "’s", "x", "-", ""]
    phrase = lambda: " ".join(rng.choice(words) for _ in range(rng.randint(0, 4)))  # noqa: E731
    dataset = [(f"q{i}", [phrase() for _ in range(rng.randint(1, 3))]) for i in range(400)]
    predictions = {qid: (rng.choice(gold) if rng.random() < 0.3 else phrase())
                   for qid, gold in dataset if rng.random() < 0.9}
    predictions["not-in-dataset"] = "ignored"
    expected = ref_evaluate(dataset, predictions)
    assert all(5 < v < 95 for v in expected.values())  # the data are not degenerate
    out = ev.squad_metrics(predictions, dict(dataset))
    assert out["exact_match"] == pytest.approx(expected["exact_match"], abs=1e-9)
    assert out["f1"] == pytest.approx(expected["f1"], abs=1e-9)


def test_squad_official_rules():
    assert ev.normalize_answer("The  Quick, brown fox!") == "quick brown fox"
    assert ev.exact_match("the Eiffel Tower", ["Eiffel Tower", "tower"]) == 1.0
    # F1 tokens: pred {eiffel, tower, paris} vs gold {eiffel, tower}: P 2/3, R 1.
    assert ev.squad_f1("Eiffel Tower, Paris", ["Eiffel Tower"]) == pytest.approx(0.8)
    assert ev.squad_f1("Paris", ["Eiffel Tower", "in Paris"]) == pytest.approx(2 / 3)
    out = ev.squad_metrics({"q1": "Eiffel Tower", "q2": "nope"},
                           {"q1": ["the Eiffel Tower"], "q2": ["yes"], "q3": ["x"]})
    assert out == {"exact_match": pytest.approx(100 / 3), "f1": pytest.approx(100 / 3)}
    # Both sides empty after normalising: an exact match with F1 0, as in the v1.1 script.
    assert ev.exact_match("The", ["a"]) == 1.0 and ev.squad_f1("The", ["a"]) == 0.0


def test_bad_gold_answers_are_named():
    with pytest.raises(ValueError, match="at least one gold answer"):
        ev.squad_f1("x", [])
    with pytest.raises(TypeError, match="list of answers"):
        ev.exact_match("x", "x")
    with pytest.raises(ValueError, match="no gold answers"):
        ev.squad_metrics({"q": "x"}, {"q": []})
