"""BERT pre-training pairs (jaxmm.data.nsp) and their place in the input pipeline
(``data.nsp``): every row is [CLS] A [SEP] B [SEP] with B the true continuation of A
in A's own document or a piece of another document, about half of each; the stream
is deterministic and resumes exactly inside a window."""

import json

import numpy as np
import pytest

from jaxmm.config import ConfigError
from jaxmm.data import make_iterator
from jaxmm.data.catalog import data_config
from jaxmm.data.local import build_local
from jaxmm.data.nsp import sentence_pairs, split_sentences

CLS, SEP, PAD = 1, 2, 0


class NumberTokenizer:
    """Words ``t<id>`` -> id; [CLS]=1, [SEP]=2, pad 0 (the Tokenizer interface)."""

    cls_token_id, sep_token_id, pad_token_id = CLS, SEP, PAD

    def encode(self, texts, pairs=None, max_length=None, padding=True, truncation=True,
               add_special_tokens=True):
        assert not add_special_tokens and not padding
        ids = [[int(w[1:]) for w in t.replace(".", " ").split()] for t in texts]
        return {"input_ids": ids, "attention_mask": [[1] * len(r) for r in ids]}


def _documents(n_docs, rng, min_sentences=1, max_sentences=6):
    """Documents whose every token says (document, sentence, position): 10000 d + 100 s + p."""
    docs = []
    for d in range(n_docs):
        sentences = []
        for s in range(int(rng.integers(min_sentences, max_sentences + 1))):
            words = [f"t{10000 * (d + 1) + 100 * s + p}" for p in range(int(rng.integers(2, 9)))]
            sentences.append(" ".join(words) + ".")
        docs.append(" ".join(sentences))
    return docs


def _where(token):
    return token // 10000 - 1, (token % 10000) // 100, token % 100


def _check_rows(rows, length):
    """Every row's layout, and each pair's A/B relation; returns the labels."""
    for ids, mask, types, label in zip(rows["input_ids"], rows["attention_mask"],
                                       rows["token_type_ids"], rows["next_sentence_label"]):
        n = int(mask.sum())
        assert mask[:n].all() and not mask[n:].any() and (ids[n:] == PAD).all()
        seps = np.flatnonzero(ids[:n] == SEP)
        assert ids[0] == CLS and len(seps) == 2 and seps[1] == n - 1
        a, b = ids[1:seps[0]], ids[seps[0] + 1:n - 1]
        assert len(a) and len(b) and n <= length
        assert (types[:seps[0] + 1] == 0).all() and (types[seps[0] + 1:n] == 1).all()
        wa, wb = [_where(t) for t in a], [_where(t) for t in b]
        assert len({d for d, _, _ in wa}) == 1 and len({d for d, _, _ in wb}) == 1  # one doc each
        doc_a, doc_b = wa[0][0], wb[0][0]
        if label == 0:  # the continuation: B starts where A stopped, at a sentence start
            assert doc_a == doc_b
            assert wb[0][2] == 0 and wb[0][1] == wa[-1][1] + 1
        else:
            assert doc_a != doc_b
        for seq in (wa, wb):  # each segment is contiguous text (no sentence skipped)
            for (_, s0, p0), (_, s1, p1) in zip(seq, seq[1:]):
                assert (s1, p1) == (s0, p0 + 1) or (s1 == s0 + 1 and p1 == 0)
    return rows["next_sentence_label"]


@pytest.mark.parametrize("length", [64, 12])  # 12 trims long pairs
def test_pairs_are_true_continuations_or_other_documents(length):
    rng = np.random.default_rng(0)
    docs = _documents(40, rng)
    rows = sentence_pairs(docs, NumberTokenizer(), length, np.random.default_rng(1))
    labels = _check_rows(rows, length)
    assert len(labels) > 40
    if length == 64:  # (at 12, many chunks hold one sentence, whose B is always random)
        assert 0.35 < labels.mean() < 0.7, labels.mean()


def test_random_next_sentence_rate_follows_the_option():
    docs = _documents(60, np.random.default_rng(2), min_sentences=4, max_sentences=8)
    rates = [sentence_pairs(docs, NumberTokenizer(), 40, np.random.default_rng(3),
                            nsp_probability=p)["next_sentence_label"].mean() for p in (0.0, 0.5)]
    assert rates[0] < 0.1  # only chunks of one sentence (nothing to continue) are random
    assert 0.4 < rates[1] < 0.62, rates


def test_every_sentence_is_used_once_with_true_continuations():
    """With nsp_probability 0 (continuations only) and room for any pair, the rows'
    segments cover each multi-sentence document's text exactly once, in order."""
    docs = _documents(20, np.random.default_rng(4), min_sentences=2)
    rows = sentence_pairs(docs, NumberTokenizer(), 400, np.random.default_rng(5),
                          nsp_probability=0.0, short_seq_prob=0.0)
    seen = [t for ids in rows["input_ids"] for t in ids if t > SEP]
    want = [int(w[1:]) for d in docs for w in d.replace(".", " ").split()]
    assert seen == want


def test_split_sentences():
    assert split_sentences("One two. Three?  Four!\nFive\n\n six") == [
        "One two.", "Three?", "Four!", "Five", "six"]
    assert split_sentences("  ") == []


def test_single_sentence_documents_pair_only_with_others():
    rows = sentence_pairs(["t10001 t10002.", "t20001 t20002."], NumberTokenizer(), 16,
                          np.random.default_rng(0))
    assert rows["next_sentence_label"].tolist() == [1, 1]
    alone = sentence_pairs(["t10001 t10002."], NumberTokenizer(), 16, np.random.default_rng(0))
    assert alone["input_ids"].shape == (0, 16)


def _text_dataset(tmp_path, n_docs=60):
    docs = _documents(n_docs, np.random.default_rng(7), min_sentences=2)
    with open(tmp_path / "train.jsonl", "w") as f:
        for d in docs:
            f.write(json.dumps({"text": d}) + "\n")
    build_local("text", str(tmp_path), {"train": {"input": "train.jsonl"}},
                str(tmp_path / "data"), name="docs")
    cfg = data_config("text/docs", task="pretraining", data_dir=str(tmp_path / "data"),
                      max_length=24)
    cfg.nsp.window = 8
    return cfg


def test_pipeline_rows_are_deterministic_and_resume_inside_a_window(tmp_path):
    cfg = _text_dataset(tmp_path)
    kw = dict(split="train", batch_size=4, seed=3, process_index=0, process_count=1,
              tokenizer=NumberTokenizer())
    with make_iterator(cfg, **kw) as it:
        reference = [next(it) for _ in range(12)]
    for batch in reference:
        _check_rows(batch, 24)
    labels = np.concatenate([b["next_sentence_label"] for b in reference])
    assert 0.25 < labels.mean() < 0.75
    with make_iterator(cfg, **kw) as it:
        for _ in range(5):
            next(it)
        state = it.get_state()
    assert state["skip"] > 0  # inside a window
    with make_iterator(cfg, **kw) as it:
        it.set_state(json.loads(json.dumps(state)))
        resumed = [next(it) for _ in range(7)]
    for a, b in zip(reference[5:], resumed):
        assert sorted(a) == sorted(b)
        for k in a:
            np.testing.assert_array_equal(a[k], b[k])


def test_pipeline_eval_stream_makes_rows_once(tmp_path):
    cfg = _text_dataset(tmp_path, n_docs=30)
    kw = dict(split="train", batch_size=2, seed=0, shuffle=False, repeat=False,
              process_index=0, process_count=1, tokenizer=NumberTokenizer())
    with make_iterator(cfg, **kw) as it:
        first = list(it)
    with make_iterator(cfg, **kw) as it:
        second = list(it)
    assert len(first) == len(second) > 5
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a["input_ids"], b["input_ids"])
        assert (a["example_mask"] == 1).all()


def test_nsp_config_errors(tmp_path):
    cfg = _text_dataset(tmp_path, n_docs=10)
    kw = dict(split="train", batch_size=2, process_index=0, process_count=1)
    with pytest.raises(ConfigError, match="tokenizer"):
        make_iterator(cfg, **kw)

    class NoCls(NumberTokenizer):
        cls_token_id = None

    with pytest.raises(ConfigError, match=r"\[CLS\] and \[SEP\]"):
        make_iterator(cfg, tokenizer=NoCls(), **kw)
    bad = cfg.to_dict() | {"nsp": {"length": 24, "windw": 4}}
    with pytest.raises(ConfigError, match="Unknown nsp option"):
        make_iterator(bad, tokenizer=NumberTokenizer(), **kw)
    both = cfg.to_dict() | {"pack": {"length": 24}}
    with pytest.raises(ConfigError, match="more than one of 'pack', 'nsp' and 'explode'"):
        make_iterator(both, tokenizer=NumberTokenizer(), **kw)
    plain = {k: v for k, v in cfg.to_dict().items() if k != "nsp"}
    with pytest.raises(ConfigError, match="explode needs 'count'"):
        make_iterator(plain | {"explode": {"count": "n"}}, tokenizer=NumberTokenizer(), **kw)
    with pytest.raises(ConfigError, match="language_modeling, masked_lm and pretraining"):
        data_config("text/docs", task="vqa")
