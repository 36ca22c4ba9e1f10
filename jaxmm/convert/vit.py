"""Hugging Face ``vit`` <-> jaxmm ViT (``ViTModel``, ``ViTForImageClassification``).

HF pixel values are NCHW; jaxmm images are NHWC (transpose inputs, not weights:
the patch-embedding conv kernel ``(D, C, p, p)`` becomes ``(p, p, C, D)``).
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
from jaxmm.models.vit import ViTConfig, ViTForImageClassification, ViTModel

__all__ = ["config_from_hf", "config_to_hf", "vit_params_from_hf", "vit_params_to_hf"]

_ATTN = {
    "query": "attention.attention.query", "key": "attention.attention.key",
    "value": "attention.attention.value", "out": "attention.output.dense",
}


def _size(value: Any) -> int | tuple[int, int]:
    if isinstance(value, list | tuple):
        return int(value[0]) if value[0] == value[1] else (int(value[0]), int(value[1]))
    return int(value)


def _patch(value: Any) -> int:
    size = _size(value)
    if not isinstance(size, int):
        raise ConversionError(f"Non-square patch_size={value} is not supported by jaxmm ViT.")
    return size


def config_from_hf(hf: dict[str, Any], **overrides) -> ViTConfig:
    """``config.json`` of a ``vit`` model -> :class:`ViTConfig` (plus overrides)."""
    pooler_dim = hf.get("pooler_output_size") or hf["hidden_size"]
    if pooler_dim != hf["hidden_size"]:
        raise ConversionError(
            f"pooler_output_size={pooler_dim} differs from hidden_size={hf['hidden_size']}; "
            "jaxmm ViT's pooler keeps the width."
        )
    values = dict(
        image_size=_size(hf.get("image_size", 224)),
        patch_size=_patch(hf.get("patch_size", 16)),
        num_channels=hf.get("num_channels", 3),
        num_layers=hf["num_hidden_layers"],
        d_model=hf["hidden_size"],
        num_heads=hf["num_attention_heads"],
        mlp_dim=hf["intermediate_size"],
        activation=hf.get("hidden_act", "gelu"),
        norm_eps=hf.get("layer_norm_eps", 1e-12),
        dropout_rate=hf.get("hidden_dropout_prob", 0.0),
        attention_dropout_rate=hf.get("attention_probs_dropout_prob", 0.0),
        qkv_bias=hf.get("qkv_bias", True),
        pooler_act=hf.get("pooler_act", "tanh"),
        num_labels=len(hf.get("id2label") or {}) or hf.get("num_labels", 2),
    )
    values.update(overrides)
    return ViTConfig.from_dict(values)


def config_to_hf(cfg: ViTConfig, classifier: bool) -> dict[str, Any]:
    if cfg.pool_type != "cls" or not cfg.class_token:
        raise ConversionError(
            "Hugging Face ViT pools the [CLS] token; a model with pool_type="
            f"{cfg.pool_type!r}, class_token={cfg.class_token} cannot be exported as 'vit'."
        )
    out = dict(
        model_type="vit",
        architectures=["ViTForImageClassification" if classifier else "ViTModel"],
        image_size=cfg.image_size if isinstance(cfg.image_size, int) else list(cfg.image_size),
        patch_size=cfg.patch_size, num_channels=cfg.num_channels,
        num_hidden_layers=cfg.num_layers, hidden_size=cfg.d_model,
        num_attention_heads=cfg.num_heads, intermediate_size=cfg.mlp_dim,
        hidden_act=cfg.activation, layer_norm_eps=cfg.norm_eps,
        hidden_dropout_prob=cfg.dropout_rate,
        attention_probs_dropout_prob=cfg.attention_dropout_rate, qkv_bias=cfg.qkv_bias,
        pooler_act=cfg.pooler_act, pooler_output_size=cfg.d_model,
    )
    if classifier:
        out["id2label"] = {str(i): f"LABEL_{i}" for i in range(cfg.num_labels)}
        out["label2id"] = {f"LABEL_{i}": i for i in range(cfg.num_labels)}
    return out


def vit_params_from_hf(store: TensorStore, cfg: ViTConfig, prefix: str = "") -> dict:
    """Params of a :class:`ViTModel` from tensors named ``{prefix}embeddings...``."""
    p = prefix
    emb = {
        "patch": conv_from_hf(store, f"{p}embeddings.patch_embeddings.projection"),
        "cls_token": store.take(f"{p}embeddings.cls_token"),
    }
    pos = store.take(f"{p}embeddings.position_embeddings")
    emb["position_embedding"] = pos.reshape(pos.shape[-2:]) if pos.size else pos
    encoder: dict[str, Any] = {}
    for i in range(cfg.num_layers):
        lp = f"{p}encoder.layer.{i}."
        encoder[f"layers_{i}"] = {"layer": {
            "attention_norm": norm_from_hf(store, lp + "layernorm_before"),
            "self_attention": attention_from_hf(
                store, {k: lp + v for k, v in _ATTN.items()}, cfg.num_heads,
                bias=cfg.qkv_bias, out_bias=True),
            "mlp_norm": norm_from_hf(store, lp + "layernorm_after"),
            "mlp": {"wi": dense_from_hf(store, lp + "intermediate.dense"),
                    "wo": dense_from_hf(store, lp + "output.dense")},
        }}
    encoder["final_norm"] = norm_from_hf(store, f"{p}layernorm")
    if cfg.scan_layers:
        encoder = stack_layer_params(encoder, cfg.num_layers)
    params = {"embeddings": emb, "encoder": encoder}
    if cfg.use_pooler:
        params["pooler"] = dense_from_hf(store, f"{p}pooler.dense")
    return params


def vit_params_to_hf(params: dict, cfg: ViTConfig, prefix: str = "") -> dict[str, np.ndarray]:
    """Inverse of :func:`vit_params_from_hf`."""
    p = prefix
    emb = params["embeddings"]
    out = conv_to_hf(emb["patch"], f"{p}embeddings.patch_embeddings.projection")
    out[f"{p}embeddings.cls_token"] = np.asarray(emb["cls_token"], np.float32)
    out[f"{p}embeddings.position_embeddings"] = np.asarray(emb["position_embedding"],
                                                           np.float32)[None]
    encoder = params["encoder"]
    if cfg.scan_layers:
        encoder = unstack_layer_params(encoder, cfg.num_layers)
    for i in range(cfg.num_layers):
        lp = f"{p}encoder.layer.{i}."
        layer = encoder[f"layers_{i}"]["layer"]
        out.update(norm_to_hf(layer["attention_norm"], lp + "layernorm_before"))
        out.update(attention_to_hf(layer["self_attention"], {k: lp + v for k, v in _ATTN.items()}))
        out.update(norm_to_hf(layer["mlp_norm"], lp + "layernorm_after"))
        out.update(dense_to_hf(layer["mlp"]["wi"], lp + "intermediate.dense"))
        out.update(dense_to_hf(layer["mlp"]["wo"], lp + "output.dense"))
    out.update(norm_to_hf(encoder["final_norm"], f"{p}layernorm"))
    if "pooler" in params:
        out.update(dense_to_hf(params["pooler"], f"{p}pooler.dense"))
    return out


def _load(hf_config: dict, store: TensorStore, **options) -> tuple[Any, Any]:
    classifier = "classifier.weight" in store
    prefix = "vit." if any(k.startswith("vit.") for k in store.keys()) else ""
    has_pooler = f"{prefix}pooler.dense.weight" in store
    options.setdefault("use_pooler", has_pooler)
    cfg = config_from_hf(hf_config, **options)
    if classifier:
        model = ViTForImageClassification(cfg)
        params = {"vit": vit_params_from_hf(store, cfg.replace(use_pooler=False), prefix),
                  "classifier": dense_from_hf(store, "classifier")}
        store.ignore(f"{prefix}pooler.")  # HF's classifier never uses a pooler
    else:
        model = ViTModel(cfg)
        params = vit_params_from_hf(store, cfg, prefix)
    store.finish()
    return model, params


def _save(model: Any, params: Any) -> tuple[dict, dict]:
    params = nn.meta.unbox(params)
    cfg = model.config
    if isinstance(model, ViTForImageClassification):
        tensors = vit_params_to_hf(params["vit"], cfg, "vit.")
        tensors.update(dense_to_hf(params["classifier"], "classifier"))
        return config_to_hf(cfg, True), tensors
    return config_to_hf(cfg, False), vit_params_to_hf(params, cfg)


register_converter(Converter(
    model_types=("vit",), load=_load, save=_save,
    handles=lambda m: isinstance(m, ViTModel | ViTForImageClassification),
))
