"""Video encoder: factorised space-time Transformer (ViViT "factorised encoder").

``video`` ``(B, F, H, W, C)`` -> per-frame (``tubelet_size=1``) or tubelet
(``tubelet_size=t``: ``t x p x p`` 3-D patches) embedding -> a spatial ViT over
each frame's (tubelet's) patches -> one feature per frame (its class token or
patch mean) -> temporal [CLS] + learned temporal positions -> temporal
Transformer -> pooled clip feature.

A tubelet of ``t`` frames is embedded as an image whose channels are the
``t`` frames stacked (``t * C`` channels): the 2-D patch kernel
``(p, p, t * C, D)`` is exactly the 3-D kernel ``(t, p, p, C, D)`` reshaped, so
both modes share :class:`~jaxmm.models.vit.ViTModel` and a pretrained image
ViT (``tubelet_size=1``) can serve as the frame encoder (``params["frames"]``).

Frame counts: ``F`` must be a multiple of ``tubelet_size`` and at most
``num_frames`` (shorter clips use the first temporal positions).
``attention_mask`` ``(B, F)`` marks real frames of padded clips: padded
time steps are hidden from temporal attention and from mean pooling.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxmm.config import ConfigBase
from jaxmm.layers import TransformerConfig, TransformerStack, classifier_head, key_padding_mask
from jaxmm.layers.blocks import DTYPES
from jaxmm.models.outputs import BaseModelOutput, SequenceClassifierOutput
from jaxmm.models.registry import register
from jaxmm.models.specs import InputSpec
from jaxmm.models.vit import ViTConfig, ViTModel

Array = jax.Array

__all__ = ["VideoConfig", "VideoEncoder", "VideoForClassification"]


@dataclasses.dataclass(frozen=True, kw_only=True)
class VideoConfig(ConfigBase):
    """Video encoder hyper-parameters.

    spatial: the frame encoder, a :class:`ViTConfig` for *one frame* (its
      ``num_channels`` are a frame's channels; tubelets multiply them).
    num_frames: longest clip (frames); tubelet_size: frames per tubelet.
    num_temporal_layers, temporal_heads / temporal_mlp_dim (default: the
      spatial ones): the temporal Transformer (width = ``spatial.d_model``).
    pool_type: ``"cls"`` (temporal class token) or ``"mean"`` (over time steps).
    num_labels: classes of :class:`VideoForClassification`.
    """

    spatial: ViTConfig = dataclasses.field(default_factory=ViTConfig)
    num_frames: int = 16
    tubelet_size: int = 2
    num_temporal_layers: int = 4
    temporal_heads: int | None = None
    temporal_mlp_dim: int | None = None
    pool_type: str = "cls"
    num_labels: int = 400

    SIZES: ClassVar = {
        "tiny": dict(spatial=dict(image_size=16, patch_size=8, num_layers=1, d_model=32,
                                  num_heads=4, mlp_dim=64, use_pooler=False),
                     num_frames=8, tubelet_size=2, num_temporal_layers=1, num_labels=5),
        "base": dict(spatial=dict(use_pooler=False), num_frames=32, tubelet_size=2,
                     num_temporal_layers=4),
    }

    def input_specs(self) -> dict:
        """``video`` ``(num_frames, H, W, C)`` (frames of ``spatial.image_size``)."""
        h, w = self.spatial.image_hw
        return {"video": InputSpec((self.num_frames, h, w, self.spatial.num_channels))}

    def validate(self) -> None:
        if not isinstance(self.spatial, ViTConfig):
            raise self.config_error(f"spatial must be a ViTConfig or a mapping of its fields; "
                                    f"got {type(self.spatial).__name__}.")
        if self.tubelet_size < 1 or self.num_frames % self.tubelet_size:
            raise self.config_error(
                f"num_frames ({self.num_frames}) must be a positive multiple of tubelet_size "
                f"({self.tubelet_size})."
            )
        self.require_one_of("pool_type", ("cls", "mean"))
        self.temporal  # noqa: B018 - validates

    @property
    def num_steps(self) -> int:
        """Temporal positions: ``num_frames // tubelet_size``."""
        return self.num_frames // self.tubelet_size

    @property
    def frame_encoder(self) -> ViTConfig:
        """The ViT applied to each tubelet (channels = ``tubelet_size * C``)."""
        s = self.spatial
        return s.replace(num_channels=s.num_channels * self.tubelet_size, use_pooler=False)

    @property
    def temporal(self) -> TransformerConfig:
        s = self.spatial
        return s.transformer.replace(
            num_layers=self.num_temporal_layers, num_heads=self.temporal_heads or s.num_heads,
            mlp_dim=self.temporal_mlp_dim or s.mlp_dim,
        )


def _check_video(video: Array, cfg: VideoConfig) -> None:
    s = cfg.spatial
    if video.ndim != 5:
        raise ValueError(
            f"Video encoder expects video (batch, frames, height, width, channels); got shape "
            f"{tuple(video.shape)}."
        )
    f, c = video.shape[1], video.shape[-1]
    if c != s.num_channels:
        raise ValueError(f"Video has {c} channels; the model expects {s.num_channels} "
                         "(last axis, NHWC frames).")
    if f % cfg.tubelet_size or f > cfg.num_frames or f == 0:
        raise ValueError(
            f"Clip has {f} frames; the model takes 1..{cfg.num_frames} frames in multiples of "
            f"tubelet_size={cfg.tubelet_size}. Sample or pad frames (mark padding with "
            "attention_mask), or build the model with a larger num_frames."
        )


@register("video", VideoConfig)
class VideoEncoder(nn.Module):
    """``video`` ``(B, F, H, W, C)`` -> ``BaseModelOutput``.

    ``last_hidden_state`` ``(B, 1 + F // t, D)`` (temporal class token first,
    then one token per time step), ``pooler_output`` ``(B, D)``.
    ``attention_mask`` ``(B, F)``: 1 for real frames; a time step (tubelet) is
    real if any of its frames is. ``interpolate_pos_encoding`` lets frames
    have another size than ``spatial.image_size`` (as in ViT).
    ``output_attentions`` / ``output_hidden_states`` return the temporal
    Transformer's (the encoder contract every captioner/dual-encoder tower shares).
    """

    config: VideoConfig

    @nn.compact
    def __call__(self, video: Array, attention_mask: Array | None = None, *,
                 interpolate_pos_encoding: bool = False, deterministic: bool = True,
                 output_attentions: bool = False, output_hidden_states: bool = False
                 ) -> BaseModelOutput:
        cfg = self.config
        _check_video(video, cfg)
        b, f, h, w, c = video.shape
        t = cfg.tubelet_size
        steps = f // t
        # (B, F, H, W, C) -> (B * steps, H, W, t * C): each tubelet as one image.
        frames = video.reshape(b, steps, t, h, w, c).transpose(0, 1, 3, 4, 2, 5)
        frames = frames.reshape(b * steps, h, w, t * c)
        per_frame = ViTModel(cfg.frame_encoder, name="frames")(
            frames, interpolate_pos_encoding=interpolate_pos_encoding,
            deterministic=deterministic,
        ).pooler_output.reshape(b, steps, -1)

        d = cfg.spatial.d_model
        pdtype = DTYPES[cfg.spatial.param_dtype]
        cls = self.param("cls_token", nn.with_logical_partitioning(
            nn.initializers.zeros, (None, None, "embed")), (1, 1, d), pdtype)
        table = self.param("temporal_position_embedding", nn.with_logical_partitioning(
            nn.initializers.normal(0.02), ("position", "embed")), (cfg.num_steps + 1, d), pdtype)
        x = jnp.concatenate([jnp.broadcast_to(cls, (b, 1, d)).astype(per_frame.dtype),
                             per_frame], 1)
        x = x + table[None, : steps + 1].astype(x.dtype)
        valid = None
        if attention_mask is not None:
            if attention_mask.shape != (b, f):
                raise ValueError(f"Video attention_mask must be (batch, frames) = {(b, f)}; got "
                                 f"{tuple(attention_mask.shape)}.")
            valid = jnp.asarray(attention_mask).reshape(b, steps, t).max(-1)
        mask = None if valid is None else key_padding_mask(
            jnp.concatenate([jnp.ones_like(valid[:, :1]), valid], 1))
        out = TransformerStack(cfg.temporal, name="temporal")(
            x, mask=mask, deterministic=deterministic, output_attentions=output_attentions,
            output_hidden_states=output_hidden_states)
        hidden = out.last_hidden_state
        if cfg.pool_type == "cls":
            pooled = hidden[:, 0]
        else:
            weights = (jnp.ones((b, steps)) if valid is None else valid).astype(jnp.float32)
            pooled = (hidden[:, 1:].astype(jnp.float32) * weights[..., None]).sum(1)
            pooled = (pooled / jnp.maximum(weights.sum(1, keepdims=True), 1.0)).astype(
                hidden.dtype)
        return BaseModelOutput(last_hidden_state=hidden, pooler_output=pooled,
                               hidden_states=out.hidden_states, attentions=out.attentions)


@register("video_classifier", VideoConfig)
class VideoForClassification(nn.Module):
    """Video encoder + linear head on the pooled clip feature -> ``logits`` ``(B, num_labels)``."""

    config: VideoConfig

    @nn.compact
    def __call__(self, video: Array, attention_mask: Array | None = None, *,
                 interpolate_pos_encoding: bool = False, deterministic: bool = True,
                 output_attentions: bool = False) -> SequenceClassifierOutput:
        cfg = self.config
        out = VideoEncoder(cfg, name="video")(
            video, attention_mask, interpolate_pos_encoding=interpolate_pos_encoding,
            deterministic=deterministic, output_attentions=output_attentions)
        head = classifier_head(cfg.num_labels, DTYPES[cfg.spatial.dtype],
                               DTYPES[cfg.spatial.param_dtype])
        logits = head(out.pooler_output)
        return SequenceClassifierOutput(logits=logits.astype(jnp.float32),
                                        attentions=out.attentions)
