"""Rules for the shared jaxmm layers <-> PyTorch ``nn.Linear`` / ``LayerNorm`` / conv.

Family tables describe *where* a layer lives; these builders return its rules
(:mod:`jaxmm.convert.rules`). PyTorch ``Linear.weight`` is ``(out, in)``, a
jaxmm ``Dense`` kernel ``(in, out)``; attention projections are ``(E, H, D)``
(query/key/value) and ``(H, D, E)`` (out); norms keep ``weight`` as ``scale``.

:func:`transformer_layer` takes a family's names for the parts of one
:class:`~jaxmm.layers.EncoderLayer` / ``DecoderLayer``::

    LayerNames(attention_norm="layer_norm1", mlp_norm="layer_norm2",
               self_attention=qkvo("self_attn.", "q_proj", "k_proj", "v_proj", "out_proj"),
               mlp={"wi": "mlp.fc1", "wo": "mlp.fc2"})
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from jaxmm.convert.rules import CONV, IDENTITY, TRANSPOSE, Rule, Transform, Zeros, chain, heads

__all__ = [
    "LayerNames",
    "conv",
    "dense",
    "norm",
    "qkvo",
    "transformer_layer",
]

# A bias that jaxmm has and Hugging Face lacks: imported as zeros of this shape.
ZeroBias = tuple[int, ...]


def _bias(hf: str, path: str, bias: bool | ZeroBias, transform: Transform = IDENTITY
          ) -> list[Rule]:
    if isinstance(bias, tuple):
        return [Zeros(f"{path}/bias", shape=bias)]
    return [Rule(f"{hf}.bias", f"{path}/bias", transform)] if bias else []


def dense(hf: str, path: str, bias: bool | ZeroBias = True) -> list[Rule]:
    """``hf.weight`` ``(out, in)`` (+ ``hf.bias``) <-> ``path/kernel`` ``(in, out)`` (+ bias)."""
    return [Rule(f"{hf}.weight", f"{path}/kernel", TRANSPOSE), *_bias(hf, path, bias)]


def norm(hf: str, path: str, bias: bool = True) -> list[Rule]:
    """LayerNorm/RMSNorm ``hf.weight`` (+ ``hf.bias``) <-> ``path/scale`` (+ bias)."""
    return [Rule(f"{hf}.weight", f"{path}/scale"), *_bias(hf, path, bias)]


def conv(hf: str, path: str, bias: bool = True) -> list[Rule]:
    """PyTorch ``Conv{1,2,3}d`` ``(out, in, *k)`` <-> Flax kernel ``(*k, in, out)``."""
    return [Rule(f"{hf}.weight", f"{path}/kernel", CONV), *_bias(hf, path, bias)]


def qkvo(prefix: str, query: str, key: str, value: str, out: str,
         out_prefix: str | None = None) -> dict[str, str]:
    """The four attention projections' names: ``{"query": prefix + query, ...,
    "out": (out_prefix or prefix) + out}``."""
    out_prefix = prefix if out_prefix is None else out_prefix
    return {"query": prefix + query, "key": prefix + key, "value": prefix + value,
            "out": out_prefix + out}


def _attention(hf: Mapping[str, str], path: str, num_heads: int, kv_heads: int | None,
               bias: bool, out_bias: bool, zero_bias: Mapping[str, ZeroBias]) -> list[Rule]:
    """Four Linear layers (``hf``: role -> name) <-> a MultiHeadAttention subtree:
    query/key/value kernels ``(E, H, D)``, biases ``(H, D)``; out kernel ``(H, D, E)``."""
    rules = []
    for role in ("query", "key", "value", "out"):
        per_head = heads(0 if role == "out" else -1, num_heads if role in ("query", "out")
                         else kv_heads or num_heads)
        rules.append(Rule(f"{hf[role]}.weight", f"{path}/{role}/kernel",
                          chain(TRANSPOSE, per_head)))
        has_bias = zero_bias.get(f"{path}/{role}", out_bias if role == "out" else bias)
        rules += _bias(hf[role], f"{path}/{role}", has_bias,
                       IDENTITY if role == "out" else per_head)
    return rules


@dataclasses.dataclass(frozen=True)
class LayerNames:
    """A family's Hugging Face names for the parts of one transformer layer
    (relative to the layer's prefix); cross-attention only in decoders."""

    attention_norm: str
    self_attention: Mapping[str, str]
    mlp_norm: str
    mlp: Mapping[str, str]  # jaxmm name (wi, wi_0, wi_1, wo) -> HF Linear
    cross_attention_norm: str | None = None
    cross_attention: Mapping[str, str] | None = None


def transformer_layer(names: LayerNames, num_heads: int, kv_heads: int | None = None, *,
                      norm_bias: bool = True, bias: bool = True, out_bias: bool | None = None,
                      mlp_bias: bool | None = None,
                      zero_bias: Mapping[str, ZeroBias] | None = None) -> list[Rule]:
    """Rules for one transformer layer (paths relative to it).

    Args:
      names: the family's tensor names for the layer's parts.
      num_heads / kv_heads: query and key/value head counts.
      norm_bias, bias, out_bias, mlp_bias: which parts have biases (norms;
        query/key/value; attention output, default ``bias``; MLP, default ``bias``).
      zero_bias: module paths (``"self_attention/key"``, ``"mlp/wo"``) whose bias
        jaxmm has and Hugging Face lacks (Whisper's key, a Llama file with only
        MLP biases), with the bias shape: imported as zeros, dropped on export.
    """
    zero_bias = zero_bias or {}
    out_bias = bias if out_bias is None else out_bias

    def attn(hf: Mapping[str, str], path: str) -> list[Rule]:
        return _attention(hf, path, num_heads, kv_heads, bias, out_bias, zero_bias)

    rules = [*norm(names.attention_norm, "attention_norm", norm_bias),
             *attn(names.self_attention, "self_attention"),
             *norm(names.mlp_norm, "mlp_norm", norm_bias)]
    mlp_bias = bias if mlp_bias is None else mlp_bias
    for ours, theirs in names.mlp.items():
        rules += dense(theirs, f"mlp/{ours}", zero_bias.get(f"mlp/{ours}", mlp_bias))
    if names.cross_attention is not None:
        rules += [*norm(names.cross_attention_norm, "cross_attention_norm", norm_bias),
                  *attn(names.cross_attention, "cross_attention")]
    return rules
