"""Metrics against hand-computed values and the official formulas."""

import math

import numpy as np
import pytest

from jaxmm import evaluate as ev


def test_retrieval_recall_hand_computed():
    # 3 images (ids 10, 20, 30), 6 captions (2 per image).
    text_ids = [10, 10, 20, 20, 30, 30]
    sim = np.array([
        # captions: 10a 10b 20a 20b 30a 30b
        [0.9, 0.1, 0.2, 0.0, 0.3, 0.1],  # image 10: best text is its own -> i2t rank 0
        [0.1, 0.2, 0.3, 0.1, 0.8, 0.0],  # image 20: 30a (0.8) beats 20a (0.3) -> rank 1
        [0.5, 0.4, 0.0, 0.1, 0.2, 0.3],  # image 30: best own 0.3 < 0.5, 0.4 -> rank 2
    ])
    out = ev.retrieval_recall(sim, [10, 20, 30], text_ids, ks=(1, 2, 3))
    assert out["i2t_R@1"] == pytest.approx(100 / 3)
    assert out["i2t_R@2"] == pytest.approx(200 / 3)
    assert out["i2t_R@3"] == pytest.approx(100.0)
    # text -> image ranks (column-wise): 10a:0, 10b:2, 20a:0, 20b:0 (tie with image 30
    # counts for the correct image), 30a:2, 30b:0
    assert out["t2i_R@1"] == pytest.approx(100 * 4 / 6)
    assert out["t2i_R@2"] == pytest.approx(100 * 4 / 6)
    assert out["t2i_R@3"] == pytest.approx(100.0)
    assert out["mean_recall"] == pytest.approx(
        np.mean([100 / 3, 200 / 3, 100, 400 / 6, 400 / 6, 100]))
    with pytest.raises(ValueError, match="not in image_ids"):
        ev.retrieval_recall(sim, [10, 20, 40], text_ids)
    with pytest.raises(ValueError, match="num_images, num_texts"):
        ev.retrieval_recall(sim.T, [10, 20, 30], text_ids)


def test_retrieval_matches_brute_force_ranking(rng):
    sim = rng.normal(size=(7, 21))
    text_ids = np.repeat(np.arange(7), 3)
    out = ev.retrieval_recall(sim, np.arange(7), text_ids, ks=(1, 5))
    i2t = [min(list(np.argsort(-row)).index(t) for t in np.where(text_ids == i)[0])
           for i, row in enumerate(sim)]
    t2i = [list(np.argsort(-sim[:, t])).index(text_ids[t]) for t in range(21)]
    for k in (1, 5):
        assert out[f"i2t_R@{k}"] == pytest.approx(100 * np.mean(np.array(i2t) < k))
        assert out[f"t2i_R@{k}"] == pytest.approx(100 * np.mean(np.array(t2i) < k))


def test_caption_metrics_hand_computed():
    preds = {1: "a red circle", 2: "a blue square"}
    refs = {1: ["a red square"], 2: ["a blue square", "one blue square"]}
    out = ev.caption_metrics(preds, refs, metrics=("bleu", "rouge", "cider"), tokenize=False)
    # Corpus BLEU-1: clipped matches (2 + 3) / 6 predicted words, no brevity penalty.
    assert out["BLEU-1"] == pytest.approx(5 / 6, abs=1e-6)
    # BLEU-2: bigrams (1 + 2) / 4, geometric mean with BLEU-1.
    assert out["BLEU-2"] == pytest.approx(math.sqrt(5 / 6 * 3 / 4), abs=1e-6)
    # ROUGE-L (beta 1.2): image 1 LCS 2/3 -> F = 2/3; image 2 exact -> 1.
    assert out["ROUGE-L"] == pytest.approx((2 / 3 + 1) / 2, abs=1e-6)
    # CIDEr-D: image 2 matches a reference exactly, image 1 shares only common n-grams.
    perfect = ev.caption_metrics({1: "a red square", 2: "a blue square"}, refs,
                                 metrics=("cider",), tokenize=False)
    assert perfect["CIDEr"] > out["CIDEr"] > 0
    with pytest.raises(ValueError, match="same ids"):
        ev.caption_metrics({1: "x"}, refs)
    with pytest.raises(ValueError, match="SPICE is unavailable offline"):
        ev.caption_metrics(preds, refs, metrics=("spice",))


def test_caption_metrics_ptb_tokenizer_and_meteor():
    """The standard protocol (Java PTB tokenizer + METEOR): case and punctuation go."""
    preds = {1: "A red circle.", 2: "a BLUE square"}
    refs = {1: ["a red square"], 2: ["A blue square!", "one blue square"]}
    out = ev.caption_metrics(preds, refs)
    assert out["BLEU-1"] == pytest.approx(5 / 6, abs=1e-6)
    assert 0.3 < out["METEOR"] < 1.0
    assert set(out) == {"BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "METEOR", "ROUGE-L", "CIDEr"}


@pytest.mark.parametrize("raw,norm", [
    ("Two.", "2"), ("the dog", "dog"), ("dont", "don't"), ("yes!", "yes"),
    ("1,000", "1000"), ("2.5", "2.5"), ("black-and-white", "black and white"),
    ("An Apple", "apple"), ("none", "0"), ("red, white", "red white"),
])
def test_vqa_normalisation(raw, norm):
    assert ev.normalize_vqa_answer(raw) == norm


def test_vqa_accuracy_official_averaging():
    ten = lambda *xs: [a for a, n in xs for _ in range(n)]  # noqa: E731
    # 3 of 10 humans said "2": leave-one-out subsets give 2/3 (3 times) or 1 (7 times).
    assert ev.vqa_score("two", ten(("2", 3), ("3", 7))) == pytest.approx(0.9)
    assert ev.vqa_score("2", ten(("2", 3), ("3", 7)), average_subsets=False) == 1.0
    assert ev.vqa_score("2", ten(("2", 1), ("3", 9))) == pytest.approx(0.3)
    assert ev.vqa_score("4", ten(("2", 1), ("3", 9))) == 0.0
    assert ev.vqa_score("Yes", ["yes"] * 10) == 1.0
    out = ev.vqa_accuracy(["2", "red", "no"],
                          [ten(("2", 3), ("3", 7)), ["red"] * 10, ["yes"] * 10],
                          answer_types=["number", "other", "yes/no"])
    assert out["accuracy"] == pytest.approx(100 * 1.9 / 3)
    assert out["accuracy/number"] == pytest.approx(90.0) and out["accuracy/yes/no"] == 0.0


def test_classification_metrics_against_formulas(rng):
    y = rng.integers(0, 2, 200)
    p = np.where(rng.random(200) < 0.8, y, 1 - y)
    tp, tn = np.sum((p == 1) & (y == 1)), np.sum((p == 0) & (y == 0))
    fp, fn = np.sum((p == 1) & (y == 0)), np.sum((p == 0) & (y == 1))
    assert ev.accuracy(p, y) == pytest.approx((tp + tn) / 200)
    assert ev.f1(p, y) == pytest.approx(2 * tp / (2 * tp + fp + fn))
    mcc = (tp * tn - fp * fn) / math.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    assert ev.matthews(p, y) == pytest.approx(mcc)
    y3, p3 = rng.integers(0, 3, 100), rng.integers(0, 3, 100)
    per_class = []
    for c in range(3):
        tpc = np.sum((p3 == c) & (y3 == c))
        per_class.append(2 * tpc / (np.sum(p3 == c) + np.sum(y3 == c)))
    assert ev.f1(p3, y3, average="macro") == pytest.approx(np.mean(per_class))
    a, b = rng.normal(size=50), rng.normal(size=50)
    assert ev.pearson(a, b) == pytest.approx(np.corrcoef(a, b)[0, 1])
    ranks = lambda x: np.argsort(np.argsort(x))  # noqa: E731
    assert ev.spearman(a, b) == pytest.approx(np.corrcoef(ranks(a), ranks(b))[0, 1])
    assert set(ev.glue_metrics("mrpc", p, y)) == {"accuracy", "f1"}
    assert set(ev.glue_metrics("stsb", a, b)) == {"pearson", "spearman"}
    with pytest.raises(ValueError, match="same shape"):
        ev.accuracy([1, 2], [1])


def test_squad_official_rules():
    assert ev.normalize_answer("The  Quick, brown fox!") == "quick brown fox"
    assert ev.exact_match("the Eiffel Tower", ["Eiffel Tower", "tower"]) == 1.0
    # F1 tokens: pred {eiffel, tower, paris} vs gold {eiffel, tower}: P 2/3, R 1.
    assert ev.squad_f1("Eiffel Tower, Paris", ["Eiffel Tower"]) == pytest.approx(0.8)
    assert ev.squad_f1("Paris", ["Eiffel Tower", "in Paris"]) == pytest.approx(2 / 3)
    out = ev.squad_metrics({"q1": "Eiffel Tower", "q2": "nope"},
                           {"q1": ["the Eiffel Tower"], "q2": ["yes"], "q3": ["x"]})
    assert out == {"exact_match": pytest.approx(100 / 3), "f1": pytest.approx(100 / 3)}


def test_wer_and_perplexity():
    # "the cat sat down" -> "the bat sat": 1 substitution + 1 deletion over 4 words.
    assert ev.wer(["the cat sat down"], ["the bat sat"]) == pytest.approx(0.5)
    assert ev.wer(["a b", "c d e"], ["a b", "c x e f"]) == pytest.approx(2 / 5)
    assert ev.cer(["abcd"], ["abed"]) == pytest.approx(0.25)
    assert ev.perplexity(10 * math.log(7.0), 10) == pytest.approx(7.0)
    with pytest.raises(ValueError, match="positive"):
        ev.perplexity(1.0, 0)
