"""Caption metrics against hand-computed values and pycocoevalcap's own ``COCOEvalCap``."""

import math

import pytest

from jaxmm import evaluate as ev


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


def test_repeated_ngram_rate_hand_computed():
    # "on on on on": 2-grams (on on) x3, two of them repeats; "a b a b": (a b), (b a), (a b).
    assert ev.repeated_ngram_rate(["on on on on"], 2) == pytest.approx(100 * 2 / 3)
    assert ev.repeated_ngram_rate(["a b a b", "x y"], 2) == pytest.approx(100 * 1 / 4)
    assert ev.repeated_ngram_rate(["a b a b"], 3) == 0.0
    assert ev.repeated_ngram_rate(["A a", "b"], 1) == pytest.approx(100 * 1 / 3)  # lower-cased
    assert ev.repeated_ngram_rate(["one"], 2) == 0.0  # no 2-grams at all
    with pytest.raises(ValueError, match="n must be >= 1"):
        ev.repeated_ngram_rate(["a"], 0)


@pytest.mark.slow
def test_caption_metrics_ptb_tokenizer_and_meteor():
    """The standard protocol (Java PTB tokenizer + METEOR): case and punctuation go."""
    preds = {1: "A red circle.", 2: "a BLUE square"}
    refs = {1: ["a red square"], 2: ["A blue square!", "one blue square"]}
    out = ev.caption_metrics(preds, refs)
    assert out["BLEU-1"] == pytest.approx(5 / 6, abs=1e-6)
    assert 0.3 < out["METEOR"] < 1.0
    assert set(out) == {"BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "METEOR", "ROUGE-L", "CIDEr"}


class _NoSpice:
    """Stands in for pycocoevalcap's SPICE, which downloads CoreNLP models at run time."""

    def compute_score(self, gts, res):
        return 0.0, [0.0] * len(gts)

    def method(self):
        return "SPICE"


@pytest.mark.slow
def test_equals_coco_eval_cap(monkeypatch):
    """The official driver on COCO-format data: same scores, edge cases included
    (capitals, punctuation, an apostrophe, a hyphen, numbers, uneven reference counts,
    string and integer image ids)."""
    pytest.importorskip("pycocotools")
    from pycocoevalcap import eval as coco_eval
    from pycocotools.coco import COCO

    refs = {
        "img-a": ["A man riding a wave on top of a surfboard.", "A surfer rides the big wave!",
                  "Man on a surf-board in the ocean, riding a wave."],
        "img-b": ["Two dogs play with a frisbee in the park.", "2 dogs and a frisbee"],
        "img-c": ["A kitchen with a stove, sink and fridge.", "The kitchen's counter is white.",
                  "An empty kitchen", "A clean, white kitchen."],
        7: ["A red bus driving down the street.", "A double-decker bus on a city street."],
    }
    preds = {"img-a": "A man riding a wave on a surfboard.", "img-b": "two dogs playing frisbee",
             "img-c": "A white kitchen with a stove and a sink.", 7: "a red bus on the street"}
    out = ev.caption_metrics(preds, refs)

    ids = {key: i + 100 for i, key in enumerate(refs)}
    gts = COCO()
    gts.dataset = {"images": [{"id": ids[k]} for k in refs],
                   "annotations": [{"image_id": ids[k], "id": 1000 * ids[k] + j, "caption": c}
                                   for k, captions in refs.items()
                                   for j, c in enumerate(captions)]}
    gts.createIndex()
    results = gts.loadRes([{"image_id": ids[k], "caption": c} for k, c in preds.items()])
    monkeypatch.setattr(coco_eval, "Spice", _NoSpice)
    official = coco_eval.COCOEvalCap(gts, results)
    official.evaluate()
    names = {"BLEU-1": "Bleu_1", "BLEU-2": "Bleu_2", "BLEU-3": "Bleu_3", "BLEU-4": "Bleu_4",
             "METEOR": "METEOR", "ROUGE-L": "ROUGE_L", "CIDEr": "CIDEr"}
    assert set(out) == set(names)
    for ours, theirs in names.items():
        assert out[ours] == pytest.approx(official.eval[theirs], rel=1e-9, abs=1e-12), ours
    assert 0 < out["BLEU-4"] < out["BLEU-1"] < 1 and out["CIDEr"] > 0
