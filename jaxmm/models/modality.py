"""Per-modality encoders that turn batch fields into token sequences for fusion.

Each modality reads its fields of the shared batch contract and returns
``(tokens (B, T_m, E_m), mask (B, T_m))``:

=========  ==================================  ==========================================
modality   batch fields                        built-in ``stem``
=========  ==================================  ==========================================
text       ``input_ids`` (+ ``attention_mask``)  token embedding table
image      ``image`` ``(B, H, W, C)``            non-overlapping patches, linear (ViT-style)
audio      ``input_features`` ``(B, mels, F)``   ``frames_per_token`` frames -> linear
           or ``audio`` ``(B, N)`` waveform      ``samples_per_token`` samples -> linear
video      ``video`` ``(B, F, H, W, C)``         tubelets, linear (ViViT-style)
=========  ==================================  ==========================================

Instead of a stem, any registered encoder can be used (``encoder="bert"``,
``"vit"``, ``"resnet"``, ``"ast"``, ``"video"``, ``"clip_text"``, ...): it is
called as ``enc(input, attention_mask=mask, deterministic=...)`` for text and
``enc(input, deterministic=...)`` otherwise, and its ``last_hidden_state`` is
the token sequence. Stems add no positions; set the fusion config's
``max_positions`` to learn them there.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxmm.config import ConfigBase, ConfigError
from jaxmm.layers import ConvStem, Embed, PatchEmbed
from jaxmm.models import registry
from jaxmm.models.config_fields import VocabFields
from jaxmm.models.dual_encoder import resolve_encoder_config
from jaxmm.models.fusion import KNOWN_MODALITIES, FusionConfig, FusionEncoder, FusionOutput
from jaxmm.models.specs import MODALITY_FIELDS, InputSpec, input_specs, text_specs

Array = jax.Array

__all__ = [
    "MODALITY_FIELDS",
    "ModalityEncoder",
    "ModalityEncoderConfig",
    "ModalityEncoders",
    "MultimodalEncoder",
    "collect_inputs",
]

_EXTRA_FIELDS = ("attention_mask", "token_type_ids")


def collect_inputs(modalities: tuple[str, ...], batch: Mapping[str, Any]) -> dict[str, Any]:
    """The batch fields of ``modalities``; a clear error names any that is missing."""
    present = {k: v for k, v in batch.items() if v is not None}
    missing = [m for m in modalities if not any(f in present for f in MODALITY_FIELDS[m])]
    if missing:
        need = "; ".join(f"{m!r} needs {' or '.join(MODALITY_FIELDS[m])}" for m in missing)
        raise ValueError(
            f"Modality {', '.join(repr(m) for m in missing)} is configured but missing from the "
            f"batch ({need}); the batch has {sorted(present) or 'no fields'}. Add it to the "
            f"batch or remove it from the config's fusion.modalities {tuple(modalities)}."
        )
    keep = {f for m in modalities for f in MODALITY_FIELDS[m]} | set(_EXTRA_FIELDS)
    return {k: v for k, v in present.items() if k in keep}


@dataclasses.dataclass(frozen=True, kw_only=True)
class ModalityEncoderConfig(VocabFields):
    """How one modality becomes tokens.

    Attributes:
      encoder: ``"stem"`` (built-in linear tokeniser) or a registered model name.
      config: that model's config: a size name, a mapping (``{"size": "tiny",
        "num_layers": 1}`` or full fields) or a config object; it becomes the
        config object when this config is made (``None``: the model's defaults).
      width: stem token width.
      vocab_size: text stem vocabulary (:class:`~jaxmm.models.config_fields.VocabFields`).
      patch_size, num_channels: image/video stems.
      patch_stem: the image stem: ``"linear"`` (one projection per non-overlapping
        patch, ViT-style) or ``"conv"`` (:class:`~jaxmm.layers.ConvStem`: stride-2 3x3
        convolutions down to the same patch grid; ``patch_size`` a power of two).
      frames_per_token: audio stem on log-mel ``input_features``.
      samples_per_token: audio stem on raw ``audio`` waveforms.
      tubelet_frames: video stem temporal patch size.
    """

    DEFAULTS: ClassVar = dict(vocab_size=1024)

    encoder: str = "stem"
    config: Any = None
    width: int = 64
    patch_size: int = 8
    patch_stem: str = "linear"
    num_channels: int = 3
    frames_per_token: int = 4
    samples_per_token: int = 400
    tubelet_frames: int = 2

    @classmethod
    def prepare(cls, values: dict[str, Any]) -> dict[str, Any]:
        values = super().prepare(values)
        if values["encoder"] != "stem":
            values["config"] = resolve_encoder_config(values["encoder"], values["config"])
        return values

    def validate(self) -> None:
        self.require_at_least(1, "width", "patch_size", "num_channels", "frames_per_token",
                              "samples_per_token", "tubelet_frames")
        self.require_one_of("patch_stem", ("linear", "conv"))

    def input_specs(self, modality: str) -> dict[str, InputSpec] | None:
        """What this encoder reads for ``modality`` (:mod:`jaxmm.models.specs`): a
        registered encoder's own fields, or the stem's (free sizes the data decides)."""
        if self.encoder != "stem":
            specs = input_specs(registry.get(self.encoder).module_cls, self.config)
            if specs is None:
                return None
            keep = MODALITY_FIELDS[modality] + (_EXTRA_FIELDS if modality == "text" else ())
            return {k: v for k, v in specs.items() if k in keep}
        c = self.num_channels
        return {"text": lambda: text_specs(),
                "image": lambda: {"image": InputSpec(("image_size", "image_size", c))},
                "audio": lambda: {"input_features": InputSpec(("n_mels", "frames"))},
                "video": lambda: {"video": InputSpec(("video_frames", "image_size",
                                                      "image_size", c))}}[modality]()


@dataclasses.dataclass(frozen=True, kw_only=True)
class ModalityEncoders(ConfigBase):
    """One :class:`ModalityEncoderConfig` per modality (stems by default)."""

    text: ModalityEncoderConfig = dataclasses.field(default_factory=ModalityEncoderConfig)
    image: ModalityEncoderConfig = dataclasses.field(default_factory=ModalityEncoderConfig)
    audio: ModalityEncoderConfig = dataclasses.field(default_factory=ModalityEncoderConfig)
    video: ModalityEncoderConfig = dataclasses.field(default_factory=ModalityEncoderConfig)

    def input_specs(self, modalities: tuple[str, ...]) -> dict[str, InputSpec] | None:
        """The inputs of ``modalities`` together (``None`` if one declares none)."""
        out: dict[str, InputSpec] = {}
        for m in modalities:
            if m not in KNOWN_MODALITIES:
                return None
            specs = getattr(self, m).input_specs(m)
            if specs is None:
                return None
            out.update(specs)
        return out


def _dense(features: int, name: str) -> nn.Dense:
    return nn.Dense(
        features, kernel_init=nn.with_logical_partitioning(nn.initializers.normal(0.02),
                                                           (None, "embed")),
        bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("embed",)), name=name)


class ModalityEncoder(nn.Module):
    """``batch -> (tokens (B, T, E), mask (B, T) bool)`` for one modality."""

    modality: str
    config: ModalityEncoderConfig

    @nn.compact
    def __call__(self, batch: Mapping[str, Array], *, deterministic: bool = True
                 ) -> tuple[Array, Array]:
        cfg, m = self.config, self.modality
        field = next(f for f in MODALITY_FIELDS[m] if f in batch)
        x = jnp.asarray(batch[field])
        mask = None
        if m == "text":
            if x.ndim != 2:
                raise ValueError(f"input_ids must be (batch, length); got shape {x.shape}.")
            mask = batch.get("attention_mask")
            mask = jnp.ones(x.shape, bool) if mask is None else jnp.asarray(mask).astype(bool)
        if cfg.encoder != "stem":
            enc = registry.get(cfg.encoder).module_cls(cfg.config, name="encoder")
            kwargs = {"attention_mask": mask} if m == "text" else {}
            tokens = enc(x, **kwargs, deterministic=deterministic).last_hidden_state
            if tokens.ndim == 4:  # (B, h, w, C) feature map
                tokens = tokens.reshape(tokens.shape[0], -1, tokens.shape[-1])
        else:
            tokens = self._stem(field, x)
        if mask is None:
            mask = jnp.ones(tokens.shape[:2], bool)
        return tokens, mask

    def _stem(self, field: str, x: Array) -> Array:
        cfg, m = self.config, self.modality
        if m == "text":
            return Embed(cfg.vocab_size, cfg.width, name="embedding")(x)
        if m in ("image", "video"):
            rank = 4 if m == "image" else 5
            layout = "(batch, height, width, channels)" if m == "image" else \
                "(batch, frames, height, width, channels)"
            if x.ndim != rank or x.shape[-1] != cfg.num_channels:
                raise ValueError(
                    f"{field} must be {layout} with {cfg.num_channels} channels last; got shape "
                    f"{tuple(x.shape)}."
                )
            p = cfg.patch_size
            if m == "image" and cfg.patch_stem == "conv":
                y = ConvStem(cfg.width, p, name="conv_stem")(x)
                return y.reshape(y.shape[0], -1, cfg.width)
            patch = (p, p) if m == "image" else (cfg.tubelet_frames, p, p)
            y = PatchEmbed(cfg.width, patch, name="patch_embedding")(x)
            return y.reshape(y.shape[0], -1, cfg.width)
        # audio
        if field == "input_features":
            if x.ndim != 3:
                raise ValueError(f"input_features must be (batch, mel_bins, frames); got shape "
                                 f"{tuple(x.shape)}.")
            step = cfg.frames_per_token
            frames = jnp.swapaxes(x, 1, 2)  # (B, F, mels)
        else:
            if x.ndim != 2:
                raise ValueError(f"audio must be a (batch, samples) waveform; got shape "
                                 f"{tuple(x.shape)}.")
            step = cfg.samples_per_token
            frames = x[..., None]
        n = frames.shape[1] // step
        if n == 0:
            raise ValueError(f"{field} has {frames.shape[1]} steps, fewer than one token "
                             f"({step}); use longer inputs or a smaller per-token size.")
        frames = frames[:, : n * step].reshape(frames.shape[0], n, -1)
        return _dense(cfg.width, "frame_projection")(frames)


class MultimodalEncoder(nn.Module):
    """Modality encoders + :class:`~jaxmm.models.fusion.FusionEncoder`.

    ``__call__(batch)`` -> :class:`~jaxmm.models.fusion.FusionOutput` over
    ``fusion.modalities``; a configured modality that is missing from the
    batch raises an error naming it and listing the batch's fields.
    """

    fusion: FusionConfig
    encoders: ModalityEncoders

    def setup(self):
        unknown = [m for m in self.fusion.modalities if m not in KNOWN_MODALITIES]
        if unknown:
            raise ConfigError(
                f"Modalities {unknown} have no batch fields; use {', '.join(KNOWN_MODALITIES)} "
                "(or call FusionEncoder directly with your own token sequences)."
            )
        self.modality_encoders = {m: ModalityEncoder(m, getattr(self.encoders, m))
                                  for m in self.fusion.modalities}
        self.fusion_encoder = FusionEncoder(self.fusion)

    def __call__(self, batch: Mapping[str, Any], *, deterministic: bool = True,
                 output_attentions: bool = False) -> FusionOutput:
        tokens, masks = self.encode(batch, deterministic=deterministic)
        return self.fuse(tokens, masks, deterministic=deterministic,
                         output_attentions=output_attentions)

    def encode(self, batch: Mapping[str, Any], *, deterministic: bool = True
               ) -> tuple[dict[str, Array], dict[str, Array]]:
        """The modality encoders alone: ``({modality: (B, T_m, E_m)}, {modality: (B, T_m)})``."""
        inputs = collect_inputs(self.fusion.modalities, batch)
        tokens, masks = {}, {}
        for m, enc in self.modality_encoders.items():
            tokens[m], masks[m] = enc(inputs, deterministic=deterministic)
        return tokens, masks

    def fuse(self, tokens: Mapping[str, Array], masks: Mapping[str, Array], *,
             deterministic: bool = True, output_attentions: bool = False) -> FusionOutput:
        """The fusion encoder over :meth:`encode`'s token sequences."""
        return self.fusion_encoder(tokens, masks, deterministic=deterministic,
                                   output_attentions=output_attentions)
