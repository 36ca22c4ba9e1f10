"""Hugging Face T5 (``model_type="t5"``) <-> jaxmm :mod:`jaxmm.models.t5`.

Handles ``T5ForConditionalGeneration``, ``T5Model`` and ``T5EncoderModel``
(v1.0 ``relu`` and v1.1 / FLAN ``gated-gelu``). ``encoder.embed_tokens`` and
``decoder.embed_tokens`` are the shared embedding (absent or equal in files);
``lm_head.weight`` is absent when tied. The head is untied when the file holds
an ``lm_head.weight`` different from ``shared.weight``. Whether the decoder
output is rescaled by ``d_model**-0.5`` follows ``scale_decoder_outputs``
(transformers 5) or, in older files, ``tie_word_embeddings``.
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
    stack_layout,
    to_numpy_tree,
    unstack_layout,
)
from jaxmm.models.encoder_decoder import EncoderDecoderLM
from jaxmm.models.t5 import T5Config, T5EncoderModel, T5ForConditionalGeneration, T5Model

__all__ = ["config_from_hf", "config_to_hf", "load", "save", "t5_incompatibilities"]

_QKVO = {"query": "q", "key": "k", "value": "v", "out": "o"}


def _feed_forward(proj: str, where: str) -> tuple[str, bool]:
    """HF ``feed_forward_proj`` -> (jaxmm activation, gated)."""
    parts = proj.split("-")
    if len(parts) > 2 or (len(parts) == 2 and parts[0] != "gated"):
        raise ConversionError(f"{where}: feed_forward_proj {proj!r} is not 'ACT' or 'gated-ACT'.")
    gated = len(parts) == 2
    act = "gelu_new" if proj == "gated-gelu" else parts[-1]  # transformers' compatibility rule
    return activation_from_hf(act, where), gated


def config_from_hf(hf: dict[str, Any], **overrides: Any) -> T5Config:
    """``T5Config`` dict -> :class:`T5Config` (``overrides``: e.g. ``scan_layers``)."""
    where = "T5 config.json"
    activation, gated = _feed_forward(hf.get("feed_forward_proj", "relu"), where)
    d, heads = hf.get("d_model", 512), hf.get("num_heads", 8)
    d_kv = hf.get("d_kv", 64)
    tie = hf.get("tie_word_embeddings", True) is not False
    values = dict(
        vocab_size=hf.get("vocab_size", 32128), d_model=d,
        num_layers=hf.get("num_layers", 6), num_decoder_layers=hf.get("num_decoder_layers"),
        num_heads=heads, head_dim=None if d_kv * heads == d else d_kv,
        mlp_dim=hf.get("d_ff", 2048), activation=activation, gated_mlp=gated,
        norm="rmsnorm", norm_eps=hf.get("layer_norm_epsilon", 1e-6), norm_position="pre",
        use_bias=False, attention_scale=1.0, position_embedding="relative",
        relative_attention_num_buckets=hf.get("relative_attention_num_buckets", 32),
        relative_attention_max_distance=hf.get("relative_attention_max_distance", 128),
        tie_word_embeddings=tie,
        scale_decoder_outputs=hf.get("scale_decoder_outputs", tie),
        dropout_rate=hf.get("dropout_rate", 0.1),
        bos_token_id=hf.get("bos_token_id"), eos_token_id=hf.get("eos_token_id", 1),
        pad_token_id=hf.get("pad_token_id", 0),
        decoder_start_token_id=hf.get("decoder_start_token_id", hf.get("pad_token_id", 0)),
    )
    if values["num_decoder_layers"] == values["num_layers"]:
        values["num_decoder_layers"] = None
    values.update(overrides)
    return T5Config.from_dict(values)


def t5_incompatibilities(cfg: Any) -> list[str]:
    """Settings that Hugging Face T5 cannot represent (empty if none)."""
    wants = dict(position_embedding="relative", norm="rmsnorm", norm_position="pre",
                 use_bias=False, attention_scale=1.0, scale_embeddings=False)
    problems = [f"{k}={getattr(cfg, k)!r} (T5 needs {v!r})" for k, v in wants.items()
                if getattr(cfg, k) != v]
    if cfg.gated_mlp and cfg.activation == "gelu":
        problems.append("gated exact 'gelu' (T5's gated-gelu is the tanh GELU, 'gelu_tanh')")
    return problems


def config_to_hf(cfg: T5Config) -> dict[str, Any]:
    """:class:`T5Config` -> ``T5Config`` dict (transformers 4 and 5 keys)."""
    if cfg.gated_mlp:
        proj = "gated-gelu" if cfg.activation == "gelu_tanh" else f"gated-{cfg.activation}"
    else:
        proj = activation_to_hf(cfg.activation)
    return dict(
        model_type="t5", vocab_size=cfg.vocab_size, d_model=cfg.d_model,
        d_kv=cfg.transformer(decoder=False).resolved_head_dim, d_ff=cfg.mlp_dim,
        num_layers=cfg.num_layers, num_decoder_layers=cfg.num_decoder_layers or cfg.num_layers,
        num_heads=cfg.num_heads, relative_attention_num_buckets=cfg.relative_attention_num_buckets,
        relative_attention_max_distance=cfg.relative_attention_max_distance,
        dropout_rate=cfg.dropout_rate, layer_norm_epsilon=cfg.norm_eps, feed_forward_proj=proj,
        tie_word_embeddings=cfg.tie_word_embeddings,
        scale_decoder_outputs=cfg.rescale_decoder_outputs, is_encoder_decoder=True,
        bos_token_id=cfg.bos_token_id, eos_token_id=cfg.eos_token_id,
        pad_token_id=cfg.pad_token_id, decoder_start_token_id=cfg.decoder_start_token_id,
    )


def _mlp_names(cfg: T5Config) -> tuple[str, ...]:
    return ("wi_0", "wi_1", "wo") if cfg.gated_mlp else ("wi", "wo")


def _stack_from_hf(store: TensorStore, cfg: T5Config, side: str) -> dict:
    decoder = side == "decoder"
    num_layers = (cfg.num_decoder_layers or cfg.num_layers) if decoder else cfg.num_layers
    ff = 2 if decoder else 1
    layers = {}
    for i in range(num_layers):
        p = f"{side}.block.{i}.layer."
        layer = {
            "attention_norm": norm_from_hf(store, p + "0.layer_norm", bias=False),
            "self_attention": attention_from_hf(
                store, {k: f"{p}0.SelfAttention.{v}" for k, v in _QKVO.items()}, cfg.num_heads,
                bias=False),
            "mlp_norm": norm_from_hf(store, f"{p}{ff}.layer_norm", bias=False),
            "mlp": {n: dense_from_hf(store, f"{p}{ff}.DenseReluDense.{n}", bias=False)
                    for n in _mlp_names(cfg)},
        }
        if decoder:
            layer["cross_attention_norm"] = norm_from_hf(store, p + "1.layer_norm", bias=False)
            layer["cross_attention"] = attention_from_hf(
                store, {k: f"{p}1.EncDecAttention.{v}" for k, v in _QKVO.items()},
                cfg.num_heads, bias=False)
        layers[f"layers_{i}"] = {"layer": layer}
    layers["final_norm"] = norm_from_hf(store, f"{side}.final_layer_norm", bias=False)
    return {
        "relative_position_bias": {"embedding": store.take(
            f"{side}.block.0.layer.0.SelfAttention.relative_attention_bias.weight")},
        "stack": stack_layout(layers, num_layers, cfg.scan_layers),
    }


def _stack_to_hf(params: dict, cfg: T5Config, side: str) -> dict[str, np.ndarray]:
    decoder = side == "decoder"
    num_layers = (cfg.num_decoder_layers or cfg.num_layers) if decoder else cfg.num_layers
    stack = unstack_layout(params["stack"], num_layers)
    ff = 2 if decoder else 1
    out = {f"{side}.block.0.layer.0.SelfAttention.relative_attention_bias.weight":
           params["relative_position_bias"]["embedding"],
           **norm_to_hf(stack["final_norm"], f"{side}.final_layer_norm")}
    for i in range(num_layers):
        layer, p = stack[f"layers_{i}"]["layer"], f"{side}.block.{i}.layer."
        out.update(norm_to_hf(layer["attention_norm"], p + "0.layer_norm"))
        out.update(attention_to_hf(layer["self_attention"],
                                   {k: f"{p}0.SelfAttention.{v}" for k, v in _QKVO.items()}))
        out.update(norm_to_hf(layer["mlp_norm"], f"{p}{ff}.layer_norm"))
        for n in _mlp_names(cfg):
            out.update(dense_to_hf(layer["mlp"][n], f"{p}{ff}.DenseReluDense.{n}"))
        if decoder:
            out.update(norm_to_hf(layer["cross_attention_norm"], p + "1.layer_norm"))
            out.update(attention_to_hf(layer["cross_attention"], {
                k: f"{p}1.EncDecAttention.{v}" for k, v in _QKVO.items()}))
    return out


def load(hf_config: dict, store: TensorStore, *, kind: str | None = None,
         **overrides: Any) -> tuple[Any, dict]:
    """Builds a T5 model and its params from a Hugging Face T5 checkpoint.

    ``kind``: ``"lm"``, ``"model"`` (no head) or ``"encoder"``; by default
    from ``architectures`` (and the presence of decoder/head tensors).
    """
    if "shared.weight" not in store:
        raise ConversionError(f"{store.source}: no shared.weight; not a T5 checkpoint.")
    archs = " ".join(hf_config.get("architectures") or [])
    if kind is None:
        if "EncoderModel" in archs or "decoder.final_layer_norm.weight" not in store:
            kind = "encoder"
        elif "T5Model" in archs:
            kind = "model"
        else:
            kind = "lm"
    if kind not in ("lm", "model", "encoder"):
        raise ConversionError(f"kind must be 'lm', 'model' or 'encoder'; got {kind!r}.")
    shared = store.take("shared.weight")
    head = store.take_optional("lm_head.weight") if kind == "lm" else None
    untied = head is not None and not np.array_equal(head, shared)
    if untied:
        overrides.setdefault("tie_word_embeddings", False)
    elif kind == "lm":
        overrides.setdefault("tie_word_embeddings", True)
    cfg = config_from_hf(hf_config, **overrides)
    for side in ("encoder", "decoder"):
        emb = store.take_optional(f"{side}.embed_tokens.weight")
        if emb is not None and not np.array_equal(emb, shared):
            raise ConversionError(f"{store.source}: {side}.embed_tokens.weight differs from "
                                  "shared.weight; jaxmm T5 shares one embedding.")
    store.ignore("EncDecAttention.relative_attention_bias")  # unused in Hugging Face too
    params = {"shared": {"embedding": shared}, "encoder": _stack_from_hf(store, cfg, "encoder")}
    if kind == "encoder":
        for key in [k for k in store.keys() if k.startswith(("decoder.", "lm_head."))]:
            store.ignore(key)  # an encoder taken from a full checkpoint
    else:
        params["decoder"] = _stack_from_hf(store, cfg, "decoder")
    if untied:
        params["lm_head"] = {"kernel": np.ascontiguousarray(head.T)}
    store.finish()
    model_cls = {"lm": T5ForConditionalGeneration, "model": T5Model,
                 "encoder": T5EncoderModel}[kind]
    return model_cls(cfg), params


def save(model: Any, params: dict) -> tuple[dict, dict]:
    """T5 model -> (``T5Config`` dict, tensors)."""
    cfg = model.config
    problems = t5_incompatibilities(cfg)
    if problems:
        raise ConversionError("This model cannot be exported as T5: " + "; ".join(problems))
    params = to_numpy_tree(params)
    hf = config_to_hf(cfg)
    tensors = {"shared.weight": params["shared"]["embedding"],
               **_stack_to_hf(params["encoder"], cfg, "encoder")}
    if isinstance(model, T5EncoderModel):
        hf["architectures"] = ["T5EncoderModel"]
        return hf, tensors
    tensors.update(_stack_to_hf(params["decoder"], cfg, "decoder"))
    if model.has_lm_head:
        hf["architectures"] = ["T5ForConditionalGeneration"]
        if not cfg.tie_word_embeddings:
            tensors["lm_head.weight"] = np.ascontiguousarray(params["lm_head"]["kernel"].T)
    else:
        hf["architectures"] = ["T5Model"]
    return hf, tensors


def _handles(model: Any) -> bool:
    return isinstance(model, EncoderDecoderLM | T5EncoderModel)


CONVERTER = register_converter(Converter(("t5",), load, save, _handles))
