"""Hugging Face ``clip`` / ``clip_vision_model`` / ``clip_text_model`` <-> jaxmm CLIP.

``clip`` -> :class:`~jaxmm.models.clip.CLIPModel`; ``clip_vision_model`` ->
``CLIPVisionModel`` or, when the folder holds ``visual_projection``,
``CLIPVisionModelWithProjection`` (text likewise). Images are NHWC in jaxmm:
transpose HF ``pixel_values`` inputs, not weights.
"""

from __future__ import annotations

from typing import Any

from jaxmm.convert import ConversionError, Converter, TensorStore, fields, register_converter
from jaxmm.convert.layers import LayerNames, conv, dense, norm, qkvo, transformer_layer
from jaxmm.convert.rules import SCALAR, Rule, Table, params_from_hf, params_to_hf, stack
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
    "clip_table",
    "text_config_from_hf",
    "text_table",
    "vision_config_from_hf",
    "vision_table",
]

_TOWER_FIELDS = fields.FieldMap(
    ("num_layers", "num_hidden_layers"), ("d_model", "hidden_size"),
    ("num_heads", "num_attention_heads"), ("mlp_dim", "intermediate_size"),
    ("activation", "hidden_act"), ("norm_eps", "layer_norm_eps"),
    ("attention_dropout_rate", "attention_dropout"), ("projection_dim", "projection_dim"))
_TEXT_FIELDS = _TOWER_FIELDS + fields.FieldMap(
    ("vocab_size", "vocab_size"), ("max_position_embeddings", "max_position_embeddings"),
    ("pad_token_id", "pad_token_id"), ("bos_token_id", "bos_token_id"),
    ("eos_token_id", "eos_token_id"))
_VISION_FIELDS = _TOWER_FIELDS + fields.FieldMap(
    ("image_size", "image_size"), ("patch_size", "patch_size"), ("num_channels", "num_channels"))
_LAYER = LayerNames(
    attention_norm="layer_norm1", mlp_norm="layer_norm2",
    self_attention=qkvo("self_attn.", "q_proj", "k_proj", "v_proj", "out_proj"),
    mlp={"wi": "mlp.fc1", "wo": "mlp.fc2"})
# A tower inside a CLIPModel file, or a tower folder: (HF prefix, jaxmm path, projection).
_TOWERS = {"text": ("text_model.", "text_model/", "text_projection"),
           "vision": ("vision_model.", "vision_model/", "visual_projection")}


def _config(hf: dict, field_map: fields.FieldMap, cls, overrides: dict):
    values = field_map.from_hf(hf)
    if "eos_token_id" in values:
        values["eos_token_id"] = fields.first_id(values["eos_token_id"])
    for key in ("image_size", "patch_size"):
        if key in values:
            values[key] = fields.square(values[key], key, "jaxmm CLIP")
    values["attention_dropout_rate"] = float(values.get("attention_dropout_rate", 0.0))
    values.update(overrides)
    return cls.from_dict(values)


def text_config_from_hf(hf: dict, **overrides) -> CLIPTextConfig:
    return _config(hf, _TEXT_FIELDS, CLIPTextConfig, overrides)


def vision_config_from_hf(hf: dict, **overrides) -> CLIPVisionConfig:
    return _config(hf, _VISION_FIELDS, CLIPVisionConfig, overrides)


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


def _tower_to_hf(cfg, field_map: fields.FieldMap) -> dict:
    out = field_map.to_hf(cfg)
    out["hidden_act"] = fields.activation_to_hf(out["hidden_act"])
    return out


# ---------------------------------------------------------------------------
# Tensors
# ---------------------------------------------------------------------------


def _encoder(cfg) -> list[Rule]:
    return stack("encoder.layers.{i}.", "encoder", cfg.num_layers, cfg.scan_layers,
                 transformer_layer(_LAYER, cfg.num_heads))


def text_table(cfg: CLIPTextConfig) -> Table:
    """Tensors of a ``CLIPTextTransformer`` (no prefix) <-> its jaxmm params."""
    return Table.of(
        Rule("embeddings.token_embedding.weight", "token_embedding/embedding"),
        Rule("embeddings.position_embedding.weight", "position_embedding"),
        _encoder(cfg), norm("final_layer_norm", "encoder/final_norm"))


def vision_table(cfg: CLIPVisionConfig) -> Table:
    """Tensors of a ``CLIPVisionTransformer`` (no prefix) <-> its jaxmm params."""
    return Table.of(
        conv("embeddings.patch_embedding", "patch_embedding", bias=False),
        Rule("embeddings.class_embedding", "class_embedding"),
        Rule("embeddings.position_embedding.weight", "position_embedding"),
        norm("pre_layrnorm", "pre_layrnorm"), _encoder(cfg),
        norm("post_layernorm", "post_layernorm"))


def clip_table(cfg: CLIPConfig) -> Table:
    """A ``CLIPModel`` file <-> :class:`~jaxmm.models.clip.CLIPModel` params."""
    return Table.of(
        text_table(cfg.text).under("text_model.", "text_model/"),
        vision_table(cfg.vision).under("vision_model.", "vision_model/"),
        dense("text_projection", "text_projection", bias=False),
        dense("visual_projection", "visual_projection", bias=False),
        Rule("logit_scale", "logit_scale", SCALAR))


def _tower_table(cfg, tower: str, prefixed: bool, projected: bool) -> Table:
    prefix, path, projection = _TOWERS[tower]
    table = (text_table if tower == "text" else vision_table)(cfg).under(
        prefix if prefixed else "", path)
    return table + Table.of(dense(projection, projection, bias=False) if projected else [])


# ---------------------------------------------------------------------------
# Load / save
# ---------------------------------------------------------------------------

_TOWER_MODELS = {  # (tower, projected) -> class
    ("text", False): CLIPTextModel, ("text", True): CLIPTextModelWithProjection,
    ("vision", False): CLIPVisionModel, ("vision", True): CLIPVisionModelWithProjection,
}


def _load(hf_config: dict, store: TensorStore, **options) -> tuple[Any, Any]:
    kind = hf_config.get("model_type")
    store.ignore("position_ids")  # buffers in old checkpoints
    if kind == "clip":
        cfg = clip_config_from_hf(hf_config, **options)
        return CLIPModel(cfg), params_from_hf(clip_table(cfg), store)
    if kind not in ("clip_text_model", "clip_vision_model"):  # pragma: no cover - dispatch
        raise ConversionError(f"Not a CLIP model_type: {kind!r}.")
    tower = "text" if kind == "clip_text_model" else "vision"
    cfg = (text_config_from_hf if tower == "text" else vision_config_from_hf)(hf_config,
                                                                             **options)
    prefix, _, projection = _TOWERS[tower]
    # transformers 5 writes plain CLIPTextModel / CLIPVisionModel without the tower
    # prefix, older versions (and the WithProjection classes) with it.
    prefixed = any(k.startswith(prefix) for k in store.keys())
    projected = f"{projection}.weight" in store
    params = params_from_hf(_tower_table(cfg, tower, prefixed, projected), store)
    return _TOWER_MODELS[tower, projected](cfg), params


def _save(model: Any, params: Any) -> tuple[dict, dict]:
    cfg = model.config
    if isinstance(model, CLIPModel):
        text = _tower_to_hf(cfg.text, _TEXT_FIELDS)
        vision = _tower_to_hf(cfg.vision, _VISION_FIELDS)
        text["projection_dim"] = vision["projection_dim"] = cfg.projection_dim
        hf = dict(model_type="clip", architectures=["CLIPModel"], text_config=text,
                  vision_config=vision, projection_dim=cfg.projection_dim,
                  logit_scale_init_value=cfg.logit_scale_init_value)
        return hf, params_to_hf(clip_table(cfg), params)
    tower, projected = next(key for key, cls in _TOWER_MODELS.items() if type(model) is cls)
    field_map = _TEXT_FIELDS if tower == "text" else _VISION_FIELDS
    hf = dict(_tower_to_hf(cfg, field_map), model_type=f"clip_{tower}_model",
              architectures=[type(model).__name__])
    # Written as transformers 5 writes them (plain towers without the prefix).
    return hf, params_to_hf(_tower_table(cfg, tower, projected, projected), params)


register_converter(Converter(
    model_types=("clip", "clip_text_model", "clip_vision_model"), load=_load, save=_save,
    handles=lambda m: isinstance(m, (CLIPModel, *_TOWER_MODELS.values())),
))
