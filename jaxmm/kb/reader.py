"""The extractive reader: the best answer span over the retrieved passages, cited.

:class:`ExtractiveReader` runs an extractive-QA model (``bert_qa`` trained with
``configs/qa_bert.py`` and exported, a jaxmm model folder, or a Hugging Face
``BertForQuestionAnswering`` folder) on ``(question, passage)`` doc-stride
windows of every retrieved passage, picks each passage's best span with
:func:`jaxmm.evaluate.span_decoding.best_span` (start + end logit, n-best,
longest answer), and answers with the highest-scoring span over all passages.
The :class:`Answer` names the passage it came from (``citation`` ``[n]`` is the
passage's retrieval rank) and the answer's character offsets in the source
document.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence

import jax
import numpy as np

from jaxmm.errors import InputError
from jaxmm.evaluate.span_decoding import best_span
from jaxmm.kb.index import Hit

__all__ = ["Answer", "ExtractiveReader"]


@dataclasses.dataclass(frozen=True)
class Answer:
    """``text`` cut from ``hit.chunk`` (document characters ``start..end``), its span
    ``score`` (start + end logit) and ``citation`` (``"[n]"``, the passage's rank + 1)."""

    text: str
    score: float
    citation: str
    hit: Hit
    start: int
    end: int


class ExtractiveReader:
    """Reads answers out of passages with the extractive-QA model in ``path``."""

    def __init__(self, path: str | os.PathLike, *, tokenizer: str | os.PathLike | None = None,
                 max_length: int = 384, stride: int = 128, n_best: int = 20,
                 max_answer_length: int = 30):
        from jaxmm.convert.folders import load_model
        from jaxmm.data.tokenizers import load as load_tokenizer

        self.path = os.fspath(path)
        self.tokenizer = load_tokenizer(os.fspath(tokenizer or path))
        if not hasattr(self.tokenizer, "encode_windows"):
            raise InputError(f"The reader's tokenizer ({type(self.tokenizer).__name__}) has no "
                             "character offsets.", hint="Use a Hugging Face tokenizer folder.")
        self.model, self.params = load_model(self.path)
        self.max_length, self.stride = max_length, stride
        self.n_best, self.max_answer_length = n_best, max_answer_length

        def logits(params, input_ids, attention_mask, token_type_ids):
            out = self.model.apply({"params": params}, input_ids=input_ids,
                                   attention_mask=attention_mask, token_type_ids=token_type_ids)
            if not hasattr(out, "start_logits"):
                raise InputError(f"The model in {self.path!r} ({type(self.model).__name__}) "
                                 "has no start/end logits, so it is not an extractive reader.",
                                 hint="Pass a bert_qa export or a BertForQuestionAnswering "
                                      "folder.")
            return out.start_logits, out.end_logits

        self._logits = jax.jit(logits)

    def _windows(self, question: str, passages: Sequence[str]) -> tuple[list[int], dict]:
        """Every passage's windows, stacked and padded to ``max_length`` tokens."""
        per = self.tokenizer.encode_windows([question] * len(passages), list(passages),
                                            self.max_length, self.stride)
        owner = [p for p, windows in enumerate(per) for _ in windows]
        flat = [w for windows in per for w in windows]
        t = self.max_length
        batch = {"input_ids": np.zeros((len(flat), t), np.int32),
                 "token_type_ids": np.zeros((len(flat), t), np.int32),
                 "attention_mask": np.zeros((len(flat), t), np.int32),
                 "offsets": np.full((len(flat), t, 2), -1, np.int32)}
        for i, w in enumerate(flat):
            n = len(w["input_ids"])
            batch["input_ids"][i, :n] = w["input_ids"]
            batch["token_type_ids"][i, :n] = w["token_type_ids"]
            batch["attention_mask"][i, :n] = 1
            batch["offsets"][i, :n] = w["offsets"]
        return owner, batch

    def read(self, question: str, hits: Sequence[Hit]) -> Answer | None:
        """The best answer over ``hits`` (None when no passage holds a valid span)."""
        if not hits:
            return None
        owner, batch = self._windows(question, [h.chunk.text for h in hits])
        start, end = self._logits(self.params, batch["input_ids"], batch["attention_mask"],
                                  batch["token_type_ids"])
        start, end, owner = np.asarray(start), np.asarray(end), np.asarray(owner)
        best = None
        for p, hit in enumerate(hits):
            rows = np.flatnonzero(owner == p)
            offsets = batch["offsets"][rows]
            span = best_span(start[rows], end[rows], offsets[..., 0] >= 0, self.n_best,
                             self.max_answer_length)
            if span.window < 0 or (best is not None and span.score <= best.score):
                continue
            a = int(offsets[span.window, span.start, 0])
            b = int(offsets[span.window, span.end, 1])
            best = Answer(hit.chunk.text[a:b], span.score, f"[{hit.rank + 1}]", hit,
                          hit.chunk.start + a, hit.chunk.start + b)
        return best
