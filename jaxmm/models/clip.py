"""CLIP dual encoder, compatible with Hugging Face ``CLIPModel``.

* Vision tower (HF ``vision_model``): conv patch embedding (no bias) ->
  class embedding + learned positions -> ``pre_layrnorm`` -> pre-LN encoder
  (``quick_gelu``) -> the class token through ``post_layernorm`` is the pooled
  feature. ``last_hidden_state`` is the encoder output (no final norm), as in HF.
* Text tower (HF ``text_model``): token + learned position embeddings -> causal
  pre-LN encoder with padding mask -> ``final_layer_norm``; pooled at the EOS
  token: the first position equal to ``eos_token_id``, or, for legacy configs
  with ``eos_token_id == 2``, the position of the largest token id (HF rule).
* Projections without bias to ``projection_dim`` and a learnable
  ``logit_scale`` (log inverse temperature).

``CLIPModel.__call__`` returns normalised ``image_embeds``/``text_embeds`` and
``logits_per_image = exp(logit_scale) * image_embeds @ text_embeds.T``
(``logits_per_text`` is its transpose). ``encode_image``/``encode_text`` give
the embeddings alone (for retrieval and zero-shot classification; see
:mod:`jaxmm.models.zero_shot`).
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp

from jaxmm.config import ConfigBase
from jaxmm.layers import (
    Embed,
    LayerNorm,
    PatchEmbed,
    TransformerConfig,
    TransformerStack,
    causal_mask,
    combine_masks,
    key_padding_mask,
    resize_position_grid,
)
from jaxmm.layers.blocks import DTYPES
from jaxmm.layers.config_fields import ComputeFields, TransformerFields
from jaxmm.layers.norms import l2_normalize
from jaxmm.models.config_fields import TokenFields
from jaxmm.models.outputs import BaseModelOutput
from jaxmm.models.registry import register
from jaxmm.models.specs import image_spec, text_specs
from jaxmm.models.vit import image_patch_grid

Array = jax.Array

__all__ = [
    "CLIPConfig",
    "CLIPModel",
    "CLIPOutput",
    "CLIPTextConfig",
    "CLIPTextModel",
    "CLIPTextModelOutput",
    "CLIPTextModelWithProjection",
    "CLIPTextTransformer",
    "CLIPVisionConfig",
    "CLIPVisionModel",
    "CLIPVisionModelOutput",
    "CLIPVisionModelWithProjection",
    "CLIPVisionTransformer",
    "eos_positions",
    "l2_normalize",
]


# ---------------------------------------------------------------------------
# Configs
# ---------------------------------------------------------------------------

def _tower_transformer(cfg: ConfigBase, final_norm: bool) -> TransformerConfig:
    return TransformerConfig.from_fields(cfg, norm_position="pre", final_norm=final_norm,
                                         use_bias=True)


_TOWER_DEFAULTS = dict(activation="quick_gelu", num_layers=12)


@dataclasses.dataclass(frozen=True, kw_only=True)
class CLIPTextConfig(ComputeFields, TransformerFields, TokenFields):
    """CLIP text tower (HF ``CLIPTextConfig``: ``hidden_size`` = d_model,
    ``intermediate_size`` = mlp_dim, ``hidden_act`` = activation, ...).

    The widths, ``attention_dropout_rate``, compute and token fields are the
    shared ones (:mod:`jaxmm.layers.config_fields`,
    :mod:`jaxmm.models.config_fields`); CLIP has no residual dropout.
    ``projection_dim`` is used by :class:`CLIPTextModelWithProjection`.
    """

    DEFAULTS: ClassVar = dict(
        _TOWER_DEFAULTS, d_model=512, num_heads=8, mlp_dim=2048, vocab_size=49408,
        pad_token_id=1, bos_token_id=49406, eos_token_id=49407,
    )

    max_position_embeddings: int = 77
    projection_dim: int = 512

    SIZES: ClassVar = {
        "tiny": dict(vocab_size=128, max_position_embeddings=16, num_layers=2, d_model=32,
                     num_heads=4, mlp_dim=64, projection_dim=32, pad_token_id=0,
                     bos_token_id=126, eos_token_id=127),
        "base": dict(num_layers=12, d_model=512, num_heads=8, mlp_dim=2048),
        "large": dict(num_layers=12, d_model=768, num_heads=12, mlp_dim=3072,
                      projection_dim=768),
    }

    def input_specs(self) -> dict:
        """``input_ids`` / ``attention_mask`` up to ``max_position_embeddings``."""
        return text_specs(self.max_position_embeddings)

    def validate(self) -> None:
        self.require_at_least(1, "max_position_embeddings")

    @property
    def transformer(self) -> TransformerConfig:
        return _tower_transformer(self, final_norm=True)  # final norm = final_layer_norm


@dataclasses.dataclass(frozen=True, kw_only=True)
class CLIPVisionConfig(ComputeFields, TransformerFields):
    """CLIP vision tower (HF ``CLIPVisionConfig``). Images are NHWC.

    The widths, ``attention_dropout_rate`` and compute fields are the shared
    ones (:mod:`jaxmm.layers.config_fields`).
    """

    DEFAULTS: ClassVar = dict(_TOWER_DEFAULTS, d_model=768, num_heads=12, mlp_dim=3072)

    image_size: int = 224
    patch_size: int = 32
    num_channels: int = 3
    projection_dim: int = 512

    SIZES: ClassVar = {
        "tiny": dict(image_size=32, patch_size=8, num_layers=2, d_model=32, num_heads=4,
                     mlp_dim=64, projection_dim=32),
        "B/32": dict(patch_size=32),
        "B/16": dict(patch_size=16),
        "L/14": dict(patch_size=14, num_layers=24, d_model=1024, num_heads=16, mlp_dim=4096,
                     projection_dim=768),
    }

    def input_specs(self) -> dict:
        """``image`` ``(image_size, image_size, num_channels)``."""
        return {"image": image_spec(self.image_size, self.num_channels)}

    def validate(self) -> None:
        if self.image_size % self.patch_size:
            raise self.config_error(
                f"image_size ({self.image_size}) must be a multiple of patch_size "
                f"({self.patch_size})."
            )

    @property
    def image_hw(self) -> tuple[int, int]:
        return self.image_size, self.image_size

    @property
    def grid_size(self) -> int:
        return self.image_size // self.patch_size

    @property
    def num_positions(self) -> int:
        return self.grid_size**2 + 1

    @property
    def transformer(self) -> TransformerConfig:
        return _tower_transformer(self, final_norm=False)


@dataclasses.dataclass(frozen=True, kw_only=True)
class CLIPConfig(ConfigBase):
    """Full CLIP: ``text`` and ``vision`` tower configs, ``projection_dim`` and
    the initial ``logit_scale`` (HF ``logit_scale_init_value``, log(1/0.07)).

    The compute fields (``dtype``, ``param_dtype``, ``scan_layers``,
    ``remat_policy``, ``attention_impl``) are the towers'. Given to
    ``CLIPConfig``/``from_dict``/``replace`` they apply to both towers
    (``PASS_DOWN``), so a run config can say ``model.config.dtype=bfloat16``;
    ``None`` leaves the towers' values. ``image_size``, ``num_channels`` and
    ``vocab_size`` are read-only views of the towers'.
    """

    PASS_DOWN: ClassVar = tuple(f.name for f in dataclasses.fields(ComputeFields))

    text: CLIPTextConfig = dataclasses.field(default_factory=CLIPTextConfig)
    vision: CLIPVisionConfig = dataclasses.field(default_factory=CLIPVisionConfig)
    projection_dim: int = 512
    logit_scale_init_value: float = 2.6592

    SIZES: ClassVar = {
        "tiny": dict(text=CLIPTextConfig.SIZES["tiny"], vision=CLIPVisionConfig.SIZES["tiny"],
                     projection_dim=32),
        "base": {},  # ViT-B/32
        "ViT-B/32": dict(vision=dict(patch_size=32)),
        "ViT-B/16": dict(vision=dict(patch_size=16)),
        "ViT-L/14": dict(text=CLIPTextConfig.SIZES["large"], vision=CLIPVisionConfig.SIZES["L/14"],
                         projection_dim=768),
    }

    def input_specs(self) -> dict:
        """The towers' inputs: ``input_ids`` / ``attention_mask`` and ``image``."""
        return {**self.text.input_specs(), **self.vision.input_specs()}

    def validate(self) -> None:
        self.require_at_least(1, "projection_dim")

    @property
    def image_size(self) -> int:
        return self.vision.image_size

    @property
    def num_channels(self) -> int:
        return self.vision.num_channels

    @property
    def vocab_size(self) -> int:
        return self.text.vocab_size


# ---------------------------------------------------------------------------
# Outputs
# ---------------------------------------------------------------------------


@flax.struct.dataclass
class CLIPOutput:
    """Hugging Face ``CLIPOutput`` fields, plus the learnable ``logit_scale``
    (log inverse temperature, for ``jaxmm.losses.infonce_loss``) and, for
    SigLIP-style models, ``logit_bias``."""

    logits_per_image: Array
    logits_per_text: Array
    text_embeds: Array
    image_embeds: Array
    text_model_output: Any
    vision_model_output: Any
    logit_scale: Array | None = None
    logit_bias: Array | None = None


@flax.struct.dataclass
class CLIPTextModelOutput:
    text_embeds: Array
    last_hidden_state: Array
    hidden_states: tuple[Array, ...] | None = None
    attentions: tuple[Array, ...] | None = None


@flax.struct.dataclass
class CLIPVisionModelOutput:
    image_embeds: Array
    last_hidden_state: Array
    hidden_states: tuple[Array, ...] | None = None
    attentions: tuple[Array, ...] | None = None


# ---------------------------------------------------------------------------
# Towers
# ---------------------------------------------------------------------------


def eos_positions(input_ids: Array, eos_token_id: int | None) -> Array:
    """``(B,)`` index of the token CLIP pools, following Hugging Face:

    the first position whose id is ``eos_token_id``; if ``eos_token_id`` is 2
    or ``None`` (legacy OpenAI configs, where EOS is the largest id), the
    position of the largest id. A row without EOS pools position 0 (as HF).
    """
    ids = jnp.asarray(input_ids)
    if eos_token_id is None or eos_token_id == 2:
        return jnp.argmax(ids, axis=-1)
    return jnp.argmax((ids == eos_token_id).astype(jnp.int32), axis=-1)


def _dense(features: int, names: tuple, name: str, dtype, pdtype, use_bias: bool = False):
    return nn.Dense(
        features, use_bias=use_bias, dtype=dtype, param_dtype=pdtype,
        kernel_init=nn.with_logical_partitioning(nn.initializers.normal(0.02), names),
        bias_init=nn.with_logical_partitioning(nn.initializers.zeros, names[-1:]),
        name=name,
    )


class CLIPTextTransformer(nn.Module):
    """HF ``text_model``: ``input_ids`` ``(B, T)`` -> ``BaseModelOutput`` with
    ``last_hidden_state`` ``(B, T, D)`` and ``pooler_output`` ``(B, D)`` (EOS token)."""

    config: CLIPTextConfig

    @nn.compact
    def __call__(
        self, input_ids: Array, attention_mask: Array | None = None,
        position_ids: Array | None = None, *, deterministic: bool = True,
        output_attentions: bool = False, output_hidden_states: bool = False,
    ) -> BaseModelOutput:
        cfg = self.config
        dtype, pdtype = DTYPES[cfg.dtype], DTYPES[cfg.param_dtype]
        input_ids = jnp.asarray(input_ids)
        if input_ids.ndim != 2:
            raise ValueError(f"CLIP text input_ids must be (batch, length); got shape "
                             f"{tuple(input_ids.shape)}.")
        b, t = input_ids.shape
        if t > cfg.max_position_embeddings:
            raise ValueError(
                f"Text length {t} exceeds CLIP's max_position_embeddings "
                f"({cfg.max_position_embeddings}); truncate the tokens (max_length="
                f"{cfg.max_position_embeddings})."
            )
        tokens = Embed(cfg.vocab_size, cfg.d_model, dtype=dtype, param_dtype=pdtype,
                       name="token_embedding")(input_ids)
        table = self.param(
            "position_embedding",
            nn.with_logical_partitioning(nn.initializers.normal(0.01), ("position", "embed")),
            (cfg.max_position_embeddings, cfg.d_model), pdtype,
        )
        pos = jnp.arange(t)[None] if position_ids is None else jnp.asarray(position_ids)
        x = tokens + jnp.take(table, pos, axis=0).astype(dtype)
        mask = causal_mask(t)
        if attention_mask is not None:
            if attention_mask.shape != (b, t):
                raise ValueError(f"attention_mask must be {(b, t)} like input_ids; got "
                                 f"{tuple(attention_mask.shape)}.")
            mask = combine_masks(mask, key_padding_mask(attention_mask))
        out = TransformerStack(cfg.transformer, name="encoder")(
            x, mask=mask, deterministic=deterministic, output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
        )
        h = out.last_hidden_state
        pooled = h[jnp.arange(b), eos_positions(input_ids, cfg.eos_token_id)]
        return BaseModelOutput(last_hidden_state=h, pooler_output=pooled,
                               hidden_states=out.hidden_states, attentions=out.attentions)


class CLIPVisionTransformer(nn.Module):
    """HF ``vision_model``: ``image`` ``(B, H, W, C)`` -> ``BaseModelOutput`` with
    ``last_hidden_state`` ``(B, 1 + N, D)`` and ``pooler_output`` ``(B, D)``."""

    config: CLIPVisionConfig

    @nn.compact
    def __call__(
        self, image: Array, *, interpolate_pos_encoding: bool = False,
        deterministic: bool = True, output_attentions: bool = False,
        output_hidden_states: bool = False,
    ) -> BaseModelOutput:
        cfg = self.config
        dtype, pdtype = DTYPES[cfg.dtype], DTYPES[cfg.param_dtype]
        image = jnp.asarray(image)
        gh, gw = image_patch_grid(image, cfg, interpolate_pos_encoding, "CLIP vision")
        b = image.shape[0]
        x = PatchEmbed(cfg.d_model, (cfg.patch_size, cfg.patch_size), use_bias=False,
                       dtype=dtype, param_dtype=pdtype, name="patch_embedding")(image)
        x = x.reshape(b, gh * gw, cfg.d_model)
        cls = self.param(
            "class_embedding",
            nn.with_logical_partitioning(nn.initializers.normal(0.02), ("embed",)),
            (cfg.d_model,), pdtype,
        )
        x = jnp.concatenate([jnp.broadcast_to(cls.astype(dtype), (b, 1, cfg.d_model)), x], 1)
        table = self.param(
            "position_embedding",
            nn.with_logical_partitioning(nn.initializers.normal(0.02), ("position", "embed")),
            (cfg.num_positions, cfg.d_model), pdtype,
        )
        grid = resize_position_grid(table[1:], (cfg.grid_size, cfg.grid_size), (gh, gw))
        x = x + jnp.concatenate([table[:1], grid], 0)[None].astype(dtype)
        x = LayerNorm(cfg.norm_eps, dtype=dtype, param_dtype=pdtype, name="pre_layrnorm")(x)
        out = TransformerStack(cfg.transformer, name="encoder")(
            x, deterministic=deterministic, output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
        )
        h = out.last_hidden_state
        pooled = LayerNorm(cfg.norm_eps, dtype=dtype, param_dtype=pdtype,
                           name="post_layernorm")(h[:, 0])
        return BaseModelOutput(last_hidden_state=h, pooler_output=pooled,
                               hidden_states=out.hidden_states, attentions=out.attentions)


# ---------------------------------------------------------------------------
# Models
# ---------------------------------------------------------------------------


@register("clip_text", CLIPTextConfig)
class CLIPTextModel(nn.Module):
    """CLIP text tower alone (HF ``CLIPTextModel``); params under ``text_model``."""

    config: CLIPTextConfig

    @nn.compact
    def __call__(self, input_ids: Array, attention_mask: Array | None = None,
                 position_ids: Array | None = None, **kwargs) -> BaseModelOutput:
        return CLIPTextTransformer(self.config, name="text_model")(
            input_ids, attention_mask, position_ids, **kwargs)


@register("clip_text_projection", CLIPTextConfig)
class CLIPTextModelWithProjection(nn.Module):
    """Text tower + ``text_projection`` (HF ``CLIPTextModelWithProjection``)."""

    config: CLIPTextConfig

    @nn.compact
    def __call__(self, input_ids: Array, attention_mask: Array | None = None,
                 position_ids: Array | None = None, **kwargs) -> CLIPTextModelOutput:
        cfg = self.config
        out = CLIPTextTransformer(cfg, name="text_model")(
            input_ids, attention_mask, position_ids, **kwargs)
        embeds = _dense(cfg.projection_dim, ("embed", "mlp"), "text_projection",
                        DTYPES[cfg.dtype], DTYPES[cfg.param_dtype])(out.pooler_output)
        return CLIPTextModelOutput(text_embeds=embeds, last_hidden_state=out.last_hidden_state,
                                   hidden_states=out.hidden_states, attentions=out.attentions)


@register("clip_vision", CLIPVisionConfig)
class CLIPVisionModel(nn.Module):
    """CLIP vision tower alone (HF ``CLIPVisionModel``); params under ``vision_model``."""

    config: CLIPVisionConfig

    @nn.compact
    def __call__(self, image: Array, **kwargs) -> BaseModelOutput:
        return CLIPVisionTransformer(self.config, name="vision_model")(image, **kwargs)


@register("clip_vision_projection", CLIPVisionConfig)
class CLIPVisionModelWithProjection(nn.Module):
    """Vision tower + ``visual_projection`` (HF ``CLIPVisionModelWithProjection``)."""

    config: CLIPVisionConfig

    @nn.compact
    def __call__(self, image: Array, **kwargs) -> CLIPVisionModelOutput:
        cfg = self.config
        out = CLIPVisionTransformer(cfg, name="vision_model")(image, **kwargs)
        embeds = _dense(cfg.projection_dim, ("embed", "mlp"), "visual_projection",
                        DTYPES[cfg.dtype], DTYPES[cfg.param_dtype])(out.pooler_output)
        return CLIPVisionModelOutput(image_embeds=embeds, last_hidden_state=out.last_hidden_state,
                                     hidden_states=out.hidden_states, attentions=out.attentions)


@register("clip", CLIPConfig)
class CLIPModel(nn.Module):
    """CLIP dual encoder (HF ``CLIPModel``).

    ``__call__(input_ids (B_t, T), image (B_i, H, W, C), attention_mask=None,
    position_ids=None)`` -> :class:`CLIPOutput` with ``logits_per_image``
    ``(B_i, B_t)``, ``logits_per_text`` ``(B_t, B_i)`` and L2-normalised
    ``image_embeds``/``text_embeds`` ``(B, projection_dim)``.
    Methods (``model.apply(v, ..., method="encode_image")``):
    ``encode_image(image)``, ``encode_text(input_ids, attention_mask)`` ->
    ``(B, projection_dim)`` (normalised unless ``normalize=False``, which gives
    HF ``get_image_features``/``get_text_features``).
    """

    config: CLIPConfig

    def setup(self):
        cfg = self.config
        self.text_model = CLIPTextTransformer(cfg.text)
        self.vision_model = CLIPVisionTransformer(cfg.vision)
        self.text_projection = _dense(cfg.projection_dim, ("embed", "mlp"), None,
                                      DTYPES[cfg.text.dtype], DTYPES[cfg.text.param_dtype])
        self.visual_projection = _dense(cfg.projection_dim, ("embed", "mlp"), None,
                                        DTYPES[cfg.vision.dtype], DTYPES[cfg.vision.param_dtype])
        self.logit_scale = self.param(
            "logit_scale",
            nn.with_logical_partitioning(nn.initializers.constant(cfg.logit_scale_init_value),
                                         ()),
            (), jnp.float32,
        )

    def _image(self, image, kwargs) -> tuple[Array, BaseModelOutput]:
        out = self.vision_model(image, **kwargs)
        return self.visual_projection(out.pooler_output), out

    def _text(self, input_ids, attention_mask, position_ids, kwargs) -> tuple[Array, Any]:
        out = self.text_model(input_ids, attention_mask, position_ids, **kwargs)
        return self.text_projection(out.pooler_output), out

    def encode_image(self, image: Array, *, normalize: bool = True,
                     interpolate_pos_encoding: bool = False, deterministic: bool = True) -> Array:
        emb, _ = self._image(image, dict(interpolate_pos_encoding=interpolate_pos_encoding,
                                         deterministic=deterministic))
        return l2_normalize(emb) if normalize else emb

    def encode_text(self, input_ids: Array, attention_mask: Array | None = None,
                    position_ids: Array | None = None, *, normalize: bool = True,
                    deterministic: bool = True) -> Array:
        emb, _ = self._text(input_ids, attention_mask, position_ids,
                            dict(deterministic=deterministic))
        return l2_normalize(emb) if normalize else emb

    def __call__(
        self, input_ids: Array, image: Array, attention_mask: Array | None = None,
        position_ids: Array | None = None, *, interpolate_pos_encoding: bool = False,
        deterministic: bool = True, output_attentions: bool = False,
        output_hidden_states: bool = False,
    ) -> CLIPOutput:
        flags = dict(deterministic=deterministic, output_attentions=output_attentions,
                     output_hidden_states=output_hidden_states)
        image_embeds, vision_out = self._image(
            image, dict(interpolate_pos_encoding=interpolate_pos_encoding, **flags))
        text_embeds, text_out = self._text(input_ids, attention_mask, position_ids, flags)
        image_embeds, text_embeds = l2_normalize(image_embeds), l2_normalize(text_embeds)
        logits_per_text = text_embeds @ image_embeds.T * jnp.exp(self.logit_scale)
        return CLIPOutput(
            logits_per_image=logits_per_text.T, logits_per_text=logits_per_text,
            text_embeds=text_embeds, image_embeds=image_embeds,
            text_model_output=text_out, vision_model_output=vision_out,
            logit_scale=self.logit_scale,
        )
