"""Word error rate (jiwer) and perplexity."""

from __future__ import annotations

import math
from collections.abc import Sequence

__all__ = ["cer", "perplexity", "wer"]


def _check(references: Sequence[str], hypotheses: Sequence[str]) -> None:
    if len(references) != len(hypotheses):
        raise ValueError(f"{len(references)} references but {len(hypotheses)} hypotheses.")
    if not references:
        raise ValueError("No transcripts to score.")


def wer(references: Sequence[str], hypotheses: Sequence[str]) -> float:
    """Corpus word error rate: (substitutions + deletions + insertions) / reference words.

    Texts are compared as given (normalise case/punctuation first if needed).
    """
    import jiwer

    _check(references, hypotheses)
    return float(jiwer.wer(list(references), list(hypotheses)))


def cer(references: Sequence[str], hypotheses: Sequence[str]) -> float:
    """Corpus character error rate."""
    import jiwer

    _check(references, hypotheses)
    return float(jiwer.cer(list(references), list(hypotheses)))


def perplexity(total_nll: float, num_tokens: int) -> float:
    """``exp(total_nll / num_tokens)`` from a summed negative log-likelihood (nats)."""
    if num_tokens <= 0:
        raise ValueError(f"num_tokens must be positive, got {num_tokens}.")
    return float(math.exp(float(total_nll) / float(num_tokens)))
