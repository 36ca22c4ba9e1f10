"""Helpers shared by the family converters: scan layouts, activations, prefixes.

(Per-tensor layout mapping of the shared layers is in :mod:`jaxmm.convert.layers`.)
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import flax.linen as nn
import jax
import numpy as np

from jaxmm.convert.io import ConversionError, TensorStore
from jaxmm.layers import stack_layer_params, unstack_layer_params
from jaxmm.layers.mlp import ACTIVATIONS

__all__ = [
    "activation_from_hf",
    "activation_to_hf",
    "causal_lm_params",
    "find_prefix",
    "stack_layout",
    "to_numpy_tree",
    "unstack_layout",
]

# jaxmm activation name -> the Hugging Face ACT2FN name of the same function.
_TO_HF_ACT = {"gelu_tanh": "gelu_new", "swish": "silu"}


def activation_from_hf(name: str, where: str) -> str:
    """A Hugging Face activation name as a jaxmm one (clear error if unsupported)."""
    if name not in ACTIVATIONS:
        raise ConversionError(
            f"{where}: activation {name!r} is not supported by jaxmm; supported: "
            f"{', '.join(sorted(ACTIVATIONS))}."
        )
    return "gelu_tanh" if ACTIVATIONS[name] is ACTIVATIONS["gelu_tanh"] else name


def activation_to_hf(name: str) -> str:
    return _TO_HF_ACT.get(name, name)


def to_numpy_tree(params: Any) -> Any:
    """Unboxes logical-partitioning metadata and brings every leaf to host NumPy."""
    if isinstance(params, Mapping) and set(params) == {"params"}:
        params = params["params"]
    params = nn.meta.unbox(params)
    return jax.tree.map(lambda a: np.asarray(jax.device_get(a)), params)


def stack_layout(stack_params: dict, num_layers: int, scan: bool) -> dict:
    """Loop-layout stack params -> the layout a ``TransformerStack`` expects."""
    return stack_layer_params(stack_params, num_layers) if scan else stack_params


def unstack_layout(stack_params: Mapping, num_layers: int) -> dict:
    """A stack's params in loop layout (``layers_0``...), whichever layout it has."""
    stack_params = dict(stack_params)
    return unstack_layer_params(stack_params, num_layers) if "layers" in stack_params \
        else stack_params


def find_prefix(store: TensorStore, anchor: str, candidates: Iterable[str]) -> str:
    """The first of ``candidates`` with ``prefix + anchor`` in ``store``.

    E.g. ``find_prefix(store, "wte.weight", ["", "transformer."])`` tells a
    GPT2Model file from a GPT2LMHeadModel one.
    """
    candidates = list(candidates)
    for prefix in candidates:
        if prefix + anchor in store:
            return prefix
    sample = ", ".join(sorted(store.keys())[:8])
    tried = ", ".join(repr(p + anchor) for p in candidates)
    raise ConversionError(
        f"{store.source}: cannot find {tried} among the checkpoint's tensors (first keys: "
        f"{sample}). Is this the right model_type, or does it need a prefix?"
    )


def causal_lm_params(store: TensorStore, params: dict, *, with_head: bool, tied: bool,
                     embedding_name: str) -> dict:
    """Decoder params -> ``GPTLMHeadModel`` params (``model`` + ``lm_head`` when untied).

    Takes ``lm_head.weight`` from ``store`` when ``with_head``: with tied
    embeddings it may be absent, and must then equal the token embedding when
    present; untied, it is required. Without a head a stored
    ``lm_head.weight`` is consumed unused (a bare decoder from an LM file).
    """
    if not with_head:
        if "lm_head.weight" in store:
            store.ignore("lm_head.weight")
        return params
    head = store.take_optional("lm_head.weight")
    if tied:
        if head is not None and not np.array_equal(head, params["token_embedding"]["embedding"]):
            raise ConversionError(
                f"{store.source}: lm_head.weight differs from {embedding_name} although "
                "tie_word_embeddings is true; set tie_word_embeddings=false in config.json.")
        return {"model": params}
    if head is None:
        raise ConversionError(
            f"{store.source}: tie_word_embeddings is false but lm_head.weight is missing.")
    return {"model": params, "lm_head": {"kernel": np.ascontiguousarray(head.T)}}
