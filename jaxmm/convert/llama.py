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

import numpy as np

from jaxmm.convert import Converter, register_converter
from jaxmm.convert.io import ConversionError, TensorStore
from jaxmm.convert.layers import (
    attention_from_hf,
    attention_to_hf,
    dense_from_hf,
    dense_to_hf,
    norm_from_hf,
    norm_to_hf,
)
from jaxmm.convert.params import (
    activation_from_hf,
    activation_to_hf,
    causal_lm_params,
    find_prefix,
    stack_layout,
    to_numpy_tree,
    unstack_layout,
)
from jaxmm.layers import RopeScaling
from jaxmm.models.gpt import GPTConfig, GPTLMHeadModel, GPTModel

__all__ = [
    "config_from_hf",
    "config_to_hf",
    "llama_incompatibilities",
    "load",
    "params_from_hf",
    "params_to_hf",
    "save",
]

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


def config_from_hf(hf: dict[str, Any], **overrides: Any) -> GPTConfig:
    """``LlamaConfig`` dict -> :class:`GPTConfig` (``overrides``: e.g. ``scan_layers``)."""
    where = "Llama config.json"
    d, heads = hf.get("hidden_size", 4096), hf.get("num_attention_heads", 32)
    rope_theta, rope_scaling = _rope(hf, where)
    attention_bias, mlp_bias = hf.get("attention_bias", False), hf.get("mlp_bias", False)
    head_dim = hf.get("head_dim")
    values = dict(
        vocab_size=hf.get("vocab_size", 32000),
        max_position_embeddings=hf.get("max_position_embeddings"),
        num_layers=hf.get("num_hidden_layers", 32),
        d_model=d,
        num_heads=heads,
        num_kv_heads=hf.get("num_key_value_heads") or heads,
        head_dim=None if head_dim in (None, d // heads) else head_dim,
        mlp_dim=hf.get("intermediate_size", 11008),
        activation=activation_from_hf(hf.get("hidden_act", "silu"), where),
        gated_mlp=True,
        norm="rmsnorm",
        norm_eps=hf.get("rms_norm_eps", 1e-6),
        # One flag in jaxmm: a checkpoint with only one kind of bias gets zeros for the other.
        use_bias=bool(attention_bias or mlp_bias),
        position_embedding="rope",
        rope_theta=rope_theta,
        rope_scaling=rope_scaling,
        tie_word_embeddings=hf.get("tie_word_embeddings", False),
        dropout_rate=0.0,
        attention_dropout_rate=float(hf.get("attention_dropout", 0.0)),
        initializer_range=hf.get("initializer_range", 0.02),
        bos_token_id=hf.get("bos_token_id"),
        eos_token_id=hf.get("eos_token_id"),
        pad_token_id=hf.get("pad_token_id"),
    )
    values.update(overrides)
    return GPTConfig.from_dict(values)


def llama_incompatibilities(cfg: GPTConfig) -> list[str]:
    """Settings of ``cfg`` that Hugging Face Llama cannot represent (empty if none)."""
    problems = []
    if cfg.position_embedding != "rope":
        problems.append(f"position_embedding={cfg.position_embedding!r} (Llama needs 'rope')")
    if cfg.rotary_dim not in (None, cfg.transformer.resolved_head_dim):
        problems.append(f"rotary_dim={cfg.rotary_dim} (Llama rotates the whole head)")
    if cfg.norm != "rmsnorm":
        problems.append(f"norm={cfg.norm!r} (Llama needs 'rmsnorm')")
    if not cfg.gated_mlp:
        problems.append("gated_mlp=False (Llama's MLP is gated)")
    if cfg.add_cross_attention:
        problems.append("add_cross_attention=True (Llama has no cross-attention)")
    return problems


def config_to_hf(cfg: GPTConfig) -> dict[str, Any]:
    """:class:`GPTConfig` -> ``LlamaConfig`` dict (transformers 4 and 5 keys)."""
    return dict(
        model_type="llama", vocab_size=cfg.vocab_size, hidden_size=cfg.d_model,
        intermediate_size=cfg.mlp_dim, num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads, num_key_value_heads=cfg.num_kv_heads or cfg.num_heads,
        head_dim=cfg.transformer.resolved_head_dim, hidden_act=activation_to_hf(cfg.activation),
        max_position_embeddings=cfg.max_position_embeddings or _DEFAULT_CONTEXT,
        rms_norm_eps=cfg.norm_eps, rope_theta=cfg.rope_theta, rope_parameters=_rope_to_hf(cfg),
        attention_bias=cfg.use_bias, mlp_bias=cfg.use_bias,
        attention_dropout=cfg.attention_dropout_rate, initializer_range=cfg.initializer_range,
        tie_word_embeddings=cfg.tie_word_embeddings, bos_token_id=cfg.bos_token_id,
        eos_token_id=cfg.eos_token_id, pad_token_id=cfg.pad_token_id,
    )


_ATTENTION = ("query", "q_proj"), ("key", "k_proj"), ("value", "v_proj"), ("out", "o_proj")
_MLP = ("wi_0", "gate_proj"), ("wi_1", "up_proj"), ("wo", "down_proj")


def _fill_biases(modules: dict, bias_shape) -> None:
    """Zero biases for projections a mixed-bias checkpoint lacks (jaxmm has one flag)."""
    for name, mod in modules.items():
        if "bias" not in mod:
            mod["bias"] = np.zeros(bias_shape(name, mod["kernel"]), np.float32)


def params_from_hf(store: TensorStore, cfg: GPTConfig, prefix: str = "",
                   hf_biases: tuple[bool, bool] | None = None) -> dict:
    """:class:`GPTModel` params from ``{prefix}embed_tokens.weight``, ``{prefix}layers.N...``.

    ``hf_biases``: the checkpoint's ``(attention_bias, mlp_bias)``; default both
    ``cfg.use_bias``.
    """
    attn_bias, mlp_bias = hf_biases or (cfg.use_bias, cfg.use_bias)
    store.ignore("rotary_emb.inv_freq")  # buffer saved by old transformers versions
    layers = {}
    for i in range(cfg.num_layers):
        p = f"{prefix}layers.{i}."
        attention = attention_from_hf(
            store, {ours: f"{p}self_attn.{theirs}" for ours, theirs in _ATTENTION},
            cfg.num_heads, cfg.num_kv_heads, bias=attn_bias)
        mlp = {ours: dense_from_hf(store, f"{p}mlp.{theirs}", bias=mlp_bias)
               for ours, theirs in _MLP}
        if cfg.use_bias:
            _fill_biases(attention, lambda n, k: k.shape[-1:] if n == "out" else k.shape[1:])
            _fill_biases(mlp, lambda n, k: k.shape[-1:])
        layers[f"layers_{i}"] = {"layer": {
            "attention_norm": norm_from_hf(store, p + "input_layernorm", bias=False),
            "self_attention": attention,
            "mlp_norm": norm_from_hf(store, p + "post_attention_layernorm", bias=False),
            "mlp": mlp,
        }}
    layers["final_norm"] = norm_from_hf(store, prefix + "norm", bias=False)
    return {
        "token_embedding": {"embedding": store.take(prefix + "embed_tokens.weight")},
        "decoder": stack_layout(layers, cfg.num_layers, cfg.scan_layers),
    }


def params_to_hf(params: dict, cfg: GPTConfig, prefix: str = "") -> dict[str, np.ndarray]:
    """Inverse of :func:`params_from_hf` (``params``: a :class:`GPTModel`'s)."""
    params = to_numpy_tree(params)
    stack = unstack_layout(params["decoder"], cfg.num_layers)
    out = {prefix + "embed_tokens.weight": params["token_embedding"]["embedding"],
           **norm_to_hf(stack["final_norm"], prefix + "norm")}
    for i in range(cfg.num_layers):
        layer, p = stack[f"layers_{i}"]["layer"], f"{prefix}layers.{i}."
        out.update(norm_to_hf(layer["attention_norm"], p + "input_layernorm"))
        out.update(norm_to_hf(layer["mlp_norm"], p + "post_attention_layernorm"))
        names = {ours: f"{p}self_attn.{theirs}" for ours, theirs in _ATTENTION}
        out.update(attention_to_hf(layer["self_attention"], names))
        for ours, theirs in _MLP:
            out.update(dense_to_hf(layer["mlp"][ours], f"{p}mlp.{theirs}"))
    return out


def load(hf_config: dict, store: TensorStore, *, with_head: bool | None = None,
         **overrides: Any) -> tuple[Any, dict]:
    """Builds a GPTLMHeadModel (or GPTModel) and its params from a Llama checkpoint.

    ``with_head``: None picks from the file (``model.`` prefix or a
    ``*ForCausalLM`` architecture -> LM); ``overrides`` replace config fields
    that do not change the weights (``scan_layers``, ``dtype``, ...).
    """
    cfg = config_from_hf(hf_config, **overrides)
    prefix = find_prefix(store, "embed_tokens.weight", ["", "model."])
    archs = hf_config.get("architectures") or []
    if with_head is None:
        with_head = prefix == "model." or any("CausalLM" in a for a in archs)
    hf_biases = (hf_config.get("attention_bias", False), hf_config.get("mlp_bias", False))
    params = causal_lm_params(store, params_from_hf(store, cfg, prefix, hf_biases),
                              with_head=with_head, tied=cfg.tie_word_embeddings,
                              embedding_name=f"{prefix}embed_tokens.weight")
    store.finish()
    return (GPTLMHeadModel(cfg) if with_head else GPTModel(cfg)), params


def save(model: Any, params: dict) -> tuple[dict, dict]:
    """GPTLMHeadModel/GPTModel -> (``LlamaConfig`` dict, tensors)."""
    cfg = model.config
    problems = llama_incompatibilities(cfg)
    if problems:
        raise ConversionError(
            "This GPT model can be exported neither as GPT-2 nor as Llama. Llama needs: "
            + "; ".join(problems)
        )
    params = to_numpy_tree(params)
    hf = config_to_hf(cfg)
    if isinstance(model, GPTLMHeadModel):
        tensors = params_to_hf(params["model"], cfg, "model.")
        if not cfg.tie_word_embeddings:
            tensors["lm_head.weight"] = np.ascontiguousarray(params["lm_head"]["kernel"].T)
        hf["architectures"] = ["LlamaForCausalLM"]
    else:
        tensors = params_to_hf(params, cfg)
        hf["architectures"] = ["LlamaModel"]
    return hf, tensors


def _handles(model: Any) -> bool:
    # Every GPT model that GPT-2 cannot hold; save() explains what Llama lacks.
    from jaxmm.convert.gpt2 import gpt2_incompatibilities

    return isinstance(model, GPTModel | GPTLMHeadModel) and bool(
        gpt2_incompatibilities(model.config))


CONVERTER = register_converter(Converter(("llama",), load, save, _handles))
