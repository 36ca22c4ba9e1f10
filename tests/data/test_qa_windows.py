"""Doc-stride windows of extractive QA examples (jaxmm.data.qa, the squad_windows op)."""

import logging

import numpy as np
import pytest
import tensorflow as tf

from jaxmm.data import preprocess, tokenizers
from jaxmm.data.qa import IGNORE_INDEX, SpanLabeler

# Every word is one token of the tokenizer below, so windows can be computed by hand.
WORDS = ("alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron "
         "pi rho sigma tau upsilon phi chi psi omega where is").split()
QUESTION = "where is omega"
CONTEXT = ("alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron "
           "pi rho sigma tau upsilon")


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    root = tmp_path_factory.mktemp("qa_tok")
    (root / "vocab.txt").write_text(
        "\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]) + "\n")
    return tokenizers.load(str(root))


def test_windows_labels_and_offsets_by_hand(tok):
    # [CLS] where is omega [SEP] <6 context tokens> [SEP] = 12 tokens; 20 context words,
    # stride 2 -> windows start at context words 0, 4, 8, 12, 16.
    labeler = SpanLabeler(tok, max_length=12, stride=2, max_windows=6)
    words = CONTEXT.split()
    answer = "iota kappa lambda"  # words 8..10
    start = CONTEXT.index(answer)
    out = labeler("q1", QUESTION, CONTEXT, [answer], [start])
    assert out["num_windows"] == 5
    firsts = [0, 4, 8, 12, 16]
    for w, first in enumerate(firsts):
        n = min(6, len(words) - first)
        ids = out["input_ids"][w]
        expected = (["[CLS]", "where", "is", "omega", "[SEP]"] + words[first:first + n]
                    + ["[SEP]"])
        assert [tok.id_to_token(int(i)) for i in ids[:len(expected)]] == expected
        assert out["attention_mask"][w].sum() == len(expected)
        assert (out["token_type_ids"][w, 5:len(expected)] == 1).all()
        offsets = out["offsets"][w]
        assert (offsets[:5] == -1).all() and (offsets[5 + n:] == -1).all()
        # every context token's offsets cut its own word out of the context
        assert [CONTEXT[a:b] for a, b in offsets[5:5 + n]] == words[first:first + n]
        # the answer (words 8..10) lies wholly inside the window only if it starts at 8
        inside = first <= 8 and 10 <= first + n - 1
        if inside:
            s, e = out["start_positions"][w], out["end_positions"][w]
            assert (s, e) == (5 + 8 - first, 5 + 10 - first)
            assert CONTEXT[offsets[s, 0]:offsets[e, 1]] == answer
        else:
            assert out["start_positions"][w] == out["end_positions"][w] == 0  # CLS
    # only the window starting at word 8 holds all of words 8..10
    assert [w for w in range(5) if out["start_positions"][w] > 0] == [2]
    # padding window
    assert out["attention_mask"][5].sum() == 0 and out["start_positions"][5] == IGNORE_INDEX
    assert (out["offsets"][5] == -1).all()


def test_no_answer_points_at_cls_and_extra_windows_are_dropped(tok, caplog):
    labeler = SpanLabeler(tok, max_length=12, stride=2, max_windows=2)
    with caplog.at_level(logging.WARNING, logger="jaxmm.data.qa"):
        out = labeler("q2", QUESTION, CONTEXT, [], [])
    assert out["num_windows"] == 2
    np.testing.assert_array_equal(out["start_positions"], [0, 0])
    assert "keeping the first 2" in caplog.text and "'q2'" in caplog.text


def test_answer_not_matching_its_context_is_a_counted_skip(tok, caplog):
    labeler = SpanLabeler(tok, max_length=12, stride=2, max_windows=6)
    with caplog.at_level(logging.WARNING, logger="jaxmm.data.qa"):
        bad = labeler("bad-1", QUESTION, CONTEXT, ["kappa"], [3])
        labeler("bad-2", QUESTION, CONTEXT, ["nowhere"], [0])
        good = labeler("good", QUESTION, CONTEXT, ["kappa"], [CONTEXT.index("kappa")])
    assert labeler.skipped == 2
    assert (bad["start_positions"] == IGNORE_INDEX).all()
    assert (bad["end_positions"] == IGNORE_INDEX).all()
    assert bad["attention_mask"][:5].sum() > 0  # windows kept: evaluation still scores it
    assert (good["start_positions"][:5] >= 0).all()
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2
    assert "'bad-1'" in lines[0] and "1 example(s) skipped" in lines[0]
    assert "'bad-2'" in lines[1] and "2 example(s) skipped" in lines[1]


def test_question_too_long_for_the_window_is_a_counted_skip(tok, caplog):
    labeler = SpanLabeler(tok, max_length=8, stride=2, max_windows=2)
    with caplog.at_level(logging.WARNING, logger="jaxmm.data.qa"):
        out = labeler("long-q", " ".join(WORDS), CONTEXT, [], [])
    assert labeler.skipped == 1 and out["num_windows"] == 0
    assert out["attention_mask"].sum() == 0 and (out["start_positions"] == IGNORE_INDEX).all()
    assert "'long-q'" in caplog.text and "raise max_length or lower stride" in caplog.text


def test_squad_windows_op_and_choose_window(tok):
    ops = preprocess.build("squad_windows(12, stride=2, max_windows=6)", tokenizer=tok)
    answer = "iota kappa lambda"
    example = {"id": tf.constant("q1"), "question": tf.constant(QUESTION),
               "context": tf.constant(CONTEXT), "answers/text": tf.constant([answer]),
               "answers/answer_start": tf.constant([CONTEXT.index(answer)], tf.int32)}
    out = ops(example, tf.constant([1, 2], tf.int64))
    assert out["input_ids"].shape == (6, 12) and out["offsets"].shape == (6, 12, 2)
    np.testing.assert_array_equal(out["start_positions"].numpy()[:5], [0, 0, 5, 0, 0])
    chooser = preprocess.build("choose_window")
    picked = set()
    for seed in range(40):
        row = chooser(out, tf.constant([seed, 0], tf.int64))
        assert row["input_ids"].shape == (12,) and row["start_positions"].shape == ()
        picked.add(int(row["input_ids"].numpy()[5]))  # first context token of the window
    assert picked == {tok.token_to_id(w) for w in ("alpha", "epsilon", "iota", "nu", "rho")}


def test_training_rows_are_every_window_of_every_example_and_resume_exactly(tmp_path):
    """The squad preset's training stream (``explode``) yields each example's windows in
    order: exactly the windows that the evaluation layout groups per example."""
    from jaxmm.data import corpora, make_iterator
    from jaxmm.data.catalog import data_config

    rows = corpora.wordnet_squad(corpora.wordnet_nouns(limit=300), 12, seed=0, distractors=3)
    data_dir = str(tmp_path / "data")
    corpora.store_rows(data_dir, "squad", {"train": rows})
    (tmp_path / "c.txt").write_text("\n".join(r["context"] + " " + r["question"] for r in rows))
    wp = tokenizers.train_tokenizer("wordpiece", str(tmp_path / "c.txt"), 400, min_frequency=1)
    cfg = data_config("squad", data_dir=data_dir, max_length=32, stride=8)
    kw = dict(split="train", seed=5, process_index=0, process_count=1, tokenizer=wp)
    grouped = dict(cfg)
    grouped["pp_train"] = cfg.pp_eval
    del grouped["explode"]
    with make_iterator(grouped, batch_size=1, shuffle=False, repeat=False, **kw) as it:
        want = []
        for b in it:
            n = int((b["attention_mask"][0, :, 0] > 0).sum())
            want += [(b["input_ids"][0, w], b["start_positions"][0, w]) for w in range(n)]
    assert len(want) > 24  # several windows per example
    with make_iterator(cfg, batch_size=4, shuffle=False, **kw) as it:
        got = [next(it) for _ in range(len(want) // 4)]
        state = it.get_state()
        after = next(it)
    flat = [(b["input_ids"][i], b["start_positions"][i]) for b in got for i in range(4)]
    for (ids, start), (want_ids, want_start) in zip(flat, want):
        np.testing.assert_array_equal(ids, want_ids)
        assert start == want_start
    with make_iterator(cfg, batch_size=4, shuffle=False, **kw) as it:
        it.set_state(state)
        resumed = next(it)
    for key in after:
        np.testing.assert_array_equal(after[key], resumed[key])
