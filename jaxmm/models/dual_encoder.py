"""Generic dual encoder: two registered towers over any two modalities.

Builds the two towers from the model registry (``vit``, ``resnet``,
``clip_vision`` for images; ``video`` for clips; ``ast``, ``whisper_encoder``
for audio; ``bert``, ``gpt``, ``clip_text``, ... for text), pools each tower's
output, projects both to ``projection_dim`` and scores pairs CLIP-style.
``modalities`` picks the pair (image-text by default; audio-text, video-text,
video-audio...). Outputs are :class:`DualEncoderOutput`: for image-text the
fields of :class:`~jaxmm.models.clip.CLIPModel`'s output (``logits_per_image``,
``logits_per_text``, ``image_embeds``, ``text_embeds``), in general
``<modality>_embeds`` and ``logits_per_<modality>`` for the two modalities, plus
the learnable ``logit_scale`` (and ``logit_bias`` for SigLIP), so the same
losses, retrieval metrics and zero-shot helpers apply.

Tower calling convention (the encoder contract): a tower is called with its
input field (the one its :mod:`~jaxmm.models.specs` declare: ``image``,
``video``, ``input_features``) as ``enc(x, deterministic=...)``; text towers as
``enc(input_ids, attention_mask=..., deterministic=...)``; each returns an
output with ``last_hidden_state`` (and ``pooler_output`` for ``pool='pooler'``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, ClassVar

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp

from jaxmm.config import ConfigBase, ConfigError
from jaxmm.layers.norms import l2_normalize
from jaxmm.models import registry
from jaxmm.models.specs import MODALITY_FIELDS, input_specs

Array = jax.Array

__all__ = ["DualEncoder", "DualEncoderConfig", "DualEncoderOutput", "masked_mean",
           "pool_tokens", "resolve_encoder_config"]

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


SIDES = ("image", "text", "audio", "video")
# The parameter names of each side's tower and projection (image/text as before).
_TOWER = {"image": "image_model", "text": "text_model", "audio": "audio_model",
          "video": "video_model"}
_PROJECTION = {"image": "visual_projection", "text": "text_projection",
               "audio": "audio_projection", "video": "video_projection"}
_OUTPUT = {"image": "vision_model_output", "text": "text_model_output",
           "audio": "audio_model_output", "video": "video_model_output"}


@dataclasses.dataclass(frozen=True, kw_only=True)
class DualEncoderConfig(ConfigBase):
    """A dual encoder from two registered towers.

    Attributes:
      modalities: the two sides, any pair of ``image``, ``text``, ``audio``,
        ``video`` (the first is the "query" side of ``logits``).
      image_encoder / text_encoder / audio_encoder / video_encoder: registered
        model names of each side's tower (only the two in ``modalities`` are built).
      image_encoder_config / ...: their configs: a size name (``"tiny"``), a
        mapping (``{"size": "tiny", "num_layers": 1}`` or full fields) or a config
        object; they become config objects when this config is made
        (:func:`resolve_encoder_config`).
      image_pool / text_pool / audio_pool / video_pool: ``pooler``, ``cls``,
        ``mean`` or ``last`` (``mean`` for towers without a pooler, e.g.
        ``whisper_encoder``).
      projection_dim, projection_bias: the two projection heads.
      logit_scale_init_value: initial log inverse temperature.
      logit_bias_init_value: if set, a learnable logit bias (SigLIP uses -10).
    """

    modalities: tuple[str, ...] = ("image", "text")
    image_encoder: str = "vit"
    image_encoder_config: Any = "tiny"
    text_encoder: str = "clip_text"
    text_encoder_config: Any = "tiny"
    audio_encoder: str = "ast"
    audio_encoder_config: Any = "tiny"
    video_encoder: str = "video"
    video_encoder_config: Any = "tiny"
    image_pool: str = "pooler"
    text_pool: str = "pooler"
    audio_pool: str = "pooler"
    video_pool: str = "pooler"
    projection_dim: int = 64
    projection_bias: bool = False
    logit_scale_init_value: float = 2.6592
    logit_bias_init_value: float | None = None

    SIZES: ClassVar = {"tiny": {}}

    @classmethod
    def prepare(cls, values: dict[str, Any]) -> dict[str, Any]:
        values = super().prepare(values)
        values["modalities"] = tuple(values["modalities"])
        for which in SIDES:
            values[f"{which}_encoder_config"] = resolve_encoder_config(
                values[f"{which}_encoder"], values[f"{which}_encoder_config"])
        return values

    def validate(self) -> None:
        mods = self.modalities
        unknown = [m for m in mods if m not in SIDES]
        if len(mods) != 2 or unknown or mods[0] == mods[1]:
            raise self.config_error(
                f"modalities must be two different ones of {', '.join(SIDES)}; got "
                f"{tuple(mods)}" + (f" ({', '.join(map(repr, unknown))} unknown)" if unknown
                                   else "") + ", e.g. modalities=('audio', 'text').")
        for which in SIDES:
            self.require_one_of(f"{which}_pool", POOLS)
        self.require_at_least(1, "projection_dim")

    def tower(self, modality: str) -> tuple[str, Any]:
        """``(registered name, config)`` of ``modality``'s tower."""
        return getattr(self, f"{modality}_encoder"), getattr(self, f"{modality}_encoder_config")

    def input_specs(self) -> dict | None:
        """The two towers' inputs (``None`` if a tower declares none)."""
        out: dict = {}
        for m in self.modalities:
            name, cfg = self.tower(m)
            specs = input_specs(registry.get(name).module_cls, cfg)
            if specs is None:
                return None
            fields = MODALITY_FIELDS[m] + (("attention_mask",) if m == "text" else ())
            mine = {k: v for k, v in specs.items() if k in fields}
            if not any(f in mine for f in MODALITY_FIELDS[m]):
                raise self.config_error(
                    f"the {m} tower {name!r} reads {', '.join(specs)}, not {m} "
                    f"({' or '.join(MODALITY_FIELDS[m])}); set {m}_encoder to a {m} encoder.")
            out.update(mine)
        return out


@flax.struct.dataclass
class DualEncoderOutput:
    """What :class:`DualEncoder` returns; only its two modalities' fields are set.

    ``<m>_embeds`` ``(B_m, D)`` are L2-normalised; ``logits_per_<a>`` ``(B_a, B_b)``
    is ``exp(logit_scale) * a_embeds @ b_embeds.T (+ logit_bias)`` and
    ``logits_per_<b>`` its transpose; ``*_model_output`` are the towers' outputs
    (``vision_model_output`` for images, as CLIP's).
    """

    image_embeds: Array | None = None
    text_embeds: Array | None = None
    audio_embeds: Array | None = None
    video_embeds: Array | None = None
    logits_per_image: Array | None = None
    logits_per_text: Array | None = None
    logits_per_audio: Array | None = None
    logits_per_video: Array | None = None
    vision_model_output: Any = None
    text_model_output: Any = None
    audio_model_output: Any = None
    video_model_output: Any = None
    logit_scale: Array | None = None
    logit_bias: Array | None = None


@registry.register("dual_encoder", DualEncoderConfig)
class DualEncoder(nn.Module):
    """CLIP-style dual encoder over registered towers (see the module docstring).

    ``__call__(input_ids=None, image=None, attention_mask=None, *, video=None,
    input_features=None)`` reads the fields of its two ``modalities``
    (``input_features`` ``(B, mels, frames)`` for audio) -> :class:`DualEncoderOutput`.
    ``encode_image`` / ``encode_text`` / ``encode_audio`` / ``encode_video``
    return ``(B, projection_dim)`` embeddings (normalised unless ``normalize=False``).
    """

    config: DualEncoderConfig

    def setup(self):
        cfg = self.config
        dense = lambda: nn.Dense(  # noqa: E731
            cfg.projection_dim, use_bias=cfg.projection_bias,
            kernel_init=nn.with_logical_partitioning(nn.initializers.normal(0.02),
                                                     ("embed", "mlp")),
            bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("mlp",)),
        )
        for m in cfg.modalities:
            name, tower_cfg = cfg.tower(m)
            setattr(self, _TOWER[m], registry.get(name).module_cls(tower_cfg))
            setattr(self, _PROJECTION[m], dense())
        self.logit_scale = self.param(
            "logit_scale", nn.with_logical_partitioning(
                nn.initializers.constant(cfg.logit_scale_init_value), ()), (), jnp.float32)
        if cfg.logit_bias_init_value is not None:
            self.logit_bias = self.param(
                "logit_bias", nn.with_logical_partitioning(
                    nn.initializers.constant(cfg.logit_bias_init_value), ()), (), jnp.float32)

    def _side(self, m: str, x: Array, attention_mask: Array | None, deterministic: bool):
        if m not in self.config.modalities:
            raise ConfigError(
                f"This dual encoder has no {m} tower (modalities={self.config.modalities}); "
                f"build it with modalities including {m!r}.")
        tower = getattr(self, _TOWER[m])
        if m == "text":
            out = tower(x, attention_mask=attention_mask, deterministic=deterministic)
        else:
            out = tower(x, deterministic=deterministic)
        pooled = pool_tokens(out, getattr(self.config, f"{m}_pool"),
                             attention_mask if m == "text" else None)
        return getattr(self, _PROJECTION[m])(pooled), out

    def _encode(self, m, x, attention_mask, normalize, deterministic):
        emb, _ = self._side(m, x, attention_mask, deterministic)
        return l2_normalize(emb) if normalize else emb

    def encode_image(self, image: Array, *, normalize: bool = True,
                     deterministic: bool = True) -> Array:
        return self._encode("image", image, None, normalize, deterministic)

    def encode_text(self, input_ids: Array, attention_mask: Array | None = None, *,
                    normalize: bool = True, deterministic: bool = True) -> Array:
        return self._encode("text", input_ids, attention_mask, normalize, deterministic)

    def encode_audio(self, input_features: Array, *, normalize: bool = True,
                     deterministic: bool = True) -> Array:
        return self._encode("audio", input_features, None, normalize, deterministic)

    def encode_video(self, video: Array, *, normalize: bool = True,
                     deterministic: bool = True) -> Array:
        return self._encode("video", video, None, normalize, deterministic)

    def __call__(self, input_ids: Array | None = None, image: Array | None = None,
                 attention_mask: Array | None = None, *, video: Array | None = None,
                 input_features: Array | None = None,
                 deterministic: bool = True) -> DualEncoderOutput:
        given = {"text": input_ids, "image": image, "video": video, "audio": input_features}
        a, b = self.config.modalities
        missing = [m for m in (a, b) if given[m] is None]
        if missing:
            raise ValueError(
                f"This {a}-{b} dual encoder needs "
                + " and ".join(f"{m} ({MODALITY_FIELDS[m][0]})" for m in missing)
                + "; pass them.")
        fields: dict[str, Any] = {}
        embeds = {}
        for m in (a, b):
            emb, out = self._side(m, given[m], attention_mask, deterministic)
            embeds[m] = l2_normalize(emb)
            fields[f"{m}_embeds"] = embeds[m]
            fields[_OUTPUT[m]] = out
        logits = embeds[a] @ embeds[b].T * jnp.exp(self.logit_scale)
        bias = None
        if self.config.logit_bias_init_value is not None:
            bias = self.logit_bias
            logits = logits + bias
        fields[f"logits_per_{a}"], fields[f"logits_per_{b}"] = logits, logits.T
        return DualEncoderOutput(**fields, logit_scale=self.logit_scale, logit_bias=bias)
