"""Hugging Face GPT-2 (``model_type="gpt2"``) <-> jaxmm :mod:`jaxmm.models.gpt`.

Handles ``GPT2Model`` (no prefix), ``GPT2LMHeadModel`` (``transformer.`` prefix;
``lm_head.weight`` is tied to ``wte`` and absent from the file) and any other
prefix through :func:`params_from_hf` (e.g. ``decoder.transformer.`` inside a
VisionEncoderDecoder). GPT-2 uses ``Conv1D`` layers whose weights are stored
``(in, out)``, already the Flax kernel layout, so unlike ``nn.Linear`` they are
not transposed; ``c_attn`` packs query, key and value along the output axis.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np

from jaxmm.convert import Converter, register_converter
from jaxmm.convert.io import ConversionError, TensorStore
from jaxmm.convert.layers import norm_from_hf, norm_to_hf
from jaxmm.convert.params import (
    activation_from_hf,
    activation_to_hf,
    causal_lm_params,
    find_prefix,
    stack_layout,
    to_numpy_tree,
    unstack_layout,
)
from jaxmm.models.gpt import GPTConfig, GPTLMHeadModel, GPTModel

__all__ = [
    "config_from_hf",
    "config_to_hf",
    "gpt2_incompatibilities",
    "load",
    "params_from_hf",
    "params_to_hf",
    "save",
]

_BUFFERS = re.compile(r"(^|\.)h\.\d+\.(attn|crossattention)\.(bias|masked_bias)$")


def config_from_hf(hf: dict[str, Any], **overrides: Any) -> GPTConfig:
    """``GPT2Config`` dict -> :class:`GPTConfig` (``overrides``: e.g. ``scan_layers``)."""
    where = "GPT-2 config.json"
    if hf.get("scale_attn_by_inverse_layer_idx"):
        raise ConversionError(f"{where}: scale_attn_by_inverse_layer_idx=True is not supported.")
    if hf.get("scale_attn_weights") is False:
        raise ConversionError(f"{where}: scale_attn_weights=False is not supported.")
    d = hf.get("n_embd", 768)
    values = dict(
        vocab_size=hf.get("vocab_size", 50257),
        max_position_embeddings=hf.get("n_positions", 1024),
        num_layers=hf.get("n_layer", 12),
        d_model=d,
        num_heads=hf.get("n_head", 12),
        mlp_dim=hf.get("n_inner") or 4 * d,
        activation=activation_from_hf(hf.get("activation_function", "gelu_new"), where),
        norm="layernorm",
        norm_eps=hf.get("layer_norm_epsilon", 1e-5),
        use_bias=True,
        position_embedding="learned",
        tie_word_embeddings=hf.get("tie_word_embeddings", True),
        add_cross_attention=hf.get("add_cross_attention", False),
        dropout_rate=hf.get("resid_pdrop", 0.1),
        attention_dropout_rate=hf.get("attn_pdrop", 0.1),
        initializer_range=hf.get("initializer_range", 0.02),
        bos_token_id=hf.get("bos_token_id"),
        eos_token_id=hf.get("eos_token_id"),
        pad_token_id=hf.get("pad_token_id"),
    )
    values.update(overrides)
    return GPTConfig.from_dict(values)


def gpt2_incompatibilities(cfg: GPTConfig) -> list[str]:
    """Settings of ``cfg`` that Hugging Face GPT-2 cannot represent (empty if none)."""
    problems = []
    if cfg.position_embedding != "learned":
        problems.append(f"position_embedding={cfg.position_embedding!r} (GPT-2 needs 'learned')")
    if cfg.norm != "layernorm":
        problems.append(f"norm={cfg.norm!r} (GPT-2 needs 'layernorm')")
    if not cfg.use_bias:
        problems.append("use_bias=False (GPT-2 has biases)")
    if cfg.gated_mlp:
        problems.append("gated_mlp=True")
    if (cfg.num_kv_heads or cfg.num_heads) != cfg.num_heads:
        problems.append(f"num_kv_heads={cfg.num_kv_heads} (GPT-2 has no grouped-query attention)")
    if cfg.head_dim not in (None, cfg.d_model // cfg.num_heads):
        problems.append(f"head_dim={cfg.head_dim} (GPT-2 needs d_model // num_heads)")
    return problems


def config_to_hf(cfg: GPTConfig) -> dict[str, Any]:
    """:class:`GPTConfig` -> ``GPT2Config`` dict."""
    return dict(
        model_type="gpt2", vocab_size=cfg.vocab_size, n_positions=cfg.max_position_embeddings,
        n_embd=cfg.d_model, n_layer=cfg.num_layers, n_head=cfg.num_heads, n_inner=cfg.mlp_dim,
        activation_function=activation_to_hf(cfg.activation), layer_norm_epsilon=cfg.norm_eps,
        resid_pdrop=cfg.dropout_rate, embd_pdrop=cfg.dropout_rate,
        attn_pdrop=cfg.attention_dropout_rate, initializer_range=cfg.initializer_range,
        tie_word_embeddings=cfg.tie_word_embeddings, add_cross_attention=cfg.add_cross_attention,
        scale_attn_weights=True, bos_token_id=cfg.bos_token_id, eos_token_id=cfg.eos_token_id,
        pad_token_id=cfg.pad_token_id,
    )


def _split_heads(w: np.ndarray, parts: int, heads: int) -> list[np.ndarray]:
    """Conv1D ``(in, parts*E)`` (or bias) -> ``parts`` arrays ``(in, H, D)`` (or ``(H, D)``)."""
    chunks = np.split(w, parts, axis=-1)
    return [c.reshape(c.shape[:-1] + (heads, c.shape[-1] // heads)) for c in chunks]


def _attention_from_hf(store: TensorStore, p: str, heads: int, cross: bool) -> dict:
    names = ("key", "value") if cross else ("query", "key", "value")
    kernels = _split_heads(store.take(p + "c_attn.weight"), len(names), heads)
    biases = _split_heads(store.take(p + "c_attn.bias"), len(names), heads)
    out = {n: {"kernel": k, "bias": b} for n, k, b in zip(names, kernels, biases)}
    if cross:
        (k,), (b,) = (_split_heads(store.take(p + "q_attn." + n), 1, heads)
                      for n in ("weight", "bias"))
        out["query"] = {"kernel": k, "bias": b}
    w = store.take(p + "c_proj.weight")
    out["out"] = {"kernel": w.reshape(heads, -1, w.shape[-1]),
                  "bias": store.take(p + "c_proj.bias")}
    return out


def _conv1d(store: TensorStore, p: str) -> dict:
    """GPT-2 ``Conv1D`` weight is already ``(in, out)``: no transpose."""
    return {"kernel": store.take(p + "weight"), "bias": store.take(p + "bias")}


def params_from_hf(store: TensorStore, cfg: GPTConfig, prefix: str = "") -> dict:
    """:class:`GPTModel` params from ``{prefix}wte.weight``, ``{prefix}h.N...``."""
    for key in [k for k in store.keys() if _BUFFERS.search(k)]:
        store.ignore(key)  # causal-mask buffers saved by old transformers versions
    layers = {}
    for i in range(cfg.num_layers):
        p = f"{prefix}h.{i}."
        layer = {
            "attention_norm": norm_from_hf(store, p + "ln_1"),
            "self_attention": _attention_from_hf(store, p + "attn.", cfg.num_heads, False),
            "mlp_norm": norm_from_hf(store, p + "ln_2"),
            "mlp": {"wi": _conv1d(store, p + "mlp.c_fc."), "wo": _conv1d(store, p + "mlp.c_proj.")},
        }
        if cfg.add_cross_attention:
            layer["cross_attention_norm"] = norm_from_hf(store, p + "ln_cross_attn")
            layer["cross_attention"] = _attention_from_hf(store, p + "crossattention.",
                                                          cfg.num_heads, True)
        layers[f"layers_{i}"] = {"layer": layer}
    layers["final_norm"] = norm_from_hf(store, prefix + "ln_f")
    return {
        "token_embedding": {"embedding": store.take(prefix + "wte.weight")},
        "position_embedding": {"embedding": store.take(prefix + "wpe.weight")},
        "decoder": stack_layout(layers, cfg.num_layers, cfg.scan_layers),
    }


def _attention_to_hf(a: dict, p: str, cross: bool) -> dict[str, np.ndarray]:
    flat = lambda k: k.reshape(k.shape[:-2] + (-1,))  # noqa: E731
    names = ("key", "value") if cross else ("query", "key", "value")
    out = {
        p + "c_attn.weight": np.concatenate([flat(a[n]["kernel"]) for n in names], axis=-1),
        p + "c_attn.bias": np.concatenate([flat(a[n]["bias"]) for n in names], axis=-1),
        p + "c_proj.weight": a["out"]["kernel"].reshape(-1, a["out"]["kernel"].shape[-1]),
        p + "c_proj.bias": a["out"]["bias"],
    }
    if cross:
        out[p + "q_attn.weight"] = flat(a["query"]["kernel"])
        out[p + "q_attn.bias"] = flat(a["query"]["bias"])
    return out


def params_to_hf(params: dict, cfg: GPTConfig, prefix: str = "") -> dict[str, np.ndarray]:
    """Inverse of :func:`params_from_hf` (``params``: a :class:`GPTModel`'s)."""
    params = to_numpy_tree(params)
    stack = unstack_layout(params["decoder"], cfg.num_layers)
    conv1d = lambda d, p: {p + "weight": d["kernel"], p + "bias": d["bias"]}  # noqa: E731
    out = {
        prefix + "wte.weight": params["token_embedding"]["embedding"],
        prefix + "wpe.weight": params["position_embedding"]["embedding"],
        **norm_to_hf(stack["final_norm"], prefix + "ln_f"),
    }
    for i in range(cfg.num_layers):
        layer, p = stack[f"layers_{i}"]["layer"], f"{prefix}h.{i}."
        out.update(norm_to_hf(layer["attention_norm"], p + "ln_1"))
        out.update(_attention_to_hf(layer["self_attention"], p + "attn.", False))
        out.update(norm_to_hf(layer["mlp_norm"], p + "ln_2"))
        out.update(conv1d(layer["mlp"]["wi"], p + "mlp.c_fc."))
        out.update(conv1d(layer["mlp"]["wo"], p + "mlp.c_proj."))
        if cfg.add_cross_attention:
            out.update(norm_to_hf(layer["cross_attention_norm"], p + "ln_cross_attn"))
            out.update(_attention_to_hf(layer["cross_attention"], p + "crossattention.", True))
    return out


def load(hf_config: dict, store: TensorStore, *, with_head: bool | None = None,
         **overrides: Any) -> tuple[Any, dict]:
    """Builds a GPTLMHeadModel (or GPTModel) and its params from a GPT-2 checkpoint.

    ``with_head``: None picks from the file (``transformer.`` prefix or an
    ``*LMHeadModel`` architecture -> LM); ``overrides`` replace config fields
    that do not change the weights (``scan_layers``, ``dtype``, ``remat_policy``...).
    """
    cfg = config_from_hf(hf_config, **overrides)
    prefix = find_prefix(store, "wte.weight", ["", "transformer."])
    archs = hf_config.get("architectures") or []
    if with_head is None:
        with_head = prefix == "transformer." or any("LMHead" in a for a in archs)
    params = causal_lm_params(store, params_from_hf(store, cfg, prefix), with_head=with_head,
                              tied=cfg.tie_word_embeddings, embedding_name="wte.weight")
    store.finish()
    return (GPTLMHeadModel(cfg) if with_head else GPTModel(cfg)), params


def save(model: Any, params: dict) -> tuple[dict, dict]:
    """GPTLMHeadModel/GPTModel -> (``GPT2Config`` dict, tensors)."""
    cfg = model.config
    problems = gpt2_incompatibilities(cfg)
    if problems:
        raise ConversionError("This GPT model cannot be exported as GPT-2: " + "; ".join(problems))
    params = to_numpy_tree(params)
    hf = config_to_hf(cfg)
    if isinstance(model, GPTLMHeadModel):
        tensors = params_to_hf(params["model"], cfg, "transformer.")
        if not cfg.tie_word_embeddings:
            tensors["lm_head.weight"] = np.ascontiguousarray(params["lm_head"]["kernel"].T)
        hf["architectures"] = ["GPT2LMHeadModel"]
    else:
        tensors = params_to_hf(params, cfg)
        hf["architectures"] = ["GPT2Model"]
    return hf, tensors


def _handles(model: Any) -> bool:
    return isinstance(model, GPTModel | GPTLMHeadModel) and not gpt2_incompatibilities(
        model.config)


CONVERTER = register_converter(Converter(("gpt2",), load, save, _handles))
