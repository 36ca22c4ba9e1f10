"""The extractive_qa task (loss against the Hugging Face formula, synthetic layout) and the
squad evaluator's glue: windows -> model -> n-best decoding -> EM/F1, checked against the
model applied one window at a time, a brute-force span search and jaxmm.evaluate.squad."""

import dataclasses
import itertools

import jax
import numpy as np
import pytest

from jaxmm.data import tokenizers
from jaxmm.data.qa import SpanLabeler
from jaxmm.evaluate.evaluators import make_evaluators
from jaxmm.evaluate.squad import squad_metrics, squad_v2_metrics
from jaxmm.train import build_run
from jaxmm.train.synthetic import make_batch
from tests.train.helpers import tiny_config

SENTENCES = ["the red fox runs over the green hill near the river",
             "a small boat sails on the quiet lake at night",
             "the old man reads a book about the stars and the moon",
             "two birds sing in the tall tree behind the house"]
BERT = {"model.name": "bert_qa", "model.config": {
    "num_layers": 1, "d_model": 32, "num_heads": 2, "mlp_dim": 64, "dropout_rate": 0.0,
    "attention_dropout_rate": 0.0, "max_position_embeddings": 32}}


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    root = tmp_path_factory.mktemp("tok")
    (root / "corpus.txt").write_text("\n".join(SENTENCES * 5) + "\nwhat where who\n")
    return tokenizers.train_tokenizer("wordpiece", str(root / "corpus.txt"), 120,
                                      min_frequency=1)


def _log_softmax(x):
    x = np.asarray(x, np.float64)
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def test_span_loss_is_the_mean_of_start_and_end_cross_entropy():
    built = build_run(tiny_config("extractive_qa", {**BERT, "data.seq_len": 12}))
    batch = make_batch("qa", 0, 4, seq_len=12, vocab_size=built.task.synthetic_dims()[
        "vocab_size"])
    batch["start_positions"][1] = -100  # ignored row (an example skipped as bad input)
    batch["end_positions"][1] = -100
    variables = built.init_state().variables
    out = built.task.loss(variables, batch, train=False, rng=jax.random.PRNGKey(0))
    logits = built.task.model.apply(variables, batch["input_ids"], batch["attention_mask"],
                                    batch["token_type_ids"])
    rows = [0, 2, 3]
    ls, le = _log_softmax(logits.start_logits), _log_softmax(logits.end_logits)
    expected = sum(-(ls[i, batch["start_positions"][i]] + le[i, batch["end_positions"][i]]) / 2
                   for i in rows)
    assert float(out.weight) == 3
    np.testing.assert_allclose(float(out.loss), expected, rtol=1e-5)


def test_synthetic_qa_layout_spans_run_from_the_marker_for_1_plus_q_mod_3_tokens():
    b = make_batch("qa", 3, 16, seq_len=20, vocab_size=50)
    for i in range(16):
        q, ids = b["input_ids"][i, 1], list(b["input_ids"][i])
        s, e = b["start_positions"][i], b["end_positions"][i]
        assert ids[3:].count(3) == 1 and ids[s] == 3  # the MASK marker starts the span
        assert e - s == (q - 4) % 3
        assert ids[3:].count(1) == (1 if e > s else 0) and (e == s or ids[e] == 1)


def _examples(rng, n):
    out = []
    for i in range(n):
        parts = [SENTENCES[j] for j in rng.permutation(4)[:int(rng.integers(1, 4))]]
        out.append({"id": f"q{i}", "question": "what where who", "context": " . ".join(parts)})
    return out


def _batches(labeler, examples, golds, batch_size):
    rows = []
    for ex, gold in zip(examples, golds):
        win = labeler(ex["id"], ex["question"], ex["context"], [], [])
        gold = (gold + [""] * 3)[:3]
        rows.append({**{k: v for k, v in win.items() if k != "num_windows"},
                     "id": np.asarray(ex["id"], object),
                     "context": np.asarray(ex["context"], object),
                     "answers/text": np.asarray(gold, object)})
    return [{k: np.stack([r[k] for r in rows[i:i + batch_size]]) for k in rows[0]}
            for i in range(0, len(rows), batch_size)]


def _reference_answer(model, variables, win, context, n_best, max_len):
    """Model on each real window alone, then every valid span by enumeration."""
    best, answer = -np.inf, ""
    for w in range(win["input_ids"].shape[0]):
        if win["attention_mask"][w, 0] == 0:
            continue
        out = model.apply(variables, win["input_ids"][w:w + 1],
                          win["attention_mask"][w:w + 1], win["token_type_ids"][w:w + 1])
        s, e = np.asarray(out.start_logits[0]), np.asarray(out.end_logits[0])
        ctx = win["offsets"][w, :, 0] >= 0
        top_s = set(np.argsort(-np.where(ctx, s, -np.inf))[:n_best])
        top_e = set(np.argsort(-np.where(ctx, e, -np.inf))[:n_best])
        for i, j in itertools.product(top_s, top_e):
            if ctx[i] and ctx[j] and i <= j < i + max_len and s[i] + e[j] > best:
                best = s[i] + e[j]
                answer = context[win["offsets"][w, i, 0]:win["offsets"][w, j, 1]]
    return answer


@pytest.mark.parametrize("version", [1, 2])
def test_squad_evaluator_scores_decoded_spans_like_the_reference(tok, version):
    rng = np.random.default_rng(version)
    labeler = SpanLabeler(tok, max_length=24, stride=4, max_windows=5)
    examples = _examples(rng, 11)  # batches of 8: the last one is padded
    overrides = {**BERT, "model.config": {**BERT["model.config"],
                                          "vocab_size": tok.vocab_size},
                 "batch_size": 8, "eval.num_batches": -1}
    entry = {"type": "squad", "version": version, "n_best": 5, "max_answer_length": 6,
             "null_threshold": -1e9 if version == 2 else 0.0}
    built = build_run(tiny_config("extractive_qa", {**overrides, "eval.evaluators.ev": entry}))
    variables = jax.device_get(built.init_state().variables)
    variables = jax.tree.map(
        lambda x: (0.5 * rng.normal(size=x.shape)).astype(x.dtype), variables)
    model = built.task.model
    refs = [_reference_answer(model, variables, labeler(e["id"], e["question"], e["context"],
                                                        [], []), e["context"], 5, 6)
            for e in examples]
    assert len(set(refs)) > 3  # the random model answers differently per example
    # gold: the reference's answer for every other example, something absent otherwise;
    # v2: every third example has no answer
    golds = [[refs[i], "zzz"] if i % 2 == 0 else ["not in any context"]
             for i in range(len(examples))]
    if version == 2:
        golds = [[] if i % 3 == 0 else g for i, g in enumerate(golds)]
    batches = _batches(labeler, examples, golds, 8)
    context = dataclasses.replace(built.eval_context(),
                                  make_source=lambda *a: iter([dict(b) for b in batches]))
    result = make_evaluators(built.config, context)["ev"](variables)
    ids = [e["id"] for e in examples]
    if version == 1:
        expected = squad_metrics(dict(zip(ids, refs)), dict(zip(ids, golds)))
        assert 0 < expected["exact_match"] < 100
    else:  # threshold -1e9: the null answer always wins
        expected = squad_v2_metrics(dict.fromkeys(ids, ""), dict(zip(ids, golds)))
        assert expected["exact_match"] == pytest.approx(100 * 4 / 11)
    assert result["num_examples"] == len(examples)
    assert result["exact_match"] == pytest.approx(expected["exact_match"])
    assert result["f1"] == pytest.approx(expected["f1"])
