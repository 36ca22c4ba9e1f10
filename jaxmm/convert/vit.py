"""Hugging Face ``vit`` <-> jaxmm ViT (``ViTModel``, ``ViTForImageClassification``).

HF pixel values are NCHW; jaxmm images are NHWC (transpose inputs, not weights:
the patch-embedding conv kernel ``(D, C, p, p)`` becomes ``(p, p, C, D)``).
"""

from __future__ import annotations

import re
from typing import Any

from jaxmm.convert import ConversionError, Converter, TensorStore, fields, register_converter
from jaxmm.convert.layers import LayerNames, conv, dense, norm, qkvo, transformer_layer
from jaxmm.convert.rules import Rule, Table, params_from_hf, params_to_hf, squeeze, stack
from jaxmm.models.vit import ViTConfig, ViTForImageClassification, ViTModel

__all__ = ["config_from_hf", "config_to_hf", "tensor_table"]

_FIELDS = fields.FieldMap(
    ("num_channels", "num_channels", 3), ("num_layers", "num_hidden_layers"),
    ("d_model", "hidden_size"), ("num_heads", "num_attention_heads"),
    ("mlp_dim", "intermediate_size"), ("activation", "hidden_act", "gelu"),
    ("norm_eps", "layer_norm_eps", 1e-12), ("dropout_rate", "hidden_dropout_prob", 0.0),
    ("attention_dropout_rate", "attention_probs_dropout_prob", 0.0),
    ("qkv_bias", "qkv_bias", True), ("pooler_act", "pooler_act", "tanh"),
)
_LAYER = LayerNames(
    attention_norm="layernorm_before", mlp_norm="layernorm_after",
    self_attention=qkvo("attention.attention.", "query", "key", "value", "dense",
                        "attention.output."),
    mlp={"wi": "intermediate.dense", "wo": "output.dense"})


def _size(value: Any) -> int | tuple[int, int]:
    if isinstance(value, list | tuple):
        return int(value[0]) if value[0] == value[1] else (int(value[0]), int(value[1]))
    return int(value)


def config_from_hf(hf: dict[str, Any], **overrides) -> ViTConfig:
    """``config.json`` of a ``vit`` model -> :class:`ViTConfig` (plus overrides)."""
    pooler_dim = hf.get("pooler_output_size") or hf["hidden_size"]
    if pooler_dim != hf["hidden_size"]:
        raise ConversionError(
            f"pooler_output_size={pooler_dim} differs from hidden_size={hf['hidden_size']}; "
            "jaxmm ViT's pooler keeps the width."
        )
    values = dict(_FIELDS.from_hf(hf), image_size=_size(hf.get("image_size", 224)),
                  patch_size=fields.square(hf.get("patch_size", 16), "patch_size", "jaxmm ViT"),
                  num_labels=fields.num_labels_from_hf(hf))
    values.update(overrides)
    return ViTConfig.from_dict(values)


def config_to_hf(cfg: ViTConfig, classifier: bool) -> dict[str, Any]:
    if cfg.pool_type != "cls" or not cfg.class_token:
        raise ConversionError(
            "Hugging Face ViT pools the [CLS] token; a model with pool_type="
            f"{cfg.pool_type!r}, class_token={cfg.class_token} cannot be exported as 'vit'."
        )
    return dict(
        _FIELDS.to_hf(cfg), model_type="vit",
        architectures=["ViTForImageClassification" if classifier else "ViTModel"],
        image_size=cfg.image_size if isinstance(cfg.image_size, int) else list(cfg.image_size),
        patch_size=cfg.patch_size, pooler_output_size=cfg.d_model,
        **(fields.labels_to_hf(cfg.num_labels) if classifier else {}),
    )


def tensor_table(cfg: ViTConfig) -> Table:
    """ViT tensors (``embeddings...``, ``encoder.layer.N...``) <-> :class:`ViTModel` params.

    The patch-embedding conv kernel ``(D, C, p, p)`` becomes ``(p, p, C, D)``
    (jaxmm images are NHWC: transpose HF's NCHW inputs, not weights).
    """
    return Table.of(
        conv("embeddings.patch_embeddings.projection", "embeddings/patch"),
        Rule("embeddings.cls_token", "embeddings/cls_token"),
        Rule("embeddings.position_embeddings", "embeddings/position_embedding", squeeze(0)),
        stack("encoder.layer.{i}.", "encoder", cfg.num_layers, cfg.scan_layers,
              transformer_layer(_LAYER, cfg.num_heads, bias=cfg.qkv_bias, out_bias=True)),
        norm("layernorm", "encoder/final_norm"),
        dense("pooler.dense", "pooler") if cfg.use_pooler else [],
    )


def _table(cfg: ViTConfig, classifier: bool, prefix: str) -> Table:
    if not classifier:
        return tensor_table(cfg).under(prefix)
    # HF's classifier never uses a pooler (a stored one is skipped).
    return tensor_table(cfg.replace(use_pooler=False)).under(prefix, "vit/") + Table.of(
        dense("classifier", "classifier"), ignore=("^" + re.escape(f"{prefix}pooler."),))


def _load(hf_config: dict, store: TensorStore, **options) -> tuple[Any, Any]:
    classifier = "classifier.weight" in store
    prefix = "vit." if any(k.startswith("vit.") for k in store.keys()) else ""
    options.setdefault("use_pooler", f"{prefix}pooler.dense.weight" in store)
    cfg = config_from_hf(hf_config, **options)
    model = ViTForImageClassification(cfg) if classifier else ViTModel(cfg)
    return model, params_from_hf(_table(cfg, classifier, prefix), store)


def _save(model: Any, params: Any) -> tuple[dict, dict]:
    classifier = isinstance(model, ViTForImageClassification)
    tensors = params_to_hf(_table(model.config, classifier, "vit." if classifier else ""),
                           params)
    return config_to_hf(model.config, classifier), tensors


register_converter(Converter(
    model_types=("vit",), load=_load, save=_save,
    handles=lambda m: isinstance(m, ViTModel | ViTForImageClassification),
))
