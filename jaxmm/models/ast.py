"""Audio Spectrogram Transformer (AST-style): log-mel patches -> ViT encoder.

``input_features`` ``(B, n_mels, frames)`` (the layout of
:func:`jaxmm.audio_features.melspectrogram` / :func:`jaxmm.audio_features.whisper_log_mel`) are
treated as a one-channel image of height ``n_mels`` and width ``frames``, cut
into non-overlapping ``patch_size`` squares and encoded by a
:class:`~jaxmm.models.vit.ViTModel` (class token, learned 2-D positions,
pre-LN Transformer). Clips shorter than ``max_frames`` are padded with any
value and described by ``attention_mask`` ``(B, frames)``: patches whose
frames are all padding are masked out of attention and of mean pooling.

Used for audio classification (:class:`ASTForAudioClassification`) and as
the audio tower in fusion models (``last_hidden_state`` tokens,
``pooler_output``). Unlike the original AST, patches do not overlap.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxmm.audio_features import check_sample_rate
from jaxmm.layers import classifier_head
from jaxmm.layers.blocks import DTYPES
from jaxmm.layers.config_fields import (
    ComputeFields,
    DropoutFields,
    TransformerFields,
    shared_field_values,
)
from jaxmm.models.outputs import BaseModelOutput, SequenceClassifierOutput
from jaxmm.models.registry import register
from jaxmm.models.specs import InputSpec
from jaxmm.models.vit import ViTConfig, ViTModel

Array = jax.Array

__all__ = ["ASTConfig", "ASTForAudioClassification", "ASTModel"]


@dataclasses.dataclass(frozen=True, kw_only=True)
class ASTConfig(ComputeFields, DropoutFields, TransformerFields):
    """AST hyper-parameters.

    num_mel_bins, max_frames: the feature grid (both multiples of patch_size);
    sample_rate: the audio rate the features were computed at; the shared
    Transformer, dropout and compute fields (:mod:`jaxmm.layers.config_fields`)
    as in :class:`~jaxmm.models.vit.ViTConfig`; pool_type ``"cls"`` or
    ``"mean"``; num_labels for :class:`ASTForAudioClassification`.
    """

    DEFAULTS: ClassVar = dict(num_layers=12, d_model=768, num_heads=12, mlp_dim=3072,
                              norm_eps=1e-12)

    num_mel_bins: int = 128
    max_frames: int = 1024
    patch_size: int = 16
    sample_rate: int = 16000
    pool_type: str = "cls"
    num_labels: int = 527

    SIZES: ClassVar = {
        "tiny": dict(num_mel_bins=16, max_frames=64, patch_size=8, num_layers=2, d_model=64,
                     num_heads=4, mlp_dim=128, num_labels=10),
        "base": dict(),
    }

    def input_specs(self) -> dict:
        """``input_features`` ``(num_mel_bins, max_frames)`` (log-mel, frames last)."""
        return {"input_features": InputSpec((self.num_mel_bins, self.max_frames))}

    def validate(self) -> None:
        if self.num_mel_bins % self.patch_size or self.max_frames % self.patch_size:
            raise self.config_error(
                f"num_mel_bins ({self.num_mel_bins}) and max_frames ({self.max_frames}) must "
                f"be multiples of patch_size ({self.patch_size})."
            )
        self.vit  # noqa: B018 - validates the encoder settings

    @property
    def vit(self) -> ViTConfig:
        """The encoder as a ViT over a ``(num_mel_bins, max_frames, 1)`` image."""
        return ViTConfig(
            **shared_field_values(self, TransformerFields, DropoutFields, ComputeFields),
            image_size=(self.num_mel_bins, self.max_frames), patch_size=self.patch_size,
            num_channels=1, pool_type=self.pool_type, use_pooler=False,
            num_labels=self.num_labels,
        )


def _patch_mask(attention_mask: Array, cfg: ASTConfig) -> Array:
    """Frame mask ``(B, frames)`` -> patch mask ``(B, gh * gw)`` (row-major over mel, time)."""
    b, frames = attention_mask.shape
    if frames != cfg.max_frames:
        raise ValueError(
            f"AST attention_mask must be (batch, {cfg.max_frames}) over frames; got "
            f"{tuple(attention_mask.shape)}."
        )
    p = cfg.patch_size
    per_time = attention_mask.reshape(b, frames // p, p).max(-1)
    return jnp.tile(per_time, (1, cfg.num_mel_bins // p))


@register("ast", ASTConfig)
class ASTModel(nn.Module):
    """``input_features`` ``(B, n_mels, max_frames)`` -> ``BaseModelOutput`` with
    ``last_hidden_state`` ``(B, 1 + num_patches, D)`` and ``pooler_output`` ``(B, D)``.

    ``sample_rate`` (optional) is checked against ``config.sample_rate``.
    """

    config: ASTConfig

    @nn.compact
    def __call__(self, input_features: Array, attention_mask: Array | None = None, *,
                 sample_rate: int | None = None, deterministic: bool = True,
                 output_attentions: bool = False, output_hidden_states: bool = False
                 ) -> BaseModelOutput:
        cfg = self.config
        if sample_rate is not None:
            check_sample_rate(sample_rate, cfg.sample_rate, "This audio model")
        want = (cfg.num_mel_bins, cfg.max_frames)
        if input_features.ndim != 3 or tuple(input_features.shape[1:]) != want:
            raise ValueError(
                f"AST expects input_features (batch, {want[0]} mel bins, {want[1]} frames); got "
                f"shape {tuple(input_features.shape)}. Pad or crop clips to {want[1]} frames "
                "and pass attention_mask (batch, frames) to mark the real ones."
            )
        mask = None if attention_mask is None else _patch_mask(jnp.asarray(attention_mask), cfg)
        return ViTModel(cfg.vit, name="encoder")(
            input_features[..., None], mask, deterministic=deterministic,
            output_attentions=output_attentions, output_hidden_states=output_hidden_states,
        )


@register("ast_classifier", ASTConfig)
class ASTForAudioClassification(nn.Module):
    """AST + linear head on the pooled features -> ``logits`` ``(B, num_labels)``."""

    config: ASTConfig

    @nn.compact
    def __call__(self, input_features: Array, attention_mask: Array | None = None, *,
                 sample_rate: int | None = None, deterministic: bool = True,
                 output_attentions: bool = False, output_hidden_states: bool = False
                 ) -> SequenceClassifierOutput:
        cfg = self.config
        out = ASTModel(cfg, name="ast")(
            input_features, attention_mask, sample_rate=sample_rate, deterministic=deterministic,
            output_attentions=output_attentions, output_hidden_states=output_hidden_states,
        )
        head = classifier_head(cfg.num_labels, DTYPES[cfg.dtype], DTYPES[cfg.param_dtype])
        logits = head(out.pooler_output)
        return SequenceClassifierOutput(logits=logits.astype(jnp.float32),
                                        hidden_states=out.hidden_states,
                                        attentions=out.attentions)
