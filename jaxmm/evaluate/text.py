"""Word and character error rates (jiwer) and perplexity.

References:

* WER / CER: ``jiwer`` (4.x) with its default transforms. Corpus rates: the
  word- (character-) level Levenshtein edits (substitutions + deletions +
  insertions) summed over all pairs, divided by the total number of reference
  words (characters). WER collapses runs of white space, strips the ends and
  splits on spaces; CER strips the ends and counts every other character, inner
  spaces included. Texts are otherwise compared as given: case and punctuation
  count (normalise first if a benchmark says so, e.g. Whisper's text normaliser).
  An empty reference adds no reference words, so its hypothesis words are all
  insertions; if every reference is empty jiwer returns the insertion count.
* Perplexity: token-weighted corpus perplexity, ``exp(total NLL / tokens)`` with
  the NLL in nats; the same number as ``exp`` of a Hugging Face model's mean
  cross-entropy loss over the non-ignored labels, and lm-evaluation-harness's
  ``weighted_perplexity``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

__all__ = ["cer", "perplexity", "wer"]


def _check(references: Sequence[str], hypotheses: Sequence[str]) -> None:
    for name, texts in (("references", references), ("hypotheses", hypotheses)):
        if isinstance(texts, str):
            raise TypeError(f"{name} must be a list of transcripts, not one string; "
                            f"pass [{texts[:30]!r}...].")
    if len(references) != len(hypotheses):
        raise ValueError(f"{len(references)} references but {len(hypotheses)} hypotheses.")
    if not references:
        raise ValueError("No transcripts to score.")


def wer(references: Sequence[str], hypotheses: Sequence[str]) -> float:
    """Corpus word error rate: (substitutions + deletions + insertions) / reference words.

    Args:
      references: the true transcripts.
      hypotheses: the recognised transcripts, one per reference.
    """
    import jiwer

    _check(references, hypotheses)
    return float(jiwer.wer(list(references), list(hypotheses)))


def cer(references: Sequence[str], hypotheses: Sequence[str]) -> float:
    """Corpus character error rate: character edits / reference characters."""
    import jiwer

    _check(references, hypotheses)
    return float(jiwer.cer(list(references), list(hypotheses)))


def perplexity(total_nll: float, num_tokens: int) -> float:
    """``exp(total_nll / num_tokens)`` from a summed negative log-likelihood (nats)."""
    if num_tokens <= 0:
        raise ValueError(f"num_tokens must be positive, got {num_tokens}.")
    return float(math.exp(float(total_nll) / float(num_tokens)))
