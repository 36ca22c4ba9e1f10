"""Generic dual encoder: any registered image encoder + any registered text encoder.

Builds the two towers from the model registry (``vit``, ``resnet``,
``clip_vision`` for images; ``bert``, ``gpt``, ``clip_text``, ... for text),
pools each tower's output, projects both to ``projection_dim`` and scores
pairs CLIP-style. Outputs are the same as :class:`~jaxmm.models.clip.CLIPModel`
(``logits_per_image``, ``logits_per_text``, ``image_embeds``, ``text_embeds``)
plus the learnable ``logit_scale`` (and ``logit_bias`` for SigLIP), so the
same losses, retrieval metrics and zero-shot helpers apply.

Tower calling convention: image encoders are called as
``enc(image, deterministic=...)``, text encoders as
``enc(input_ids, attention_mask=..., deterministic=...)``; both return an
output with ``last_hidden_state`` (and ``pooler_output`` for ``pool='pooler'``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxmm.config import ConfigBase, ConfigError
from jaxmm.layers.norms import l2_normalize
from jaxmm.models import registry
from jaxmm.models.clip import CLIPOutput

Array = jax.Array

__all__ = ["DualEncoder", "DualEncoderConfig", "masked_mean", "pool_tokens",
           "resolve_encoder_config"]

POOLS = ("pooler", "cls", "mean", "last")


def resolve_encoder_config(name: str, config: Any) -> ConfigBase:
    """A registered model's config from a size name, a mapping or a config."""
    spec = registry.get(name)
    if isinstance(config, spec.config_cls):
        return config
    if config is None:
        return spec.config_cls()
    if isinstance(config, str):
        return spec.config_cls.from_size(config)
    if isinstance(config, Mapping):
        values = dict(config)
        size = values.pop("size", None)
        if size is not None:
            return spec.config_cls.from_size(size, **values)
        return spec.config_cls.from_dict(values)
    raise ConfigError(
        f"Config for encoder {name!r} must be a size name, a mapping or a "
        f"{spec.config_cls.__name__}; got {type(config).__name__}."
    )


def masked_mean(tokens: Array, mask: Array) -> Array:
    """``(B, T, D)`` tokens -> ``(B, D)``: the mean over the tokens where ``mask`` ``(B, T)``
    is nonzero (zeros for a row without any)."""
    valid = mask.astype(tokens.dtype)
    return jnp.sum(tokens * valid[..., None], 1) / jnp.maximum(valid.sum(1, keepdims=True), 1.0)


def pool_tokens(output: Any, how: str, attention_mask: Array | None = None) -> Array:
    """``(B, D)`` from an encoder output: ``pooler`` (its ``pooler_output``),
    ``cls`` (first token), ``mean`` (masked mean over tokens, or over the spatial
    positions of a ``(B, H, W, C)`` feature map) or ``last`` (last real token,
    for causal text encoders with right padding)."""
    if how == "pooler":
        pooled = getattr(output, "pooler_output", None)
        if pooled is None:
            raise ValueError(
                f"{type(output).__name__} has no pooler_output; use pool='cls', 'mean' or "
                "'last' for this encoder."
            )
        return pooled
    h = output.last_hidden_state
    if h.ndim == 4:  # convolutional feature map
        h = h.reshape(h.shape[0], -1, h.shape[-1])
    if how == "cls":
        return h[:, 0]
    if attention_mask is None:
        attention_mask = jnp.ones(h.shape[:2], jnp.int32)
    if how == "mean":
        return masked_mean(h, attention_mask)
    if how == "last":
        last = jnp.maximum(jnp.sum(attention_mask.astype(jnp.int32), axis=1) - 1, 0)
        return h[jnp.arange(h.shape[0]), last]
    raise ValueError(f"Unknown pool {how!r}; use one of {', '.join(POOLS)}.")


@dataclasses.dataclass(frozen=True, kw_only=True)
class DualEncoderConfig(ConfigBase):
    """A dual encoder from two registered towers.

    Attributes:
      image_encoder / text_encoder: registered model names.
      image_encoder_config / text_encoder_config: their configs: a size name
        (``"tiny"``), a mapping (``{"size": "tiny", "num_layers": 1}`` or full
        fields) or a config object; they become config objects when this
        config is made (:func:`resolve_encoder_config`).
      image_pool / text_pool: ``pooler``, ``cls``, ``mean`` or ``last``.
      projection_dim, projection_bias: the two projection heads.
      logit_scale_init_value: initial log inverse temperature.
      logit_bias_init_value: if set, a learnable logit bias (SigLIP uses -10).
    """

    image_encoder: str = "vit"
    image_encoder_config: Any = "tiny"
    text_encoder: str = "clip_text"
    text_encoder_config: Any = "tiny"
    image_pool: str = "pooler"
    text_pool: str = "pooler"
    projection_dim: int = 64
    projection_bias: bool = False
    logit_scale_init_value: float = 2.6592
    logit_bias_init_value: float | None = None

    SIZES: ClassVar = {"tiny": {}}

    @classmethod
    def prepare(cls, values: dict[str, Any]) -> dict[str, Any]:
        values = super().prepare(values)
        for which in ("image", "text"):
            values[f"{which}_encoder_config"] = resolve_encoder_config(
                values[f"{which}_encoder"], values[f"{which}_encoder_config"])
        return values

    def validate(self) -> None:
        self.require_one_of("image_pool", POOLS)
        self.require_one_of("text_pool", POOLS)
        self.require_at_least(1, "projection_dim")


@registry.register("dual_encoder", DualEncoderConfig)
class DualEncoder(nn.Module):
    """CLIP-style dual encoder over registered towers.

    ``__call__(input_ids (B_t, T), image (B_i, H, W, C), attention_mask=None)``
    -> :class:`~jaxmm.models.clip.CLIPOutput`. ``encode_image`` /
    ``encode_text`` return ``(B, projection_dim)`` embeddings (normalised
    unless ``normalize=False``).
    """

    config: DualEncoderConfig

    def setup(self):
        cfg = self.config
        self.image_model = registry.get(cfg.image_encoder).module_cls(cfg.image_encoder_config)
        self.text_model = registry.get(cfg.text_encoder).module_cls(cfg.text_encoder_config)
        dense = lambda: nn.Dense(  # noqa: E731
            cfg.projection_dim, use_bias=cfg.projection_bias,
            kernel_init=nn.with_logical_partitioning(nn.initializers.normal(0.02),
                                                     ("embed", "mlp")),
            bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("mlp",)),
        )
        self.visual_projection = dense()
        self.text_projection = dense()
        self.logit_scale = self.param(
            "logit_scale", nn.with_logical_partitioning(
                nn.initializers.constant(cfg.logit_scale_init_value), ()), (), jnp.float32)
        if cfg.logit_bias_init_value is not None:
            self.logit_bias = self.param(
                "logit_bias", nn.with_logical_partitioning(
                    nn.initializers.constant(cfg.logit_bias_init_value), ()), (), jnp.float32)

    def _image(self, image, deterministic):
        out = self.image_model(image, deterministic=deterministic)
        return self.visual_projection(pool_tokens(out, self.config.image_pool)), out

    def _text(self, input_ids, attention_mask, deterministic):
        out = self.text_model(input_ids, attention_mask=attention_mask,
                              deterministic=deterministic)
        pooled = pool_tokens(out, self.config.text_pool, attention_mask)
        return self.text_projection(pooled), out

    def encode_image(self, image: Array, *, normalize: bool = True,
                     deterministic: bool = True) -> Array:
        emb, _ = self._image(image, deterministic)
        return l2_normalize(emb) if normalize else emb

    def encode_text(self, input_ids: Array, attention_mask: Array | None = None, *,
                    normalize: bool = True, deterministic: bool = True) -> Array:
        emb, _ = self._text(input_ids, attention_mask, deterministic)
        return l2_normalize(emb) if normalize else emb

    def __call__(self, input_ids: Array, image: Array, attention_mask: Array | None = None, *,
                 deterministic: bool = True) -> CLIPOutput:
        image_embeds, image_out = self._image(image, deterministic)
        text_embeds, text_out = self._text(input_ids, attention_mask, deterministic)
        image_embeds, text_embeds = l2_normalize(image_embeds), l2_normalize(text_embeds)
        logits_per_text = text_embeds @ image_embeds.T * jnp.exp(self.logit_scale)
        bias = None
        if self.config.logit_bias_init_value is not None:
            bias = self.logit_bias
            logits_per_text = logits_per_text + bias
        return CLIPOutput(
            logits_per_image=logits_per_text.T, logits_per_text=logits_per_text,
            text_embeds=text_embeds, image_embeds=image_embeds, text_model_output=text_out,
            vision_model_output=image_out, logit_scale=self.logit_scale, logit_bias=bias,
        )
