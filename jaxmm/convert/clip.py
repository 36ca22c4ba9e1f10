"""Hugging Face ``clip`` / ``clip_vision_model`` / ``clip_text_model`` <-> jaxmm CLIP.

``clip`` -> :class:`~jaxmm.models.clip.CLIPModel`; ``clip_vision_model`` ->
``CLIPVisionModel`` or, when the folder holds ``visual_projection``,
``CLIPVisionModelWithProjection`` (text likewise). Images are NHWC in jaxmm:
transpose HF ``pixel_values`` inputs, not weights.
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
from jaxmm.models.clip import (
    CLIPConfig,
    CLIPModel,
    CLIPTextConfig,
    CLIPTextModel,
    CLIPTextModelWithProjection,
    CLIPVisionConfig,
    CLIPVisionModel,
    CLIPVisionModelWithProjection,
)

__all__ = [
    "clip_config_from_hf",
    "encoder_from_hf",
    "encoder_to_hf",
    "text_config_from_hf",
    "text_params_from_hf",
    "text_params_to_hf",
    "vision_config_from_hf",
    "vision_params_from_hf",
    "vision_params_to_hf",
]

_ATTN = {"query": "self_attn.q_proj", "key": "self_attn.k_proj", "value": "self_attn.v_proj",
         "out": "self_attn.out_proj"}
_TOWER_FIELDS = dict(num_hidden_layers="num_layers", hidden_size="d_model",
                     num_attention_heads="num_heads", intermediate_size="mlp_dim",
                     hidden_act="activation", layer_norm_eps="norm_eps",
                     attention_dropout="attention_dropout_rate", projection_dim="projection_dim")
_TEXT_FIELDS = dict(_TOWER_FIELDS, vocab_size="vocab_size",
                    max_position_embeddings="max_position_embeddings",
                    pad_token_id="pad_token_id", bos_token_id="bos_token_id",
                    eos_token_id="eos_token_id")
_VISION_FIELDS = dict(_TOWER_FIELDS, image_size="image_size", patch_size="patch_size",
                      num_channels="num_channels")


def _square(value: Any, name: str) -> int:
    if isinstance(value, list | tuple):
        if len(set(value)) != 1:
            raise ConversionError(f"Non-square {name}={value} is not supported by jaxmm CLIP.")
        value = value[0]
    return int(value)


def _fields(hf: dict, table: dict, cls, overrides: dict):
    values = {ours: hf[theirs] for theirs, ours in table.items() if hf.get(theirs) is not None}
    if isinstance(values.get("eos_token_id"), list):
        values["eos_token_id"] = values["eos_token_id"][0]
    for key in ("image_size", "patch_size"):
        if key in values:
            values[key] = _square(values[key], key)
    values["attention_dropout_rate"] = float(values.get("attention_dropout_rate", 0.0))
    values.update(overrides)
    return cls.from_dict(values)


def text_config_from_hf(hf: dict, **overrides) -> CLIPTextConfig:
    return _fields(hf, _TEXT_FIELDS, CLIPTextConfig, overrides)


def vision_config_from_hf(hf: dict, **overrides) -> CLIPVisionConfig:
    return _fields(hf, _VISION_FIELDS, CLIPVisionConfig, overrides)


def clip_config_from_hf(hf: dict, **overrides) -> CLIPConfig:
    """``config.json`` of a ``clip`` model -> :class:`CLIPConfig`; ``overrides``
    (e.g. ``scan_layers=True``) apply to both towers."""
    proj = hf.get("projection_dim") or 512
    text = text_config_from_hf(dict(hf.get("text_config") or {}, projection_dim=proj),
                               **overrides)
    vision = vision_config_from_hf(dict(hf.get("vision_config") or {}, projection_dim=proj),
                                   **overrides)
    return CLIPConfig(text=text, vision=vision, projection_dim=proj,
                      logit_scale_init_value=float(hf.get("logit_scale_init_value", 2.6592)))


def _to_hf_fields(cfg, table: dict) -> dict:
    out = {theirs: getattr(cfg, ours) for theirs, ours in table.items()}
    out["hidden_act"] = {"gelu_tanh": "gelu_new"}.get(out["hidden_act"], out["hidden_act"])
    return out


# ---------------------------------------------------------------------------
# Tensors
# ---------------------------------------------------------------------------


def encoder_from_hf(store: TensorStore, prefix: str, cfg, final_norm: str | None) -> dict:
    """``{prefix}layers.{i}.…`` CLIP encoder layers (+ an optional final LayerNorm
    tensor name) -> a :class:`~jaxmm.layers.TransformerStack` param tree."""
    encoder: dict[str, Any] = {}
    for i in range(cfg.num_layers):
        lp = f"{prefix}layers.{i}."
        encoder[f"layers_{i}"] = {"layer": {
            "attention_norm": norm_from_hf(store, lp + "layer_norm1"),
            "self_attention": attention_from_hf(
                store, {k: lp + v for k, v in _ATTN.items()}, cfg.num_heads),
            "mlp_norm": norm_from_hf(store, lp + "layer_norm2"),
            "mlp": {"wi": dense_from_hf(store, lp + "mlp.fc1"),
                    "wo": dense_from_hf(store, lp + "mlp.fc2")},
        }}
    if final_norm is not None:
        encoder["final_norm"] = norm_from_hf(store, final_norm)
    return stack_layer_params(encoder, cfg.num_layers) if cfg.scan_layers else encoder


def encoder_to_hf(encoder: dict, prefix: str, cfg, final_norm: str | None) -> dict:
    """Inverse of :func:`encoder_from_hf`."""
    if cfg.scan_layers:
        encoder = unstack_layer_params(encoder, cfg.num_layers)
    out: dict[str, np.ndarray] = {}
    for i in range(cfg.num_layers):
        lp = f"{prefix}layers.{i}."
        layer = encoder[f"layers_{i}"]["layer"]
        out.update(norm_to_hf(layer["attention_norm"], lp + "layer_norm1"))
        out.update(attention_to_hf(layer["self_attention"],
                                   {k: lp + v for k, v in _ATTN.items()}))
        out.update(norm_to_hf(layer["mlp_norm"], lp + "layer_norm2"))
        out.update(dense_to_hf(layer["mlp"]["wi"], lp + "mlp.fc1"))
        out.update(dense_to_hf(layer["mlp"]["wo"], lp + "mlp.fc2"))
    if final_norm is not None:
        out.update(norm_to_hf(encoder["final_norm"], final_norm))
    return out


def text_params_from_hf(store: TensorStore, cfg: CLIPTextConfig, prefix: str = "text_model."
                        ) -> dict:
    """Params of a :class:`~jaxmm.models.clip.CLIPTextTransformer`."""
    p = prefix
    return {
        "token_embedding": {"embedding": store.take(f"{p}embeddings.token_embedding.weight")},
        "position_embedding": store.take(f"{p}embeddings.position_embedding.weight"),
        "encoder": encoder_from_hf(store, f"{p}encoder.", cfg, f"{p}final_layer_norm"),
    }


def text_params_to_hf(params: dict, cfg: CLIPTextConfig, prefix: str = "text_model.") -> dict:
    p = prefix
    out = {
        f"{p}embeddings.token_embedding.weight": np.asarray(
            params["token_embedding"]["embedding"], np.float32),
        f"{p}embeddings.position_embedding.weight": np.asarray(params["position_embedding"],
                                                               np.float32),
    }
    out.update(encoder_to_hf(params["encoder"], f"{p}encoder.", cfg, f"{p}final_layer_norm"))
    return out


def vision_params_from_hf(store: TensorStore, cfg: CLIPVisionConfig,
                          prefix: str = "vision_model.") -> dict:
    """Params of a :class:`~jaxmm.models.clip.CLIPVisionTransformer`."""
    p = prefix
    return {
        "patch_embedding": conv_from_hf(store, f"{p}embeddings.patch_embedding", bias=False),
        "class_embedding": store.take(f"{p}embeddings.class_embedding"),
        "position_embedding": store.take(f"{p}embeddings.position_embedding.weight"),
        "pre_layrnorm": norm_from_hf(store, f"{p}pre_layrnorm"),
        "encoder": encoder_from_hf(store, f"{p}encoder.", cfg, None),
        "post_layernorm": norm_from_hf(store, f"{p}post_layernorm"),
    }


def vision_params_to_hf(params: dict, cfg: CLIPVisionConfig, prefix: str = "vision_model."
                        ) -> dict:
    p = prefix
    out = conv_to_hf(params["patch_embedding"], f"{p}embeddings.patch_embedding")
    out[f"{p}embeddings.class_embedding"] = np.asarray(params["class_embedding"], np.float32)
    out[f"{p}embeddings.position_embedding.weight"] = np.asarray(params["position_embedding"],
                                                                 np.float32)
    out.update(norm_to_hf(params["pre_layrnorm"], f"{p}pre_layrnorm"))
    out.update(encoder_to_hf(params["encoder"], f"{p}encoder.", cfg, None))
    out.update(norm_to_hf(params["post_layernorm"], f"{p}post_layernorm"))
    return out


# ---------------------------------------------------------------------------
# Load / save
# ---------------------------------------------------------------------------


def _scalar(arr: np.ndarray) -> np.ndarray:
    return arr.reshape(()) if arr.size == 1 else arr  # missing: left empty for finish()


def _prefix(store: TensorStore, prefix: str) -> str:
    """Tower checkpoints: transformers 5 writes plain ``CLIPTextModel`` /
    ``CLIPVisionModel`` without the tower prefix, older versions (and the
    ``WithProjection`` classes) with it."""
    return prefix if any(k.startswith(prefix) for k in store.keys()) else ""


def _load(hf_config: dict, store: TensorStore, **options) -> tuple[Any, Any]:
    kind = hf_config.get("model_type")
    store.ignore("position_ids")  # buffers in old checkpoints
    if kind == "clip":
        cfg = clip_config_from_hf(hf_config, **options)
        model = CLIPModel(cfg)
        params = {
            "text_model": text_params_from_hf(store, cfg.text),
            "vision_model": vision_params_from_hf(store, cfg.vision),
            "text_projection": dense_from_hf(store, "text_projection", bias=False),
            "visual_projection": dense_from_hf(store, "visual_projection", bias=False),
            "logit_scale": _scalar(store.take("logit_scale")),
        }
    elif kind == "clip_text_model":
        cfg = text_config_from_hf(hf_config, **options)
        params = {"text_model": text_params_from_hf(store, cfg, _prefix(store, "text_model."))}
        if "text_projection.weight" in store:
            model = CLIPTextModelWithProjection(cfg)
            params["text_projection"] = dense_from_hf(store, "text_projection", bias=False)
        else:
            model = CLIPTextModel(cfg)
    elif kind == "clip_vision_model":
        cfg = vision_config_from_hf(hf_config, **options)
        params = {"vision_model": vision_params_from_hf(store, cfg,
                                                        _prefix(store, "vision_model."))}
        if "visual_projection.weight" in store:
            model = CLIPVisionModelWithProjection(cfg)
            params["visual_projection"] = dense_from_hf(store, "visual_projection", bias=False)
        else:
            model = CLIPVisionModel(cfg)
    else:  # pragma: no cover - dispatch only sends the types registered below
        raise ConversionError(f"Not a CLIP model_type: {kind!r}.")
    store.finish()
    return model, params


def _save(model: Any, params: Any) -> tuple[dict, dict]:
    params = nn.meta.unbox(params)
    cfg = model.config
    if isinstance(model, CLIPModel):
        tensors = text_params_to_hf(params["text_model"], cfg.text)
        tensors.update(vision_params_to_hf(params["vision_model"], cfg.vision))
        tensors.update(dense_to_hf(params["text_projection"], "text_projection"))
        tensors.update(dense_to_hf(params["visual_projection"], "visual_projection"))
        tensors["logit_scale"] = np.asarray(params["logit_scale"], np.float32).reshape(())
        text = _to_hf_fields(cfg.text, _TEXT_FIELDS)
        vision = _to_hf_fields(cfg.vision, _VISION_FIELDS)
        text["projection_dim"] = vision["projection_dim"] = cfg.projection_dim
        hf = dict(model_type="clip", architectures=["CLIPModel"], text_config=text,
                  vision_config=vision, projection_dim=cfg.projection_dim,
                  logit_scale_init_value=cfg.logit_scale_init_value)
        return hf, tensors
    # Written as transformers 5 writes them (plain towers without the prefix).
    if isinstance(model, CLIPTextModel | CLIPTextModelWithProjection):
        projected = "text_projection" in params
        tensors = text_params_to_hf(params["text_model"], cfg,
                                    "text_model." if projected else "")
        hf = dict(_to_hf_fields(cfg, _TEXT_FIELDS), model_type="clip_text_model",
                  architectures=[type(model).__name__])
        if projected:
            tensors.update(dense_to_hf(params["text_projection"], "text_projection"))
        return hf, tensors
    projected = "visual_projection" in params
    tensors = vision_params_to_hf(params["vision_model"], cfg,
                                  "vision_model." if projected else "")
    hf = dict(_to_hf_fields(cfg, _VISION_FIELDS), model_type="clip_vision_model",
              architectures=[type(model).__name__])
    if projected:
        tensors.update(dense_to_hf(params["visual_projection"], "visual_projection"))
    return hf, tensors


register_converter(Converter(
    model_types=("clip", "clip_text_model", "clip_vision_model"), load=_load, save=_save,
    handles=lambda m: isinstance(m, CLIPModel | CLIPTextModel | CLIPTextModelWithProjection
                                 | CLIPVisionModel | CLIPVisionModelWithProjection),
))
