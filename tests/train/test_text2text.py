"""Text-to-text (``seq2seq`` task, ``text2text`` evaluator, T5 config): the synthetic
targets, the BLEU/ROUGE scoring against their formulas, and T5 learning to reverse
sequences through ``jaxmm train`` / ``jaxmm eval``, far above copying the source."""

import json
import math
import os
from collections import Counter

import numpy as np
import pytest

from jaxmm.evaluate.evaluators.text_generation import bleu_score, rouge_scores
from jaxmm.train.synthetic import BOS, EOS, PAD, make_batch
from tests.train.helpers import CACHE, ROOT, run_cli

VOCAB = 64


def test_synthetic_targets_are_the_reversed_source_then_eos():
    b = make_batch("text2text", 3, 5, seq_len=7, vocab_size=VOCAB)
    for i in range(5):
        n = int(b["attention_mask"][i].sum())
        src = b["input_ids"][i, :n]
        want = [*src[::-1], EOS] + [-100] * (7 - n)
        assert b["labels"][i].tolist() == want
        # decoder input: bos, then the labels shifted right; padding where the mask is 0
        assert b["decoder_input_ids"][i, 0] == BOS
        assert b["decoder_input_ids"][i, 1:n + 1].tolist() == want[:n]
        assert b["decoder_attention_mask"][i].tolist() == [1] * (n + 1) + [0] * (7 - n)
        assert (b["decoder_input_ids"][i, n + 1:] == PAD).all()


def _ngrams(words, n):
    return Counter(tuple(words[i:i + n]) for i in range(len(words) - n + 1))


def _bleu(hyps, refs):
    """Corpus BLEU-4 (one reference each, uniform weights, brevity penalty), from the
    formula of Papineni et al. 2002, on whitespace tokens."""
    matched, total = [0] * 4, [0] * 4
    hyp_len = ref_len = 0
    for h, r in zip(hyps, refs):
        h, r = h.split(), r.split()
        hyp_len, ref_len = hyp_len + len(h), ref_len + len(r)
        for n in range(1, 5):
            hn, rn = _ngrams(h, n), _ngrams(r, n)
            matched[n - 1] += sum(min(c, rn[g]) for g, c in hn.items())
            total[n - 1] += max(len(h) - n + 1, 0)
    log_p = sum(math.log(m / t) for m, t in zip(matched, total)) / 4
    bp = 1.0 if hyp_len > ref_len else math.exp(1 - ref_len / hyp_len)
    return 100 * bp * math.exp(log_p)


def test_bleu_follows_the_formula_and_takes_the_best_reference():
    refs = ["a b c d e f g", "h i j k l m n o", "p q r s t"]
    hyps = ["a b c d x f g", "h i j k l m n", "p q r s t"]
    got = bleu_score(hyps, [[r] for r in refs])
    assert got["bleu"] == pytest.approx(_bleu(hyps, refs), abs=1e-6)
    assert got["bleu_brevity_penalty"] == pytest.approx(math.exp(1 - 20 / 19))
    # a second reference stream: rows with one reference repeat it
    two = bleu_score(["a b c d e"], [["z z z z z", "a b c d e"]])
    assert two["bleu"] == pytest.approx(100.0)


def test_rouge_is_the_lcs_and_unigram_f_measure_best_over_references():
    got = rouge_scores(["the cat sat on the mat"], [["a dog sat on a mat", "the cat sat"]])
    # best reference for ROUGE-1: "the cat sat" (P=3/6, R=3/3, F=2/3) vs the other
    # (overlap sat, on, mat: P=3/6, R=3/6, F=1/2)
    assert got["rouge1"] == pytest.approx(100 * 2 / 3)
    assert got["rougeL"] == pytest.approx(100 * 2 / 3)  # LCS "the cat sat": same counts
    assert got["rouge2"] == pytest.approx(100 * 2 * (2 / 5) * 1.0 / (2 / 5 + 1.0))


@pytest.fixture(scope="module")
def word_tokenizer(tmp_path_factory):
    """A word-level tokenizer with one word per synthetic id: <pad> <s> </s> <unk>, w4..w63."""
    from tests.data.data_helpers import save_word_tokenizer

    path = tmp_path_factory.mktemp("t2t_tok")
    save_word_tokenizer(path, {"<pad>": PAD, "<s>": BOS, "</s>": EOS, "<unk>": 3}, 4, VOCAB)
    return str(path)


@pytest.mark.slow
def test_t5_learns_to_reverse_through_the_cli(word_tokenizer, tmp_path):
    """configs/t5_text2text.py on its synthetic task: a tiny T5 trained through ``jaxmm
    train``, then ``jaxmm eval`` generates with beam search; its BLEU must be far above
    the trivial answer of copying the source (every word right, in the wrong order)."""
    config = (f"{ROOT}/configs/t5_text2text.py:size=tiny,data=synthetic,src_len=8,tgt_len=10,"
              f"vocab={VOCAB},steps=400,batch=32,beams=2,tokenizer={word_tokenizer}")
    overrides = ["--config.eval.every_steps=0", "--config.eval.at_end=false",
                 "--config.log.every_steps=50", "--config.log.tensorboard=false",
                 "--config.log.progress=false", "--config.checkpoint.export_params=false",
                 "--config.checkpoint.best_metric=None", "--config.eval.num_batches=4",
                 "--config.eval.evaluators.text.num_batches=4",
                 f"--config.compilation_cache_dir={CACHE}"]
    workdir = str(tmp_path / "run")
    res = run_cli("train", "--config", config, "--workdir", workdir, *overrides, devices=1)
    assert res.returncode == 0, res.stderr[-3000:]
    res = run_cli("eval", "--config", config, "--workdir", workdir, *overrides, devices=1)
    assert res.returncode == 0, res.stderr[-3000:]
    metrics = json.loads(res.stdout)["metrics"]

    # the baseline on synthetic validation data of the same distribution
    batch = make_batch("text2text", 0, 128, split="validation", seq_len=8, vocab_size=VOCAB)
    words = lambda ids: " ".join(f"w{i}" for i in ids if i >= 4)  # noqa: E731
    sources = [words(r[m > 0]) for r, m in zip(batch["input_ids"], batch["attention_mask"])]
    targets = [words(r[r >= 0]) for r in batch["labels"]]
    copy = bleu_score(sources, [[t] for t in targets])["bleu"]
    assert metrics["text/num_examples"] > 0
    assert metrics["text/bleu"] > copy + 30, (metrics, copy)
    assert metrics["loss"] < 0.5 * math.log(VOCAB), metrics
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        train = [r["train/loss"] for r in map(json.loads, f) if "train/loss" in r]
    assert np.mean(train[-2:]) < 0.5 * train[0]
