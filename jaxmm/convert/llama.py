"""Hugging Face Llama (``model_type="llama"``) <-> jaxmm :mod:`jaxmm.models.gpt`.

Handles ``LlamaModel`` (no prefix) and ``LlamaForCausalLM`` (``model.`` prefix
plus ``lm_head.weight``, absent when tied).

RoPE layout: Hugging Face Llama checkpoints are stored for the "rotate half"
convention (feature ``i`` pairs with ``i + D/2``; Meta's original interleaved
weights were permuted once by transformers' conversion script). jaxmm's
``apply_rotary_embedding(interleaved=False)`` is the same convention with the
same frequencies ``theta^(-2i/D)``, so q/k projections are copied as they are,
only reshaped ``(H*D, E) -> (E, H, D)``: no permutation in either direction.

RoPE types ``default``, ``linear`` and ``llama3`` (Llama 3.1+) are supported;
others (``dynamic``, ``yarn``, ...) are refused with a clear error.
"""

from __future__ import annotations

from typing import Any

from jaxmm.convert import Converter, fields, register_converter
from jaxmm.convert.io import ConversionError, TensorStore
from jaxmm.convert.layers import LayerNames, norm, qkvo, transformer_layer
from jaxmm.convert.params import CausalLMFormat, load_causal_lm, save_causal_lm
from jaxmm.convert.rules import Rule, Table, stack
from jaxmm.layers import RopeScaling
from jaxmm.models.gpt import GPTConfig, GPTLMHeadModel, GPTModel

__all__ = ["FORMAT", "config_from_hf", "config_to_hf", "llama_incompatibilities", "load", "save",
           "tensor_table"]

FORMAT = CausalLMFormat(anchor="embed_tokens.weight", lm_prefix="model.", lm_marker="CausalLM",
                        architectures=("LlamaForCausalLM", "LlamaModel"))

# The context length written to config.json for a RoPE model without one.
_DEFAULT_CONTEXT = 2048


def _rope(hf: dict[str, Any], where: str) -> tuple[float, RopeScaling | None]:
    """RoPE base and scaling from ``rope_parameters`` (transformers 5) or the older
    ``rope_theta`` / ``rope_scaling`` keys."""
    rope = dict(hf.get("rope_scaling") or {})
    rope.update(hf.get("rope_parameters") or {})
    rope_type = rope.get("rope_type") or rope.get("type") or "default"
    if rope.get("partial_rotary_factor", hf.get("partial_rotary_factor", 1.0)) != 1.0:
        raise ConversionError(f"{where}: partial_rotary_factor != 1 is not supported for llama.")
    theta = float(rope.get("rope_theta", hf.get("rope_theta", 10000.0)))
    if rope_type == "default":
        return theta, None
    if rope_type == "linear":
        return theta, RopeScaling("linear", float(rope["factor"]))
    if rope_type == "llama3":
        return theta, RopeScaling(
            "llama3", float(rope["factor"]), float(rope["low_freq_factor"]),
            float(rope["high_freq_factor"]),
            int(rope.get("original_max_position_embeddings")
                or hf.get("max_position_embeddings")))
    raise ConversionError(
        f"{where}: rope_type {rope_type!r} is not supported; supported: default, linear, llama3."
    )


def _rope_to_hf(cfg: GPTConfig) -> dict[str, Any]:
    params: dict[str, Any] = {"rope_type": "default", "rope_theta": cfg.rope_theta}
    scaling = cfg.rope_scaling
    if scaling is not None:
        params.update(rope_type=scaling.rope_type, factor=scaling.factor)
        if scaling.rope_type == "llama3":
            params.update(low_freq_factor=scaling.low_freq_factor,
                          high_freq_factor=scaling.high_freq_factor,
                          original_max_position_embeddings=(
                              scaling.original_max_position_embeddings))
    return params


# Fixed in Llama: set on import, required on export.
_NEEDS = dict(position_embedding="rope", norm="rmsnorm", gated_mlp=True, add_cross_attention=False)
_FIELDS = fields.FieldMap(
    ("vocab_size", "vocab_size", 32000),
    ("max_position_embeddings", "max_position_embeddings", None),
    ("num_layers", "num_hidden_layers", 32), ("d_model", "hidden_size", 4096),
    ("num_heads", "num_attention_heads", 32), ("mlp_dim", "intermediate_size", 11008),
    ("norm_eps", "rms_norm_eps", 1e-6), ("tie_word_embeddings", "tie_word_embeddings", False),
    ("initializer_range", "initializer_range", 0.02), *fields.TOKEN_IDS,
)


def config_from_hf(hf: dict[str, Any], **overrides: Any) -> GPTConfig:
    """``LlamaConfig`` dict -> :class:`GPTConfig` (``overrides``: e.g. ``scan_layers``)."""
    where = "Llama config.json"
    values = _FIELDS.from_hf(hf)
    d, heads, head_dim = values["d_model"], values["num_heads"], hf.get("head_dim")
    rope_theta, rope_scaling = _rope(hf, where)
    values.update(
        num_kv_heads=hf.get("num_key_value_heads") or heads,
        head_dim=None if head_dim in (None, d // heads) else head_dim,
        activation=fields.activation_from_hf(hf.get("hidden_act", "silu"), where),
        **_NEEDS,
        # One flag in jaxmm: a checkpoint with only one kind of bias gets zeros for the other.
        use_bias=bool(hf.get("attention_bias", False) or hf.get("mlp_bias", False)),
        rope_theta=rope_theta, rope_scaling=rope_scaling, dropout_rate=0.0,
        attention_dropout_rate=float(hf.get("attention_dropout", 0.0)))
    values.update(overrides)
    return GPTConfig.from_dict(values)


def llama_incompatibilities(cfg: GPTConfig) -> list[str]:
    """Settings of ``cfg`` that Hugging Face Llama cannot represent (empty if none)."""
    problems = fields.unsupported(cfg, "Llama", **_NEEDS)
    if cfg.rotary_dim not in (None, cfg.transformer.resolved_head_dim):
        problems.append(f"rotary_dim={cfg.rotary_dim} (Llama rotates the whole head)")
    return problems


def config_to_hf(cfg: GPTConfig) -> dict[str, Any]:
    """:class:`GPTConfig` -> ``LlamaConfig`` dict (transformers 4 and 5 keys)."""
    return dict(
        _FIELDS.to_hf(cfg), model_type="llama", num_key_value_heads=cfg.num_kv_heads or
        cfg.num_heads, head_dim=cfg.transformer.resolved_head_dim,
        hidden_act=fields.activation_to_hf(cfg.activation),
        max_position_embeddings=cfg.max_position_embeddings or _DEFAULT_CONTEXT,
        rope_theta=cfg.rope_theta, rope_parameters=_rope_to_hf(cfg),
        attention_bias=cfg.use_bias, mlp_bias=cfg.use_bias,
        attention_dropout=cfg.attention_dropout_rate,
    )


_LAYER = LayerNames(
    attention_norm="input_layernorm", mlp_norm="post_attention_layernorm",
    self_attention=qkvo("self_attn.", "q_proj", "k_proj", "v_proj", "o_proj"),
    mlp={"wi_0": "mlp.gate_proj", "wi_1": "mlp.up_proj", "wo": "mlp.down_proj"})


def _zero_biases(cfg: GPTConfig, attention_bias: bool, mlp_bias: bool) -> dict:
    """Zero biases for the projections a mixed-bias checkpoint lacks (jaxmm has one flag)."""
    if not cfg.use_bias:
        return {}
    heads, kv_heads = cfg.num_heads, cfg.num_kv_heads or cfg.num_heads
    head_dim = cfg.transformer.resolved_head_dim
    zeros = {}
    if not attention_bias:
        zeros.update({"self_attention/query": (heads, head_dim), "self_attention/out": (
            cfg.d_model,), "self_attention/key": (kv_heads, head_dim),
            "self_attention/value": (kv_heads, head_dim)})
    if not mlp_bias:
        zeros.update({"mlp/wi_0": (cfg.mlp_dim,), "mlp/wi_1": (cfg.mlp_dim,),
                      "mlp/wo": (cfg.d_model,)})
    return zeros


def tensor_table(cfg: GPTConfig, hf_biases: tuple[bool, bool] | None = None) -> Table:
    """Llama tensors (``embed_tokens.weight``, ``layers.N...``) <-> :class:`GPTModel` params.

    ``hf_biases``: the checkpoint's ``(attention_bias, mlp_bias)``; default both
    ``cfg.use_bias``.
    """
    attention_bias, mlp_bias = hf_biases or (cfg.use_bias, cfg.use_bias)
    layer = transformer_layer(_LAYER, cfg.num_heads, cfg.num_kv_heads, norm_bias=False,
                              bias=attention_bias, mlp_bias=mlp_bias,
                              zero_bias=_zero_biases(cfg, attention_bias, mlp_bias))
    return Table.of(
        Rule("embed_tokens.weight", "token_embedding/embedding"),
        stack("layers.{i}.", "decoder", cfg.num_layers, cfg.scan_layers, layer),
        norm("norm", "decoder/final_norm", bias=False),
        ignore=(r"rotary_emb\.inv_freq",))  # buffer saved by old transformers versions


def load(hf_config: dict, store: TensorStore, *, with_head: bool | None = None,
         **overrides: Any) -> tuple[Any, dict]:
    """Builds a GPTLMHeadModel (or GPTModel) and its params from a Llama checkpoint.

    ``with_head``: None picks from the file (``model.`` prefix or a
    ``*ForCausalLM`` architecture -> LM); ``overrides`` replace config fields
    that do not change the weights (``scan_layers``, ``dtype``, ...).
    """
    cfg = config_from_hf(hf_config, **overrides)
    hf_biases = (hf_config.get("attention_bias", False), hf_config.get("mlp_bias", False))
    return load_causal_lm(FORMAT, hf_config, store, cfg, tensor_table(cfg, hf_biases), with_head)


def save(model: Any, params: dict) -> tuple[dict, dict]:
    """GPTLMHeadModel/GPTModel -> (``LlamaConfig`` dict, tensors)."""
    problems = llama_incompatibilities(model.config)
    if problems:
        raise ConversionError(
            "This GPT model can be exported neither as GPT-2 nor as Llama. Llama needs: "
            + "; ".join(problems)
        )
    tensors, arch = save_causal_lm(FORMAT, model, params, tensor_table(model.config))
    return dict(config_to_hf(model.config), architectures=[arch]), tensors


def _handles(model: Any) -> bool:
    # Every GPT model that GPT-2 cannot hold; save() explains what Llama lacks.
    from jaxmm.convert.gpt2 import gpt2_incompatibilities

    return isinstance(model, GPTModel | GPTLMHeadModel) and bool(
        gpt2_incompatibilities(model.config))


CONVERTER = register_converter(Converter(("llama",), load, save, _handles))
