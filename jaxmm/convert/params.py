"""Pieces the family converters share: checkpoint prefixes and causal-LM files.

GPT-2 and Llama store a jaxmm GPT model the same way around their own tables:
a base-model file (``GPT2Model``, no prefix) or an LM file (``transformer.`` /
``model.`` prefix, plus ``lm_head.weight`` unless tied). :func:`load_causal_lm`
and :func:`save_causal_lm` do that part for both from a :class:`CausalLMFormat`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Any

from jaxmm.convert.io import ConversionError, TensorStore
from jaxmm.convert.rules import TRANSPOSE, Rule, Table, Tied, params_from_hf, params_to_hf
from jaxmm.models.gpt import GPTConfig, GPTLMHeadModel, GPTModel

__all__ = [
    "CausalLMFormat",
    "causal_lm_params",
    "find_prefix",
    "lm_head_table",
    "load_causal_lm",
    "save_causal_lm",
]


def find_prefix(store: TensorStore, anchor: str, candidates: Iterable[str],
                default: str | None = None) -> str:
    """The first of ``candidates`` with ``prefix + anchor`` in ``store``.

    E.g. ``find_prefix(store, "wte.weight", ["", "transformer."])`` tells a
    GPT2Model file from a GPT2LMHeadModel one. Without a match: ``default``,
    or an error when there is none.
    """
    candidates = list(candidates)
    for prefix in candidates:
        if prefix + anchor in store:
            return prefix
    if default is not None:
        return default
    sample = ", ".join(sorted(store.keys())[:8])
    tried = ", ".join(repr(p + anchor) for p in candidates)
    raise ConversionError(
        f"{store.source}: cannot find {tried} among the checkpoint's tensors (first keys: "
        f"{sample}). Is this the right model_type, or does it need a prefix?"
    )


def lm_head_table(*, tied: bool, embedding_name: str) -> Table:
    """The LM head of ``GPTLMHeadModel`` params (``{"model": ..., "lm_head": ...}``):
    absent or equal to the token embedding when ``tied``, a transposed kernel if not."""
    if tied:
        return Table.of(Tied("lm_head.weight", "model/token_embedding/embedding",
                             ref=embedding_name, why="tie_word_embeddings is true: set "
                             "tie_word_embeddings=false in config.json."))
    return Table.of(Rule("lm_head.weight", "lm_head/kernel", TRANSPOSE))


def causal_lm_params(store: TensorStore, params: dict, *, with_head: bool, tied: bool,
                     embedding_name: str) -> dict:
    """Decoder params -> ``GPTLMHeadModel`` params (``model`` + ``lm_head`` when untied).

    Takes ``lm_head.weight`` from ``store`` when ``with_head``: with tied
    embeddings it may be absent, and must then equal the token embedding when
    present; untied, it is required. Without a head a stored
    ``lm_head.weight`` is consumed unused (a bare decoder from an LM file).
    """
    if not with_head:
        store.ignore(r"^lm_head\.weight$")
        return params
    if not tied and "lm_head.weight" not in store:
        raise ConversionError(
            f"{store.source}: tie_word_embeddings is false but lm_head.weight is missing.")
    return params_from_hf(lm_head_table(tied=tied, embedding_name=embedding_name), store,
                          into={"model": params}, finish=False)


@dataclasses.dataclass(frozen=True)
class CausalLMFormat:
    """How a Hugging Face decoder-only family names its files.

    anchor: the token embedding tensor (finds the prefix); lm_prefix: the base
    model's prefix inside an LM file; lm_marker: part of the LM class names
    in ``architectures``; architectures: (LM class, base class) written on export.
    """

    anchor: str
    lm_prefix: str
    lm_marker: str
    architectures: tuple[str, str]


def load_causal_lm(fmt: CausalLMFormat, hf_config: dict, store: TensorStore, cfg: GPTConfig,
                   table: Table, with_head: bool | None) -> tuple[Any, dict]:
    """A GPTLMHeadModel (or GPTModel) and its params, from ``table`` (unprefixed).

    ``with_head``: None picks from the file (the LM prefix or an LM class in
    ``architectures``).
    """
    prefix = find_prefix(store, fmt.anchor, ["", fmt.lm_prefix])
    if with_head is None:
        archs = hf_config.get("architectures") or []
        with_head = prefix == fmt.lm_prefix or any(fmt.lm_marker in a for a in archs)
    params = causal_lm_params(store, params_from_hf(table.under(prefix), store, finish=False),
                              with_head=with_head, tied=cfg.tie_word_embeddings,
                              embedding_name=prefix + fmt.anchor)
    store.finish()
    return (GPTLMHeadModel(cfg) if with_head else GPTModel(cfg)), params


def save_causal_lm(fmt: CausalLMFormat, model: Any, params: Any, table: Table
                   ) -> tuple[dict, str]:
    """(tensors, architecture) of a GPTLMHeadModel/GPTModel, from ``table`` (unprefixed)."""
    if isinstance(model, GPTLMHeadModel):
        head = lm_head_table(tied=model.config.tie_word_embeddings, embedding_name=fmt.anchor)
        return (params_to_hf(table.under(fmt.lm_prefix, "model/") + head, params),
                fmt.architectures[0])
    return params_to_hf(table, params), fmt.architectures[1]
