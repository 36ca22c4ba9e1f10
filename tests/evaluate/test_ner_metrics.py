"""NER metrics and the ``ner`` evaluator against seqeval directly, a NumPy decoding of
predictions through word ids, and hand-counted entities."""

import dataclasses

import jax
import numpy as np
import pytest
from seqeval.metrics import classification_report, f1_score, precision_score, recall_score

from jaxmm.data.ops_text import align_word_labels
from jaxmm.evaluate.evaluators import make_evaluators
from jaxmm.evaluate.ner import ner_metrics, word_tags
from jaxmm.train import build_run
from jaxmm.train.synthetic import make_batch
from tests.train.helpers import tiny_config

TAGS = ("O", "B-PER", "I-PER", "B-LOC", "I-LOC")
GOLD = [["B-PER", "I-PER", "O", "B-LOC"], ["O", "O"], ["B-LOC", "I-LOC", "I-LOC", "O", "B-PER"]]
PRED = [["B-PER", "I-PER", "O", "O"], ["B-LOC", "O"], ["B-LOC", "I-LOC", "O", "O", "B-PER"]]


def test_ner_metrics_match_seqeval_and_hand_counts():
    got = ner_metrics(GOLD, PRED)
    # Gold entities: PER(0:2) LOC(3) | LOC(0:3) PER(4) -> 4. Predicted: PER(0:2) | LOC(0) |
    # LOC(0:2) PER(4) -> 4; correct: PER(0:2), PER(4) -> 2 (LOC(0:2) has the wrong end).
    assert got["precision"] == pytest.approx(2 / 4) and got["recall"] == pytest.approx(2 / 4)
    assert got["f1"] == pytest.approx(0.5)
    assert got["accuracy"] == pytest.approx(8 / 11)
    assert got["precision"] == pytest.approx(precision_score(GOLD, PRED))
    assert got["recall"] == pytest.approx(recall_score(GOLD, PRED))
    assert got["f1"] == pytest.approx(f1_score(GOLD, PRED))
    assert "PER" in classification_report(GOLD, PRED)
    # seqeval's lenient default counts an I- that starts an entity; strict IOB2 does not.
    lenient = ner_metrics([["O", "I-PER"]], [["O", "I-PER"]])
    strict = ner_metrics([["O", "I-PER"]], [["O", "I-PER"]], strict=True)
    assert lenient["f1"] == 1.0 and strict["f1"] == 0.0


def _decode_through_word_ids(pred_tokens, word_ids, names):
    """NumPy reference: the first token index of each word (np.unique) -> its prediction."""
    out = []
    for preds, wids in zip(pred_tokens, word_ids):
        words, first = np.unique(wids[wids >= 0], return_index=True)
        positions = np.flatnonzero(wids >= 0)[first]
        out.append([names[p] for p in preds[positions[np.argsort(words)]]])
    return out


def test_word_tags_decode_first_sub_words_like_a_word_id_reference():
    rng = np.random.default_rng(0)
    preds, labels, word_ids = [], [], []
    for gold in GOLD:  # each word split into 1-3 sub-words, [CLS] ... [SEP] + padding
        wids = np.concatenate([[-1], np.repeat(np.arange(len(gold)), rng.integers(1, 4, len(gold))),
                               [-1]])
        wids = np.pad(wids, (0, 16 - len(wids)), constant_values=-1)
        word_ids.append(wids)
        labels.append(align_word_labels(wids, np.asarray([TAGS.index(t) for t in gold])))
        preds.append(rng.integers(0, len(TAGS), 16))  # junk at ignored positions too
    preds, labels, word_ids = np.stack(preds), np.stack(labels), np.stack(word_ids)
    gold, pred = word_tags(preds, labels, TAGS)
    assert gold == GOLD
    assert pred == _decode_through_word_ids(preds, word_ids, TAGS)


def test_ner_evaluator_matches_the_model_and_seqeval():
    """The evaluator on 8 devices with a short last batch vs the model applied unsharded."""
    overrides = {"model.name": "bert_token_classifier", "model.size": "tiny",
                 "model.config": {"num_labels": 5, "vocab_size": 64, "num_layers": 1},
                 "eval.num_batches": -1}
    batches = [make_batch("tagging", i, n, split="validation", num_classes=5)
               for i, n in enumerate((16, 5))]
    built = build_run(tiny_config("token_classification", {
        **overrides, "eval.evaluators.ner": {"type": "ner", "label_names": TAGS}}))
    context = dataclasses.replace(built.eval_context(),
                                  make_source=lambda *args: iter([dict(b) for b in batches]))
    evaluator = make_evaluators(built.config, context, only=("ner",))["ner"]
    variables = jax.device_get(built.init_state().variables)
    rng = np.random.default_rng(1)
    variables = jax.tree.map(lambda x: (0.5 * rng.normal(size=x.shape)).astype(x.dtype),
                             variables)  # random weights: varied tags
    got = evaluator(variables)
    preds = [np.asarray(built.task.model.apply(variables, b["input_ids"], b["attention_mask"])
                        .logits).argmax(-1) for b in batches]
    gold, pred = [], []
    for p, b in zip(preds, batches):
        for row_p, row_l in zip(p, b["labels"]):
            keep = row_l != -100
            gold.append([TAGS[i] for i in row_l[keep]])
            pred.append([TAGS[i] for i in row_p[keep]])
    assert got["num_sentences"] == 21
    assert sum(t != "O" for s in pred for t in s) > 10  # entities predicted, so F1 means something
    assert got["f1"] == pytest.approx(f1_score(gold, pred))
    assert got["precision"] == pytest.approx(precision_score(gold, pred))
    assert got["recall"] == pytest.approx(recall_score(gold, pred))
