"""BERT pre-training pairs: sentence pairs for next-sentence prediction (NSP) + MLM.

:func:`sentence_pairs` turns a window of documents into fixed-length rows the way
BERT's recipe does. It runs inside the tf.data pipeline (``data.nsp``, see
:mod:`jaxmm.data.pipeline`), on windows of consecutive examples, each example one
document:

* each document is split into sentences (after ``.``, ``!``, ``?`` followed by
  white space, and at line breaks), and every sentence of the window is
  tokenised in one tokenizer call;
* sentences of a document are gathered into chunks of about ``length - 3``
  tokens (shorter with probability ``short_seq_prob``, as in BERT). Segment A is
  the chunk's first sentences, cut at a random sentence boundary;
* with probability ``1 - nsp_probability`` segment B is the rest of the chunk,
  the true continuation (label 0). Otherwise, and always when the chunk is a
  single sentence, B is taken from a different document of the window, starting
  at a random sentence (label 1). The unused
  sentences of the chunk are put back, so no text is wasted. Documents are never
  mixed inside a segment, and a "next" B always comes from A's own document;
* a pair longer than ``length - 3`` loses tokens from the front of A and the end of
  B, keeping the A|B boundary that NSP is about.

Rows are ``[CLS] A [SEP] B [SEP]`` padded to ``length``: ``input_ids``,
``attention_mask``, ``token_type_ids`` (0 on ``[CLS] A [SEP]``, 1 on ``B [SEP]``)
and ``next_sentence_label`` (0 = B follows A, 1 = B is random: Hugging Face's
convention). Masking for MLM happens on device in the ``pretraining`` task.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import numpy as np

from jaxmm.config import ConfigError

__all__ = ["NAMES", "sentence_pairs", "split_sentences"]

NAMES = ("input_ids", "attention_mask", "token_type_ids", "next_sentence_label")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\s*\n\s*")


def split_sentences(document: str) -> list[str]:
    """Sentences of ``document``: split after ``.!?`` + white space and at line breaks."""
    return [s.strip() for s in _SENTENCE_END.split(document) if s and s.strip()]


def special_ids(tokenizer: Any) -> tuple[int, int, int]:
    """``(cls, sep, pad)`` ids of ``tokenizer``; a clear error when it has no [CLS]/[SEP]."""
    cls, sep = getattr(tokenizer, "cls_token_id", None), getattr(tokenizer, "sep_token_id", None)
    if cls is None or sep is None:
        raise ConfigError(f"NSP pairs need a tokenizer with [CLS] and [SEP] tokens (a BERT "
                          f"WordPiece vocabulary); {type(tokenizer).__name__} has cls="
                          f"{cls}, sep={sep}.")
    pad = getattr(tokenizer, "pad_token_id", None)
    return int(cls), int(sep), int(pad if pad is not None else 0)


def _tokenize(tokenizer: Any, documents: Sequence[str]) -> list[list[np.ndarray]]:
    """Per document, its sentences' token ids (no special tokens), in one call."""
    sentences = [split_sentences(d) for d in documents]
    flat = [s for doc in sentences for s in doc]
    if not flat:
        return [[] for _ in documents]
    enc = tokenizer.encode(flat, padding=False, truncation=False, add_special_tokens=False)
    ids = [np.asarray(r, np.int32)[np.asarray(m) > 0]
           for r, m in zip(enc["input_ids"], enc["attention_mask"])]
    out, at = [], 0
    for doc in sentences:
        out.append([s for s in ids[at:at + len(doc)] if len(s)])
        at += len(doc)
    return out


def _random_b(docs: list[list[np.ndarray]], avoid: int, size: int,
              rng: np.random.Generator) -> list[np.ndarray] | None:
    """Sentences from a random other non-empty document, from a random start, until
    ``size`` tokens; ``None`` when the window has no other document."""
    others = [j for j, d in enumerate(docs) if j != avoid and d]
    if not others:
        return None
    doc = docs[others[int(rng.integers(len(others)))]]
    out, n = [], 0
    for s in doc[int(rng.integers(len(doc))):]:
        out.append(s)
        n += len(s)
        if n >= size:
            break
    return out


def _pairs_of_document(docs, i, budget, rng, nsp_probability, short_seq_prob):
    """``(A tokens, B tokens, label)`` pairs from document ``i`` (BERT's recipe)."""
    doc = docs[i]
    target = budget if rng.random() >= short_seq_prob else int(rng.integers(2, budget + 1))
    pairs, chunk, size, j = [], [], 0, 0
    while j < len(doc):
        chunk.append(doc[j])
        size += len(doc[j])
        if j == len(doc) - 1 or size >= target:
            a_end = 1 if len(chunk) < 2 else int(rng.integers(1, len(chunk)))
            a = list(chunk[:a_end])
            b = None
            if len(chunk) == 1 or rng.random() < nsp_probability:
                b = _random_b(docs, i, max(1, target - sum(map(len, a))), rng)
                if b is not None:
                    label = 1
                    j -= len(chunk) - a_end  # the chunk's unused sentences go back
            if b is None:  # a true continuation (or no other document to draw from)
                b, label = list(chunk[a_end:]), 0
                if not b:  # one sentence and no other document: nothing to pair
                    a = []
            if a and b:
                pairs.append((np.concatenate(a), np.concatenate(b), label))
            chunk, size = [], 0
            target = budget if rng.random() >= short_seq_prob else int(
                rng.integers(2, budget + 1))
        j += 1
    return pairs


def sentence_pairs(documents: Sequence[str], tokenizer: Any, length: int,
                   rng: np.random.Generator, nsp_probability: float = 0.5,
                   short_seq_prob: float = 0.1) -> dict[str, np.ndarray]:
    """NSP rows (module docstring) from ``documents``: int32 arrays ``(rows, length)``
    and ``next_sentence_label`` ``(rows,)``; zero rows when no pair can be made."""
    if length < 5:
        raise ConfigError(f"nsp length must be >= 5 ([CLS] a [SEP] b [SEP]); got {length}.")
    cls, sep, pad = special_ids(tokenizer)
    docs = _tokenize(tokenizer, documents)
    budget = length - 3
    rows = []
    for i in range(len(docs)):
        for a, b, label in _pairs_of_document(docs, i, budget, rng, nsp_probability,
                                              short_seq_prob):
            while len(a) + len(b) > budget:  # trim the longer: A from the front, B at the end
                if len(a) > len(b):
                    a = a[1:]
                else:
                    b = b[:-1]
            rows.append((a, b, label))
    out = {"input_ids": np.full((len(rows), length), pad, np.int32),
           "attention_mask": np.zeros((len(rows), length), np.int32),
           "token_type_ids": np.zeros((len(rows), length), np.int32),
           "next_sentence_label": np.zeros((len(rows),), np.int32)}
    for r, (a, b, label) in enumerate(rows):
        ids = np.concatenate([[cls], a, [sep], b, [sep]]).astype(np.int32)
        out["input_ids"][r, :len(ids)] = ids
        out["attention_mask"][r, :len(ids)] = 1
        out["token_type_ids"][r, len(a) + 2:len(ids)] = 1
        out["next_sentence_label"][r] = label
    return out
