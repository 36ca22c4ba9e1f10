"""The generative reader: a language model answers from the retrieved passages.

:class:`GenerativeReader` puts the retrieved passages, numbered ``[1]``,
``[2]``, ... with their sources, and the question into one prompt
(:data:`PROMPT`) and decodes an answer with :func:`jaxmm.generate` from any
model folder :func:`jaxmm.convert.folders.load_model` reads: a decoder-only
model (GPT-2, Llama) continues the prompt, an encoder-decoder (T5) reads it as
its input. Passages are dropped from the lowest rank up until the prompt fits
``max_prompt_tokens``.

Citations: the passages the answer names as ``[n]`` (models tuned to cite do
so); when it names none, the answer is attributed to every passage of the prompt
and :attr:`GeneratedAnswer.cited_explicitly` is False.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Sequence

import numpy as np

from jaxmm.errors import InputError
from jaxmm.kb.index import Hit

__all__ = ["PROMPT", "GeneratedAnswer", "GenerativeReader", "build_prompt"]

PROMPT = ("Answer the question from the passages below and cite the passages you use as "
          "[n].\n\n{passages}\n\nQuestion: {question}\nAnswer:")
_CITE = re.compile(r"\[(\d+)\]")


def build_prompt(question: str, hits: Sequence[Hit], template: str = PROMPT) -> str:
    """The prompt with ``hits`` numbered by their position: ``[n] (source) text``."""
    passages = "\n".join(f"[{i + 1}] ({h.chunk.source}) {' '.join(h.chunk.text.split())}"
                         for i, h in enumerate(hits))
    return template.format(passages=passages, question=question)


@dataclasses.dataclass(frozen=True)
class GeneratedAnswer:
    """``text`` (decoded from the new ``token_ids``) generated from ``prompt``;
    ``citations`` the passages it cites as ``[n]`` (all of ``hits`` when it cites none:
    ``cited_explicitly`` False)."""

    text: str
    token_ids: tuple[int, ...]
    citations: tuple[Hit, ...]
    cited_explicitly: bool
    hits: tuple[Hit, ...]
    prompt: str


class GenerativeReader:
    """Answers questions with the generative model in ``path`` (GPT-2, Llama, T5, ...)."""

    def __init__(self, path: str | os.PathLike, *, tokenizer: str | os.PathLike | None = None,
                 max_prompt_tokens: int = 512, max_new_tokens: int = 48, num_beams: int = 1,
                 template: str = PROMPT):
        from jaxmm.convert.folders import load_model
        from jaxmm.data.tokenizers import load as load_tokenizer
        from jaxmm.generation import is_encoder_decoder

        if "{passages}" not in template or "{question}" not in template:
            raise InputError("The reader's prompt template needs {passages} and {question}.")
        self.path = os.fspath(path)
        self.tokenizer = load_tokenizer(os.fspath(tokenizer or path))
        self.model, self.params = load_model(self.path)
        self.encoder_decoder = is_encoder_decoder(self.model)
        self.max_prompt_tokens, self.max_new_tokens = max_prompt_tokens, max_new_tokens
        self.num_beams, self.template = num_beams, template

    def _fit(self, question: str, hits: Sequence[Hit]) -> tuple[list[Hit], str]:
        """The most passages (best first) whose prompt fits ``max_prompt_tokens``."""
        hits = list(hits)
        while True:
            prompt = build_prompt(question, hits, self.template)
            n = len(self.tokenizer.encode([prompt], padding=False, truncation=False)
                    ["input_ids"][0])
            if n <= self.max_prompt_tokens or not hits:
                break
            hits = hits[:-1]
        if n > self.max_prompt_tokens:
            raise InputError(f"The question alone makes a {n}-token prompt, more than "
                             f"max_prompt_tokens={self.max_prompt_tokens}.",
                             hint="Shorten the question or raise max_prompt_tokens.")
        return hits, prompt

    def read(self, question: str, hits: Sequence[Hit]) -> GeneratedAnswer:
        from jaxmm.generation import generate

        used, prompt = self._fit(question, hits)
        batch = self.tokenizer.encode([prompt], padding=True, truncation=False)
        ids = np.asarray(batch["input_ids"])
        pad = getattr(getattr(self.model, "config", None), "pad_token_id", None)
        pad = self.tokenizer.pad_token_id if pad is None else pad  # None: the first EOS
        out = generate(self.model, self.params, ids, np.asarray(batch["attention_mask"]),
                       max_new_tokens=self.max_new_tokens, num_beams=self.num_beams,
                       pad_token_id=pad)
        row = np.asarray(out.sequences)[0]
        new = row if self.encoder_decoder else row[ids.shape[1]:]
        text = self.tokenizer.decode(new.tolist(), skip_special_tokens=True).strip()
        named = sorted({int(m) for m in _CITE.findall(text) if 1 <= int(m) <= len(used)})
        cited = tuple(used[n - 1] for n in named)
        return GeneratedAnswer(text, tuple(int(t) for t in new), cited or tuple(used),
                               bool(cited), tuple(used), prompt)
