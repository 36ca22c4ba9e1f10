"""Extractive QA examples -> doc-stride windows with span labels (host side, NumPy).

A SQuAD example (question, context, answers) whose ``[CLS] question [SEP] context
[SEP]`` is longer than ``max_length`` becomes several windows: the question is
repeated in each, the context is cut into overlapping pieces (``stride`` tokens of
overlap, the Hugging Face ``doc_stride``), all of one example's windows come from
one batched call of the ``tokenizers`` library (:meth:`jaxmm.data.tokenizers.
HFTokenizer.encode_windows`). Each window carries:

* ``input_ids``, ``attention_mask``, ``token_type_ids`` ``(T,)``;
* ``offsets`` ``(T, 2)``: the character span ``[start, end)`` of each context token
  in the original context, ``-1`` for the question, special and padding tokens (so
  ``offsets[..., 0] >= 0`` marks the context tokens that a span may use);
* ``start_positions`` / ``end_positions``: the answer's first and last token when the
  answer lies wholly inside the window's context part; otherwise (and for a SQuAD v2
  question without an answer) both are 0, the CLS token, as Hugging Face trains.

Bad input -- an answer whose ``answer_start`` and text do not match the context
(``context[start:start + len(text)] != text``) -- is a *counted skip*: the example's
windows get the ignore label ``-100`` (no loss, no gradient), a warning names the
example id and the running count (the first 10 skips, then at every power of two),
and evaluation still scores the example by its answer texts. One corrupt row never
stops a run.

A question too long to leave room for context in a window (the tokenizer cannot cut
the pair) is skipped the same way, with no windows at all (evaluation scores it 0).

An example with more than ``max_windows`` windows keeps the first ``max_windows``
(a warning says so); padding windows have an all-zero ``attention_mask``, offsets
``-1`` and labels ``-100``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np

from jaxmm.config import ConfigError
from jaxmm.errors import TokenizerError

log = logging.getLogger(__name__)

__all__ = ["IGNORE_INDEX", "SpanLabeler", "answer_token_span"]

IGNORE_INDEX = -100


def answer_token_span(offsets: np.ndarray, start_char: int, end_char: int) -> tuple[int, int]:
    """Token span ``(first, last)`` of the characters ``[start_char, end_char)`` in one
    window, or ``(0, 0)`` (CLS) when they are not wholly inside its context tokens.

    ``offsets`` ``(T, 2)`` as in the module docstring (``-1``: not context). The first
    token is the last context token starting at or before ``start_char``; the last
    token is the first context token ending at or after ``end_char``.
    """
    context = offsets[:, 0] >= 0
    if not context.any():
        return 0, 0
    idx = np.flatnonzero(context)
    if offsets[idx[0], 0] > start_char or offsets[idx[-1], 1] < end_char:
        return 0, 0
    first = idx[offsets[idx, 0] <= start_char][-1]
    last = idx[offsets[idx, 1] >= end_char][0]
    return int(first), int(last)


class SpanLabeler:
    """Windows and labels of one example at a time (the ``squad_windows`` op's work).

    Args:
      tokenizer: a :class:`jaxmm.data.tokenizers.Tokenizer` with offsets (HF backend).
      max_length: tokens per window. stride: context tokens shared by consecutive
      windows. max_windows: windows kept per example (fixed, so examples batch).
    """

    def __init__(self, tokenizer: Any, max_length: int, stride: int, max_windows: int):
        if max_windows < 1:
            raise ConfigError(f"squad_windows: max_windows must be >= 1; got {max_windows}.")
        if not callable(getattr(tokenizer, "encode_windows", None)):
            raise ConfigError(f"squad_windows needs a tokenizer with character offsets "
                              f"(jaxmm.data.tokenizers, Hugging Face backend); "
                              f"{type(tokenizer).__name__} has no encode_windows.")
        self.tokenizer, self.max_length = tokenizer, max_length
        self.stride, self.max_windows = stride, max_windows
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self.skipped = 0
        self._lock = threading.Lock()

    def _count_skip(self, example_id: str, why: str) -> None:
        with self._lock:
            self.skipped += 1
            count = self.skipped
        if count > 10 and count & (count - 1):  # the first 10, then at powers of two
            return
        log.warning("squad_windows: skipping the labels of example %r: %s; %d example(s) "
                    "skipped so far.", example_id, why, count)

    def __call__(self, example_id: str, question: str, context: str,
                 answer_texts: Sequence[str], answer_starts: Sequence[int]
                 ) -> dict[str, np.ndarray]:
        """Arrays of the ``max_windows`` windows: ``(W, T)`` ids/mask/types, ``(W, T, 2)``
        offsets, ``(W,)`` start/end positions and ``num_windows`` (the real ones)."""
        try:
            windows = self.tokenizer.encode_windows([question], [context], self.max_length,
                                                    self.stride)[0]
        except TokenizerError as e:  # the question leaves no room for context
            self._count_skip(example_id, f"cannot make windows: {e}")
            windows = []
        if len(windows) > self.max_windows:
            log.warning("squad_windows: example %r has %d windows; keeping the first %d "
                        "(raise max_windows or max_length to see the rest of its context).",
                        example_id, len(windows), self.max_windows)
            windows = windows[:self.max_windows]
        w, t = self.max_windows, self.max_length
        out = {"input_ids": np.full((w, t), self.pad_id, np.int32),
               "attention_mask": np.zeros((w, t), np.int32),
               "token_type_ids": np.zeros((w, t), np.int32),
               "offsets": np.full((w, t, 2), -1, np.int32),
               "start_positions": np.full((w,), IGNORE_INDEX, np.int32),
               "end_positions": np.full((w,), IGNORE_INDEX, np.int32)}
        span = None  # characters of the (first) answer; None: no answer (v2)
        if len(answer_texts):
            text, start = answer_texts[0], int(answer_starts[0])
            found = context[start:start + len(text)]
            if found != text or not text:
                self._count_skip(example_id, f"its answer {text[:60]!r} at answer_start="
                                 f"{start} does not match the context there ({found[:60]!r}); "
                                 "fix answer_start or the answer text")
                span = "skip"
            else:
                span = (start, start + len(text))
        for i, win in enumerate(windows):
            n = len(win["input_ids"])
            out["input_ids"][i, :n] = win["input_ids"]
            out["attention_mask"][i, :n] = 1
            out["token_type_ids"][i, :n] = win["token_type_ids"]
            out["offsets"][i, :n] = win["offsets"]
            if span == "skip":
                continue
            first, last = (0, 0) if span is None else answer_token_span(win["offsets"], *span)
            out["start_positions"][i], out["end_positions"][i] = first, last
        out["num_windows"] = np.int32(len(windows))
        return out
