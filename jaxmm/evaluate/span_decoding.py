"""n-best answer-span decoding for extractive QA (host side, NumPy).

For each window of an example: the ``n_best`` highest start logits and the
``n_best`` highest end logits among its context tokens give ``n_best**2`` candidate
spans; a candidate is valid when ``end >= start`` and it is at most
``max_answer_length`` tokens long. Its score is ``start_logit + end_logit``. The
example's answer is its best valid candidate over all its windows, cut from the
original context through the window's character offsets.

SQuAD v2 (``null_threshold`` set): the null score is the smallest
``start_logit[0] + end_logit[0]`` (the CLS token) over the example's windows; the
prediction is ``""`` (no answer) when ``null_score - best_span_score`` exceeds the
threshold, as in the Hugging Face SQuAD v2 post-processing.
"""

from __future__ import annotations

import dataclasses

import numpy as np

__all__ = ["Span", "best_span", "decode_answer"]


@dataclasses.dataclass(frozen=True)
class Span:
    """The best span of one example: its ``window`` and tokens ``start..end``
    (inclusive), ``score`` (``-inf`` if no valid span) and the ``null_score``."""

    window: int
    start: int
    end: int
    score: float
    null_score: float


def best_span(start_logits: np.ndarray, end_logits: np.ndarray, context_mask: np.ndarray,
              n_best: int = 20, max_answer_length: int = 30) -> Span:
    """Best valid span over the windows of one example.

    Args:
      start_logits, end_logits: ``(W, T)`` (or ``(T,)`` for one window).
      context_mask: ``(W, T)`` bool, True on the tokens a span may use (the context
        part of real windows).
      n_best: start and end candidates kept per window.
      max_answer_length: longest span, in tokens.
    """
    s = np.atleast_2d(np.asarray(start_logits, np.float64))
    e = np.atleast_2d(np.asarray(end_logits, np.float64))
    ctx = np.atleast_2d(np.asarray(context_mask, bool))
    real = ctx.any(axis=1)
    null = s[:, 0] + e[:, 0]
    null_score = float(null[real].min()) if real.any() else float(null.min())
    w, t = s.shape
    k = max(1, min(n_best, t))
    s_masked = np.where(ctx, s, -np.inf)
    e_masked = np.where(ctx, e, -np.inf)
    starts = np.argsort(-s_masked, axis=1, kind="stable")[:, :k]  # (W, k)
    ends = np.argsort(-e_masked, axis=1, kind="stable")[:, :k]
    rows = np.arange(w)[:, None, None]
    st, en = starts[:, :, None], ends[:, None, :]  # (W, k, 1), (W, 1, k)
    valid = ((en >= st) & (en - st + 1 <= max_answer_length)
             & ctx[rows, st] & ctx[rows, en])
    score = np.where(valid, s[rows, st] + e[rows, en], -np.inf)
    flat = int(np.argmax(score))
    win, i, j = np.unravel_index(flat, score.shape)
    best = float(score[win, i, j])
    if not np.isfinite(best):
        return Span(-1, 0, 0, -np.inf, null_score)
    return Span(int(win), int(starts[win, i]), int(ends[win, j]), best, null_score)


def decode_answer(start_logits: np.ndarray, end_logits: np.ndarray, offsets: np.ndarray,
                  context: str, *, n_best: int = 20, max_answer_length: int = 30,
                  null_threshold: float | None = None) -> str:
    """The answer text of one example (``""`` for no answer).

    ``offsets`` ``(W, T, 2)``: each context token's characters ``[start, end)`` in
    ``context``, ``-1`` on every other token (:mod:`jaxmm.data.qa`).
    ``null_threshold``: ``None`` always answers (SQuAD v1.1); a number allows the
    no-answer prediction (v2, see the module docstring).
    """
    offsets = np.asarray(offsets).reshape(np.shape(np.atleast_2d(start_logits)) + (2,))
    span = best_span(start_logits, end_logits, offsets[..., 0] >= 0, n_best, max_answer_length)
    if span.window < 0:
        return ""
    if null_threshold is not None and span.null_score - span.score > null_threshold:
        return ""
    return context[offsets[span.window, span.start, 0]:offsets[span.window, span.end, 1]]
