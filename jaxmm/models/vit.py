"""Vision Transformer (ViT), compatible with Hugging Face ``ViTModel``.

Image ``(B, H, W, C)`` NHWC float -> non-overlapping patches (a strided conv
computed as a matmul) -> ``[CLS]`` token + learned positions -> pre-LN
Transformer encoder -> final LayerNorm -> pooled features.

* ``pool_type="cls"`` pools the class token (HF ViT); ``"mean"`` averages the
  patch tokens (big_vision "gap"; set ``class_token=False`` to drop the token).
* ``use_pooler`` adds Hugging Face's ``tanh(Dense(pooled))`` pooler.
* ``interpolate_pos_encoding=True`` runs the model at another image size by
  bicubically resizing the learned grid, exactly as HF does;
  :func:`resize_position_embeddings` rewrites the stored table for fine-tuning
  at a new resolution.

Sizes follow big_vision: ``ViTConfig.from_size("B/16")`` (widths Ti, S, M, B,
L, H; any patch size via :func:`decode_variant`), plus ``tiny`` for tests.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxmm.config import ConfigError
from jaxmm.layers import (
    PatchEmbed,
    TransformerConfig,
    TransformerStack,
    classifier_head,
    get_activation,
    key_padding_mask,
    resize_position_grid,
)
from jaxmm.layers.blocks import DTYPES
from jaxmm.layers.config_fields import ComputeFields, DropoutFields, TransformerFields
from jaxmm.models.outputs import BaseModelOutput, SequenceClassifierOutput
from jaxmm.models.registry import register
from jaxmm.models.specs import image_spec

Array = jax.Array

__all__ = [
    "ViTConfig",
    "ViTEmbeddings",
    "ViTForImageClassification",
    "ViTModel",
    "decode_variant",
    "image_patch_grid",
    "resize_position_embeddings",
]

# big_vision widths: name -> (d_model, num_layers, mlp_dim, num_heads).
_WIDTHS = {
    "Ti": (192, 12, 768, 3),
    "S": (384, 12, 1536, 6),
    "M": (512, 12, 2048, 8),
    "B": (768, 12, 3072, 12),
    "L": (1024, 24, 4096, 16),
    "H": (1280, 32, 5120, 16),
}


def decode_variant(variant: str) -> dict[str, int]:
    """``"B/16"`` -> ``{d_model, num_layers, mlp_dim, num_heads, patch_size}``."""
    m = re.fullmatch(r"(\w+)/(\d+)", variant or "")
    if not m or m.group(1) not in _WIDTHS:
        raise ConfigError(
            f"Unknown ViT variant {variant!r}; use WIDTH/PATCH with WIDTH in "
            f"{', '.join(_WIDTHS)} (e.g. 'B/16', 'S/32')."
        )
    d, layers, mlp, heads = _WIDTHS[m.group(1)]
    return dict(d_model=d, num_layers=layers, mlp_dim=mlp, num_heads=heads,
                patch_size=int(m.group(2)))


_SIZES: dict[str, dict[str, Any]] = {
    "tiny": dict(image_size=32, patch_size=8, num_layers=2, d_model=64, num_heads=4,
                 mlp_dim=128),
}
_SIZES.update({f"{w}/{p}": decode_variant(f"{w}/{p}") for w in _WIDTHS for p in (8, 14, 16, 32)})
_SIZES.update({"base": _SIZES["B/16"], "large": _SIZES["L/16"]})


@dataclasses.dataclass(frozen=True, kw_only=True)
class ViTConfig(ComputeFields, DropoutFields, TransformerFields):
    """ViT hyper-parameters (Hugging Face ``ViTConfig`` equivalents in brackets).

    The widths (num_layers, d_model [hidden_size], num_heads, mlp_dim
    [intermediate_size], activation [hidden_act], norm_eps [layer_norm_eps]),
    dropout_rate [hidden_dropout_prob], attention_dropout_rate and the compute
    fields are the shared ones (:mod:`jaxmm.layers.config_fields`; ViT-B
    defaults). Its own:

    image_size [image_size]: ``S`` (square) or ``(H, W)``; patch_size [patch_size];
    num_channels [num_channels]; qkv_bias;
    class_token: prepend a learned [CLS] token;
    pool_type: ``"cls"`` or ``"mean"`` (mean over patch tokens);
    use_pooler: HF pooler ``act(Dense(pooled))`` with ``pooler_act``;
    num_labels: classes of :class:`ViTForImageClassification`.
    """

    DEFAULTS: ClassVar = dict(num_layers=12, d_model=768, num_heads=12, mlp_dim=3072,
                              norm_eps=1e-12)

    image_size: int | tuple[int, int] = 224
    patch_size: int = 16
    num_channels: int = 3
    qkv_bias: bool = True
    class_token: bool = True
    pool_type: str = "cls"
    use_pooler: bool = True
    pooler_act: str = "tanh"
    num_labels: int = 1000

    SIZES: ClassVar = _SIZES

    def input_specs(self) -> dict:
        """``image`` ``(H, W, num_channels)`` (:mod:`jaxmm.models.specs`)."""
        return {"image": image_spec(self.image_size, self.num_channels)}

    def validate(self) -> None:
        h, w = self.image_hw
        if h % self.patch_size or w % self.patch_size:
            raise self.config_error(
                f"image_size ({self.image_size}) must be a multiple of patch_size "
                f"({self.patch_size})."
            )
        self.require_one_of("pool_type", ("cls", "mean"))
        if self.pool_type == "cls" and not self.class_token:
            raise self.config_error("pool_type='cls' needs class_token=True; use "
                                    "pool_type='mean' for a model without a class token.")
        get_activation(self.pooler_act)

    @property
    def image_hw(self) -> tuple[int, int]:
        """``(height, width)`` of the images the model was built for."""
        s = self.image_size
        return (int(s), int(s)) if isinstance(s, int) else (int(s[0]), int(s[1]))

    @property
    def grid(self) -> tuple[int, int]:
        """Patch grid ``(height // patch_size, width // patch_size)``."""
        return self.image_hw[0] // self.patch_size, self.image_hw[1] // self.patch_size

    @property
    def num_patches(self) -> int:
        return self.grid[0] * self.grid[1]

    @property
    def num_positions(self) -> int:
        return self.num_patches + int(self.class_token)

    @property
    def transformer(self) -> TransformerConfig:
        return TransformerConfig.from_fields(self, norm_position="pre", final_norm=True,
                                             use_bias=self.qkv_bias)


def image_patch_grid(image: Array, config: Any, interpolate: bool, what: str
                     ) -> tuple[int, int]:
    """The ``(rows, cols)`` patch grid of NHWC ``image`` for a ViT-style ``config``
    (``num_channels``, ``patch_size``, ``image_hw``); raises a ValueError naming
    the fix for a wrong layout, channel count or size (``what`` names the model).
    ``interpolate``: other image sizes are allowed (position embeddings are
    interpolated)."""
    if image.ndim != 4:
        raise ValueError(
            f"{what} expects images (batch, height, width, channels) NHWC; got shape "
            f"{tuple(image.shape)}. Hugging Face pixel_values are NCHW: transpose with "
            "x.transpose(0, 2, 3, 1)."
        )
    _, h, w, c = image.shape
    if c != config.num_channels:
        hint = " (NCHW input? transpose to NHWC)" if h == config.num_channels else ""
        raise ValueError(
            f"{what} expects {config.num_channels} channels in the last axis; got {c} "
            f"(image shape {tuple(image.shape)}){hint}."
        )
    p = config.patch_size
    if h % p or w % p:
        raise ValueError(
            f"Image size {h}x{w} is not a multiple of the patch size {p}; resize or crop it."
        )
    if not interpolate and (h, w) != config.image_hw:
        raise ValueError(
            f"Image size {h}x{w} does not match the model's {config.image_hw[0]}x"
            f"{config.image_hw[1]}. Resize the image, pass interpolate_pos_encoding=True to "
            "interpolate the position embeddings, or resize them for fine-tuning with "
            "jaxmm.models.vit.resize_position_embeddings."
        )
    return h // p, w // p


class ViTEmbeddings(nn.Module):
    """Patch embedding + [CLS] + learned positions: ``(B, H, W, C) -> (B, N(+1), D)``.

    Parameters: ``patch`` (PatchEmbed), ``cls_token`` ``(1, 1, D)``,
    ``position_embedding`` ``(num_positions, D)`` (class-token row first).
    """

    config: ViTConfig

    @nn.compact
    def __call__(self, image: Array, interpolate_pos_encoding: bool = False,
                 deterministic: bool = True) -> Array:
        cfg = self.config
        dtype = DTYPES[cfg.dtype]
        pdtype = DTYPES[cfg.param_dtype]
        gh, gw = image_patch_grid(image, cfg, interpolate_pos_encoding, "ViT")
        x = PatchEmbed(cfg.d_model, (cfg.patch_size, cfg.patch_size), dtype=dtype,
                       param_dtype=pdtype, name="patch")(image)
        b = x.shape[0]
        x = x.reshape(b, gh * gw, cfg.d_model)
        table = self.param(
            "position_embedding",
            nn.with_logical_partitioning(nn.initializers.normal(0.02), ("position", "embed")),
            (cfg.num_positions, cfg.d_model), pdtype,
        )
        if cfg.class_token:
            cls = self.param(
                "cls_token",
                nn.with_logical_partitioning(nn.initializers.zeros, (None, None, "embed")),
                (1, 1, cfg.d_model), pdtype,
            )
            x = jnp.concatenate([jnp.broadcast_to(cls.astype(dtype), (b, 1, cfg.d_model)), x], 1)
        n_cls = int(cfg.class_token)
        patch_table = resize_position_grid(table[n_cls:], cfg.grid, (gh, gw))
        table = jnp.concatenate([table[:n_cls], patch_table], 0)
        x = x + table[None].astype(dtype)
        x = nn.Dropout(cfg.dropout_rate)(x, deterministic=deterministic)
        return nn.with_logical_constraint(x, ("batch", "length", "embed"))


def _pool(x: Array, config: ViTConfig, patch_mask: Array | None) -> Array:
    """``(B, N, D) -> (B, D)``: class token or (masked) mean of the patch tokens."""
    if config.pool_type == "cls":
        return x[:, 0]
    patches = x[:, int(config.class_token):].astype(jnp.float32)
    if patch_mask is None:
        return patches.mean(1).astype(x.dtype)
    w = patch_mask.astype(jnp.float32)[:, :, None]
    return ((patches * w).sum(1) / jnp.maximum(w.sum(1), 1.0)).astype(x.dtype)


@register("vit", ViTConfig)
class ViTModel(nn.Module):
    """ViT encoder (Hugging Face ``ViTModel``).

    ``__call__(image (B, H, W, C), attention_mask=None (B, num_patches) 1/0 over
    patch tokens, interpolate_pos_encoding=False)`` -> ``BaseModelOutput`` with
    ``last_hidden_state`` ``(B, N(+1), D)`` (after the final LayerNorm) and
    ``pooler_output`` ``(B, D)``: the HF pooler output when ``use_pooler``,
    else the pooled (class-token or mean) features. ``hidden_states`` are
    the stack input and each layer's output, the last one after the final norm.
    """

    config: ViTConfig

    @nn.compact
    def __call__(
        self, image: Array, attention_mask: Array | None = None, *,
        interpolate_pos_encoding: bool = False, deterministic: bool = True,
        output_attentions: bool = False, output_hidden_states: bool = False,
    ) -> BaseModelOutput:
        cfg = self.config
        x = ViTEmbeddings(cfg, name="embeddings")(image, interpolate_pos_encoding, deterministic)
        mask = None
        if attention_mask is not None:
            n_patch = x.shape[1] - int(cfg.class_token)
            if attention_mask.shape != (x.shape[0], n_patch):
                raise ValueError(
                    f"ViT attention_mask must be (batch, num_patches) = {(x.shape[0], n_patch)} "
                    f"(1 = keep the patch); got {tuple(attention_mask.shape)}."
                )
            valid = attention_mask
            if cfg.class_token:
                valid = jnp.concatenate([jnp.ones_like(attention_mask[:, :1]), attention_mask], 1)
            mask = key_padding_mask(valid)
        out = TransformerStack(cfg.transformer, name="encoder")(
            x, mask=mask, deterministic=deterministic, output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
        )
        pooled = _pool(out.last_hidden_state, cfg, attention_mask)
        if cfg.use_pooler:
            dense = nn.Dense(
                cfg.d_model, dtype=DTYPES[cfg.dtype], param_dtype=DTYPES[cfg.param_dtype],
                kernel_init=nn.with_logical_partitioning(
                    nn.initializers.normal(0.02), ("embed", "mlp")),
                bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("mlp",)),
                name="pooler",
            )
            pooled = get_activation(cfg.pooler_act)(dense(pooled))
        return BaseModelOutput(
            last_hidden_state=out.last_hidden_state, pooler_output=pooled,
            hidden_states=out.hidden_states, attentions=out.attentions,
        )


@register("vit_classifier", ViTConfig)
class ViTForImageClassification(nn.Module):
    """ViT + linear classifier on the pooled features (Hugging Face
    ``ViTForImageClassification``: the class token after the final norm, no
    pooler). ``__call__`` as :class:`ViTModel`; returns
    ``SequenceClassifierOutput`` with ``logits`` ``(B, num_labels)``."""

    config: ViTConfig

    @nn.compact
    def __call__(
        self, image: Array, attention_mask: Array | None = None, *,
        interpolate_pos_encoding: bool = False, deterministic: bool = True,
        output_attentions: bool = False, output_hidden_states: bool = False,
    ) -> SequenceClassifierOutput:
        cfg = self.config
        out = ViTModel(cfg.replace(use_pooler=False), name="vit")(
            image, attention_mask, interpolate_pos_encoding=interpolate_pos_encoding,
            deterministic=deterministic, output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
        )
        head = classifier_head(cfg.num_labels, DTYPES[cfg.dtype], DTYPES[cfg.param_dtype])
        logits = head(out.pooler_output)
        return SequenceClassifierOutput(
            logits=logits.astype(jnp.float32), hidden_states=out.hidden_states,
            attentions=out.attentions,
        )


def resize_position_embeddings(params: Any, config: ViTConfig,
                               image_size: int | tuple[int, int]) -> tuple[Any, ViTConfig]:
    """Resizes the stored position table for fine-tuning at ``image_size``.

    ``params`` is a :class:`ViTModel` param tree (or one holding it under
    ``"vit"``, as :class:`ViTForImageClassification` does). The grid is
    resized bicubically (as HF ``interpolate_pos_encoding``), the class-token
    row is kept. Returns ``(new_params, new_config)``; the originals are not
    modified.
    """
    new_config = config.replace(image_size=image_size)
    params = nn.meta.unbox(params)
    if "vit" in params:
        inner, cfg = resize_position_embeddings(params["vit"], config, image_size)
        return {**params, "vit": inner}, cfg
    if "embeddings" not in params or "position_embedding" not in params["embeddings"]:
        raise ValueError("resize_position_embeddings expects ViTModel params (with "
                         "embeddings/position_embedding).")
    emb = dict(params["embeddings"])
    table = emb["position_embedding"]
    n_cls = int(config.class_token)
    if table.shape[0] != config.num_positions:
        raise ValueError(
            f"Position table has {table.shape[0]} rows but the config expects "
            f"{config.num_positions}; pass the config these params were made with."
        )
    grid = resize_position_grid(jnp.asarray(table[n_cls:]), config.grid, new_config.grid)
    emb["position_embedding"] = jnp.concatenate([jnp.asarray(table[:n_cls]), grid], 0)
    return {**params, "embeddings": emb}, new_config
