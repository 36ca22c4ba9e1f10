"""WER/CER against a Levenshtein restatement of jiwer's default rules and jiwer itself;
perplexity against the exponentiated mean cross-entropy of PyTorch / Hugging Face."""

import math

import numpy as np
import pytest

from jaxmm import evaluate as ev


def edit_distance(ref, hyp):
    """Levenshtein distance between two sequences (unit costs)."""
    row = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        prev, row[0] = row[0], i
        for j, h in enumerate(hyp, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (r != h))
    return row[-1]


def ref_words(text):
    # jiwer's wer_default: runs of 2+ white-space characters -> one space, strip, split on " ".
    out, prev_space = [], False
    for ch in text:
        space = ch.isspace()
        if not (space and prev_space):
            out.append(ch)
        elif out[-1] != " ":
            out[-1] = " "
        prev_space = space
    return [w for w in "".join(out).strip().split(" ") if w]


def ref_rate(references, hypotheses, units):
    edits = sum(edit_distance(units(r), units(h)) for r, h in zip(references, hypotheses))
    total = sum(len(units(r)) for r in references)
    return edits / total if total else edits


CORPORA = [
    (["the cat sat down"], ["the bat sat"]),
    (["a b", "c d e"], ["a b", "c x e f"]),
    # case and punctuation count as given; contractions and numbers are single words
    (["The cat's hat, 1,000 times."], ["the cats hat 1000 times"]),
    # extra spaces: collapsed for WER, counted for CER (inside) / stripped (ends)
    (["  hello   world "], ["hello world"]),
    (["hello world"], [""]),  # empty hypothesis: all deletions
    (["", "one two"], ["extra", "one too"]),  # an empty reference inside a corpus
    (["Don't stop", "U.S. army"], ["dont stop", "US army"]),
]


@pytest.mark.parametrize("references,hypotheses", CORPORA)
def test_error_rates_match_levenshtein_rules_and_jiwer(references, hypotheses):
    import jiwer

    expected_wer = ref_rate(references, hypotheses, ref_words)
    expected_cer = ref_rate(references, hypotheses, lambda t: list(t.strip()))
    assert ev.wer(references, hypotheses) == pytest.approx(expected_wer, abs=1e-12)
    assert ev.cer(references, hypotheses) == pytest.approx(expected_cer, abs=1e-12)
    assert ev.wer(references, hypotheses) == jiwer.wer(references, hypotheses)
    assert ev.cer(references, hypotheses) == jiwer.cer(references, hypotheses)


def test_wer_and_perplexity():
    # "the cat sat down" -> "the bat sat": 1 substitution + 1 deletion over 4 words.
    assert ev.wer(["the cat sat down"], ["the bat sat"]) == pytest.approx(0.5)
    assert ev.wer(["a b", "c d e"], ["a b", "c x e f"]) == pytest.approx(2 / 5)
    assert ev.cer(["abcd"], ["abed"]) == pytest.approx(0.25)
    assert ev.perplexity(10 * math.log(7.0), 10) == pytest.approx(7.0)
    with pytest.raises(ValueError, match="positive"):
        ev.perplexity(1.0, 0)


def test_error_rate_edge_cases():
    # Every reference empty: jiwer's rule gives the number of inserted words.
    assert ev.wer([""], ["two words"]) == 2.0 == ref_rate([""], ["two words"], ref_words)
    assert ev.wer([""], [""]) == 0.0
    with pytest.raises(TypeError, match="list of transcripts"):
        ev.wer("the cat", "the bat")
    with pytest.raises(ValueError, match="2 references but 1 hypotheses"):
        ev.cer(["a", "b"], ["a"])


def test_perplexity_equals_exp_of_mean_cross_entropy(rng):
    """The Hugging Face definition: exp(CrossEntropyLoss(mean over labels != -100))."""
    torch = pytest.importorskip("torch")
    logits = rng.normal(size=(3, 11, 17)) * 3.0
    labels = rng.integers(0, 17, (3, 11))
    labels[0, 7:] = -100  # padding
    labels[2, :2] = -100
    loss = torch.nn.functional.cross_entropy(
        torch.tensor(logits.reshape(-1, 17)), torch.tensor(labels.reshape(-1)), ignore_index=-100)
    # Summed NLL over the kept tokens, from a log-softmax written out here.
    log_probs = logits - np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1,
                                keepdims=True)) - logits.max(-1, keepdims=True)
    keep = labels != -100
    nll = -np.take_along_axis(log_probs, np.where(keep, labels, 0)[..., None], -1)[..., 0]
    total_nll, num_tokens = float(nll[keep].sum()), int(keep.sum())
    assert ev.perplexity(total_nll, num_tokens) == pytest.approx(math.exp(loss.item()), rel=1e-9)
    # Token-weighted, not the mean of per-sequence perplexities.
    per_sequence = [math.exp(nll[i][keep[i]].mean()) for i in range(3)]
    assert ev.perplexity(total_nll, num_tokens) != pytest.approx(np.mean(per_sequence))
