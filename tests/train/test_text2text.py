"""Text-to-text (``seq2seq`` task, ``text2text`` evaluator, T5 config): the synthetic
targets, the BLEU/ROUGE scoring against their formulas, and T5 learning to reverse
sequences through ``jaxmm train`` / ``jaxmm eval``, far above copying the source."""

import math
from collections import Counter

import pytest

from jaxmm.evaluate.evaluators.text_generation import bleu_score, rouge_scores
from jaxmm.train.synthetic import BOS, EOS, PAD, make_batch

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
