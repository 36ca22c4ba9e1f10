"""Rules for the shared jaxmm layers <-> PyTorch ``nn.Linear`` / ``LayerNorm`` / conv.

Family tables describe *where* a layer lives; these builders return its rules
(:mod:`jaxmm.convert.rules`). PyTorch ``Linear.weight`` is ``(out, in)``, a
jaxmm ``Dense`` kernel ``(in, out)``; attention projections are ``(E, H, D)``
(query/key/value) and ``(H, D, E)`` (out); norms keep ``weight`` as ``scale``.

:func:`transformer_layer` takes a family's names for the parts of one
:class:`~jaxmm.layers.EncoderLayer` / ``DecoderLayer``::

    LayerNames(attention_norm="layernorm_before",
               self_attention=qkvo("attention.attention.", "query", "key", "value"),
               ...)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from jaxmm.convert.rules import CONV, TRANSPOSE, Chain, Heads, Rule, Transform, Zeros

__all__ = [
    "LayerNames",
    "attention",
    "conv",
    "dense",
    "norm",
    "qkvo",
    "transformer_layer",
]

# A bias that jaxmm has and Hugging Face lacks: imported as zeros of this shape.
ZeroBias = tuple[int, ...]


def _bias(hf: str, path: str, bias: bool | ZeroBias, transform: Transform | None = None
          ) -> list[Rule]:
    if isinstance(bias, tuple):
        return [Zeros(f"{path}/bias", shape=bias)]
    if not bias:
        return []
    return [Rule(f"{hf}.bias", f"{path}/bias", *(transform,) if transform else ())]


def dense(hf: str, path: str, bias: bool | ZeroBias = True) -> list[Rule]:
    """``hf.weight`` ``(out, in)`` (+ ``hf.bias``) <-> ``path/kernel`` ``(in, out)`` (+ bias)."""
    return [Rule(f"{hf}.weight", f"{path}/kernel", TRANSPOSE), *_bias(hf, path, bias)]


def norm(hf: str, path: str, bias: bool = True) -> list[Rule]:
    """LayerNorm/RMSNorm ``hf.weight`` (+ ``hf.bias``) <-> ``path/scale`` (+ bias)."""
    return [Rule(f"{hf}.weight", f"{path}/scale"), *_bias(hf, path, bias)]


def conv(hf: str, path: str, bias: bool = True) -> list[Rule]:
    """PyTorch ``Conv{1,2,3}d`` ``(out, in, *k)`` <-> Flax kernel ``(*k, in, out)``."""
    return [Rule(f"{hf}.weight", f"{path}/kernel", CONV), *_bias(hf, path, bias)]


def qkvo(prefix: str, *names: str) -> dict[str, str]:
    """``{"query": prefix + names[0], ...}`` for the four attention projections."""
    return {role: prefix + name for role, name in zip(("query", "key", "value", "out"), names)}


def attention(hf: Mapping[str, str], path: str, heads: int, kv_heads: int | None = None, *,
              bias: bool = True, out_bias: bool | None = None,
              zero_bias: Mapping[str, ZeroBias] | None = None) -> list[Rule]:
    """Four Linear layers <-> a :class:`~jaxmm.layers.MultiHeadAttention` subtree.

    Args:
      hf: Hugging Face prefixes for ``query``, ``key``, ``value``, ``out``.
      heads / kv_heads: query and key/value head counts.
      bias: whether query/key/value carry biases; ``out_bias`` (default
        ``bias``) for the output projection.
      zero_bias: roles whose bias Hugging Face lacks and jaxmm has (Whisper's
        key, a Llama file with only MLP biases), with the bias shape.
    """
    zero_bias = zero_bias or {}
    rules: list[Rule] = []
    for role in ("query", "key", "value"):
        split = Heads(-1, heads if role == "query" else kv_heads or heads)
        rules.append(Rule(f"{hf[role]}.weight", f"{path}/{role}/kernel",
                          Chain(TRANSPOSE, split)))
        rules += _bias(hf[role], f"{path}/{role}", zero_bias.get(role, bias), split)
    out = f"{path}/out"
    rules.append(Rule(f"{hf['out']}.weight", f"{out}/kernel", Chain(TRANSPOSE, Heads(0, heads))))
    return rules + _bias(hf["out"], out, zero_bias.get("out", bias if out_bias is None
                                                         else out_bias))


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


def transformer_layer(names: LayerNames, heads: int, kv_heads: int | None = None, *,
                      norm_bias: bool = True, bias: bool = True, out_bias: bool | None = None,
                      mlp_bias: bool | None = None,
                      zero_bias: Mapping[str, ZeroBias] | None = None) -> list[Rule]:
    """Rules for one pre/post-norm transformer layer (paths relative to it).

    ``zero_bias`` maps jaxmm module paths (``"self_attention/key"``,
    ``"mlp/wo"``) to the shape of a bias Hugging Face lacks.
    """
    zero_bias = zero_bias or {}

    def attn(hf: Mapping[str, str], path: str) -> list[Rule]:
        zeros = {k.split("/")[1]: v for k, v in zero_bias.items() if k.startswith(path + "/")}
        return attention(hf, path, heads, kv_heads, bias=bias, out_bias=out_bias,
                         zero_bias=zeros)

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
