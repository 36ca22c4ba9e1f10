"""Hugging Face ``whisper`` <-> jaxmm Whisper (``WhisperModel``,
``WhisperForConditionalGeneration``).

HF ``k_proj`` layers have no bias; jaxmm's attention has one. Import fills it
with zeros, export drops it. Both are exact: a key bias adds ``q . b`` to every
logit of a query row, which softmax ignores. ``proj_out`` is tied to the token
embedding (not stored by HF); an untied checkpoint is refused by name.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from flax import linen as nn

from jaxmm.convert import ConversionError, Converter, TensorStore, register_converter
from jaxmm.convert.layers import (
    attention_from_hf,
    attention_to_hf,
    conv_from_hf,
    conv_to_hf,
    dense_from_hf,
    dense_to_hf,
    norm_from_hf,
    norm_to_hf,
)
from jaxmm.layers import stack_layer_params, unstack_layer_params
from jaxmm.models.whisper import WhisperConfig, WhisperForConditionalGeneration, WhisperModel

__all__ = ["config_from_hf", "config_to_hf"]

_FIELDS = {  # jaxmm name -> HF name
    "vocab_size": "vocab_size", "num_mel_bins": "num_mel_bins", "num_layers": "encoder_layers",
    "num_decoder_layers": "decoder_layers", "d_model": "d_model",
    "num_heads": "encoder_attention_heads", "num_decoder_heads": "decoder_attention_heads",
    "mlp_dim": "encoder_ffn_dim", "decoder_mlp_dim": "decoder_ffn_dim",
    "activation": "activation_function", "dropout_rate": "dropout",
    "attention_dropout_rate": "attention_dropout",
    "max_source_positions": "max_source_positions",
    "max_target_positions": "max_target_positions", "pad_token_id": "pad_token_id",
    "bos_token_id": "bos_token_id", "eos_token_id": "eos_token_id",
    "decoder_start_token_id": "decoder_start_token_id",
}
_ROLES = {"query": "q_proj", "key": "k_proj", "value": "v_proj", "out": "out_proj"}


def config_from_hf(hf: dict[str, Any], **overrides) -> WhisperConfig:
    values = {ours: hf[theirs] for ours, theirs in _FIELDS.items() if theirs in hf}
    values.update(overrides)
    return WhisperConfig.from_dict(values)


def config_to_hf(cfg: WhisperConfig, lm_head: bool) -> dict[str, Any]:
    out = {theirs: getattr(cfg, ours) for ours, theirs in _FIELDS.items()}
    out["decoder_attention_heads"] = cfg.num_decoder_heads or cfg.num_heads
    out["decoder_ffn_dim"] = cfg.decoder_mlp_dim or cfg.mlp_dim
    out.update(model_type="whisper", is_encoder_decoder=True, tie_word_embeddings=True,
               scale_embedding=False, activation_dropout=0.0,
               architectures=["WhisperForConditionalGeneration" if lm_head else "WhisperModel"])
    return out


def _attn_names(prefix: str) -> dict[str, str]:
    return {role: f"{prefix}.{hf}" for role, hf in _ROLES.items()}


def _layer_from_hf(store: TensorStore, lp: str, heads: int, decoder: bool) -> dict:
    layer = {
        "attention_norm": norm_from_hf(store, lp + "self_attn_layer_norm"),
        "self_attention": attention_from_hf(store, _attn_names(lp + "self_attn"), heads,
                                            zero_bias=("key",)),
        "mlp_norm": norm_from_hf(store, lp + "final_layer_norm"),
        "mlp": {"wi": dense_from_hf(store, lp + "fc1"), "wo": dense_from_hf(store, lp + "fc2")},
    }
    if decoder:
        layer["cross_attention_norm"] = norm_from_hf(store, lp + "encoder_attn_layer_norm")
        layer["cross_attention"] = attention_from_hf(store, _attn_names(lp + "encoder_attn"),
                                                     heads, zero_bias=("key",))
    return {"layer": layer}


def _layer_to_hf(layer: dict, lp: str) -> dict[str, np.ndarray]:
    layer = layer["layer"]
    out = norm_to_hf(layer["attention_norm"], lp + "self_attn_layer_norm")
    out.update(attention_to_hf(layer["self_attention"], _attn_names(lp + "self_attn"),
                               drop_bias=("key",)))
    out.update(norm_to_hf(layer["mlp_norm"], lp + "final_layer_norm"))
    out.update(dense_to_hf(layer["mlp"]["wi"], lp + "fc1"))
    out.update(dense_to_hf(layer["mlp"]["wo"], lp + "fc2"))
    if "cross_attention" in layer:
        out.update(norm_to_hf(layer["cross_attention_norm"], lp + "encoder_attn_layer_norm"))
        out.update(attention_to_hf(layer["cross_attention"], _attn_names(lp + "encoder_attn"),
                                   drop_bias=("key",)))
    return out


def _stack_from_hf(store, prefix, num, heads, decoder, scan) -> dict:
    stack = {f"layers_{i}": _layer_from_hf(store, f"{prefix}.layers.{i}.", heads, decoder)
             for i in range(num)}
    stack["final_norm"] = norm_from_hf(store, f"{prefix}.layer_norm")
    return stack_layer_params(stack, num) if scan else stack


def _stack_to_hf(stack, prefix, num, scan) -> dict[str, np.ndarray]:
    if scan:
        stack = unstack_layer_params(stack, num)
    out = norm_to_hf(stack["final_norm"], f"{prefix}.layer_norm")
    for i in range(num):
        out.update(_layer_to_hf(stack[f"layers_{i}"], f"{prefix}.layers.{i}."))
    return out


def _load(hf_config: dict, store: TensorStore, **options) -> tuple[Any, Any]:
    cfg = config_from_hf(hf_config, **options)
    with_prefix = "model.encoder.conv1.weight" in store
    p = "model." if with_prefix else ""
    lm_head = with_prefix or "WhisperForConditionalGeneration" in (
        hf_config.get("architectures") or [])
    if any(k.startswith(("classifier", "projector")) for k in store.keys()):
        raise ConversionError(
            "This is a WhisperForAudioClassification checkpoint; jaxmm imports WhisperModel and "
            "WhisperForConditionalGeneration. Use the encoder part with a jaxmm classifier head."
        )
    embed = store.take(f"{p}decoder.embed_tokens.weight")
    if "proj_out.weight" in store:
        proj = store.take("proj_out.weight")
        if embed.size and not np.array_equal(proj, embed):
            raise ConversionError(
                f"{store.source}: proj_out.weight differs from model.decoder.embed_tokens.weight; "
                "jaxmm Whisper ties the output projection to the token embedding."
            )
    params = {
        "encoder": {
            "conv1": conv_from_hf(store, f"{p}encoder.conv1"),
            "conv2": conv_from_hf(store, f"{p}encoder.conv2"),
            "position_embedding": store.take(f"{p}encoder.embed_positions.weight"),
            "encoder": _stack_from_hf(store, f"{p}encoder", cfg.num_layers, cfg.num_heads,
                                      False, cfg.scan_layers),
        },
        "decoder": {
            "embed_tokens": {"embedding": embed},
            "position_embedding": store.take(f"{p}decoder.embed_positions.weight"),
            "stack": _stack_from_hf(store, f"{p}decoder", cfg.num_decoder_layers,
                                    cfg.num_decoder_heads or cfg.num_heads, True,
                                    cfg.scan_layers),
        },
    }
    store.finish()
    model = WhisperForConditionalGeneration(cfg) if lm_head else WhisperModel(cfg)
    return model, params


def _save(model: Any, params: Any) -> tuple[dict, dict]:
    params = nn.meta.unbox(params)
    cfg = model.config
    lm_head = isinstance(model, WhisperForConditionalGeneration)
    p = "model." if lm_head else ""
    enc, dec = params["encoder"], params["decoder"]
    out = conv_to_hf(enc["conv1"], f"{p}encoder.conv1")
    out.update(conv_to_hf(enc["conv2"], f"{p}encoder.conv2"))
    out[f"{p}encoder.embed_positions.weight"] = np.asarray(enc["position_embedding"], np.float32)
    out.update(_stack_to_hf(enc["encoder"], f"{p}encoder", cfg.num_layers, cfg.scan_layers))
    out[f"{p}decoder.embed_tokens.weight"] = np.asarray(dec["embed_tokens"]["embedding"],
                                                        np.float32)
    out[f"{p}decoder.embed_positions.weight"] = np.asarray(dec["position_embedding"], np.float32)
    out.update(_stack_to_hf(dec["stack"], f"{p}decoder", cfg.num_decoder_layers,
                            cfg.scan_layers))
    return config_to_hf(cfg, lm_head), out


register_converter(Converter(
    model_types=("whisper",), load=_load, save=_save,
    handles=lambda m: isinstance(m, WhisperModel | WhisperForConditionalGeneration),
))
