"""ResNet-style CNN image encoder: a feature map as a token sequence.

``image`` ``(B, H, W, C)`` -> stem -> stages of residual blocks (BasicBlock
or Bottleneck, v1.5: the stride sits in the 3x3 conv) -> feature map
``(B, h, w, D)``, returned as ``last_hidden_state`` ``(B, h * w, D)`` (row-major
tokens, ready for fusion/cross-attention) plus ``pooler_output`` ``(B, D)``
(global average). ``D`` is the last stage's width (x4 for Bottleneck), or
``projection_dim`` when set (a linear map to the fusion width).

Normalisation is ``"group"`` (GroupNorm, no state), ``"frozen_batch"`` (a
fixed per-channel affine map ``x * scale + bias``: a BatchNorm whose running
statistics are folded into its scale and bias, as DETR's backbone uses; no
state) or ``"batch"`` (BatchNorm). With BatchNorm, training calls use the batch statistics and
update the running averages in the ``batch_stats`` collection::

    variables = model.init(rng, image)            # {"params", "batch_stats"}
    out, updates = model.apply(variables, image, deterministic=False,
                               mutable=["batch_stats"])
    variables = {**variables, **updates}

and evaluation (``deterministic=True``, the default) uses the running
averages. Under ``jax.jit`` with a data-sharded batch the batch statistics
are global (XLA inserts the cross-device reduction).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxmm.layers import DTYPES, classifier_head
from jaxmm.layers.config_fields import NormFields, PrecisionFields
from jaxmm.models.outputs import BaseModelOutput, SequenceClassifierOutput
from jaxmm.models.registry import register
from jaxmm.models.specs import InputSpec

Array = jax.Array

__all__ = ["FrozenBatchNorm", "ResNetConfig", "ResNetEncoder", "ResNetForImageClassification"]

_CONV_AXES = ("conv_height", "conv_width", "conv_in", "conv_out")


@dataclasses.dataclass(frozen=True, kw_only=True)
class ResNetConfig(PrecisionFields, NormFields):
    """ResNet hyper-parameters.

    ``dtype``, ``param_dtype`` and ``norm_eps`` (of every norm) are the shared
    fields of :mod:`jaxmm.layers.config_fields`.

    block: ``"basic"`` (two 3x3 convs) or ``"bottleneck"`` (1x1-3x3-1x1, x4 width).
    stage_sizes: blocks per stage; stage ``i`` has width ``width * 2**i`` and
      (after the first) halves the resolution.
    stem: ``"imagenet"`` (7x7/2 conv + 3x3/2 max-pool, /4) or ``"small"``
      (3x3/1 conv, for small images such as CIFAR/MNIST).
    norm: ``"batch"``, ``"group"`` (``num_groups`` groups) or ``"frozen_batch"``
      (:class:`FrozenBatchNorm`: BatchNorm at fixed statistics, folded into scale/bias).
    projection_dim: if set, a final linear map of the tokens to this width.
    num_labels: classes of :class:`ResNetForImageClassification`.
    """

    num_channels: int = 3
    block: str = "basic"
    stage_sizes: tuple[int, ...] = (2, 2, 2, 2)
    width: int = 64
    stem: str = "imagenet"
    norm: str = "batch"
    num_groups: int = 32
    batch_norm_momentum: float = 0.9
    projection_dim: int | None = None
    num_labels: int = 1000

    SIZES: ClassVar = {
        "tiny": dict(stage_sizes=(1, 1), width=16, stem="small", norm="group", num_groups=4),
        "resnet18": dict(block="basic", stage_sizes=(2, 2, 2, 2)),
        "resnet34": dict(block="basic", stage_sizes=(3, 4, 6, 3)),
        "resnet50": dict(block="bottleneck", stage_sizes=(3, 4, 6, 3)),
        "resnet101": dict(block="bottleneck", stage_sizes=(3, 4, 23, 3)),
    }

    def input_specs(self) -> dict:
        """``image`` of any size (free ``image_size``), ``num_channels`` last."""
        return {"image": InputSpec(("image_size", "image_size", self.num_channels))}

    def validate(self) -> None:
        self.require_one_of("block", ("basic", "bottleneck"))
        self.require_one_of("stem", ("imagenet", "small"))
        self.require_one_of("norm", ("batch", "group", "frozen_batch"))
        if not self.stage_sizes or min(self.stage_sizes) < 1:
            raise self.config_error(
                f"stage_sizes must be non-empty positive counts; got {self.stage_sizes}.")
        if self.norm == "group" and self.width % self.num_groups:
            raise self.config_error(
                f"width ({self.width}) must be a multiple of num_groups ({self.num_groups}).")

    @property
    def hidden_size(self) -> int:
        """Width of the output tokens."""
        last = self.width * 2 ** (len(self.stage_sizes) - 1)
        return self.projection_dim or (last * 4 if self.block == "bottleneck" else last)

    @property
    def downsample(self) -> int:
        """Total stride: input size / feature-map size."""
        return (4 if self.stem == "imagenet" else 1) * 2 ** (len(self.stage_sizes) - 1)


class FrozenBatchNorm(nn.Module):
    """BatchNorm with fixed statistics: ``x * scale + bias`` per channel (last axis).

    A BatchNorm in evaluation mode is exactly this map with
    ``scale = weight / sqrt(running_var + eps)`` and ``bias = bias - running_mean * scale``
    (what checkpoint import stores). It keeps no state; ``scale`` and ``bias`` are
    ordinary params (freeze them with ``optimizer.freeze`` to train as DETR does).
    """

    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32
    scale_init: Callable = nn.initializers.ones
    bias_init: Callable = nn.initializers.zeros

    @nn.compact
    def __call__(self, x: Array) -> Array:
        shape = (x.shape[-1],)
        scale = self.param("scale", self.scale_init, shape, self.param_dtype)
        bias = self.param("bias", self.bias_init, shape, self.param_dtype)
        return (x * scale.astype(self.dtype) + bias.astype(self.dtype)).astype(self.dtype)


class _Ops:
    """Conv / norm factories bound to a config (logical axis names on every param)."""

    def __init__(self, cfg: ResNetConfig, deterministic: bool):
        self.cfg, self.deterministic = cfg, deterministic

    def conv(self, features: int, kernel: int, strides: int = 1, name: str | None = None):
        return nn.Conv(
            features, (kernel, kernel), (strides, strides), padding=[(kernel // 2,) * 2] * 2,
            use_bias=False, dtype=DTYPES[self.cfg.dtype], param_dtype=DTYPES[self.cfg.param_dtype],
            kernel_init=nn.with_logical_partitioning(
                nn.initializers.variance_scaling(2.0, "fan_out", "normal"), _CONV_AXES),
            name=name,
        )

    def norm(self, name: str | None = None, zero_init: bool = False) -> Callable:
        cfg = self.cfg
        scale_init = nn.initializers.zeros if zero_init else nn.initializers.ones
        common = dict(
            epsilon=cfg.norm_eps, dtype=DTYPES[cfg.dtype], param_dtype=DTYPES[cfg.param_dtype],
            scale_init=nn.with_logical_partitioning(scale_init, ("conv_out",)),
            bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("conv_out",)),
            name=name,
        )
        if cfg.norm == "group":
            return nn.GroupNorm(num_groups=cfg.num_groups, **common)
        if cfg.norm == "frozen_batch":
            del common["epsilon"]
            return FrozenBatchNorm(**common)
        return nn.BatchNorm(use_running_average=self.deterministic,
                            momentum=cfg.batch_norm_momentum, **common)


class _Block(nn.Module):
    """Residual block (basic or bottleneck); zero-initialised last norm scale."""

    config: ResNetConfig
    features: int
    strides: int
    deterministic: bool

    @nn.compact
    def __call__(self, x: Array) -> Array:
        ops = _Ops(self.config, self.deterministic)
        if self.config.block == "basic":
            y = nn.relu(ops.norm()(ops.conv(self.features, 3, self.strides)(x)))
            y = ops.norm(zero_init=True)(ops.conv(self.features, 3)(y))
            out_features = self.features
        else:
            y = nn.relu(ops.norm()(ops.conv(self.features, 1)(x)))
            y = nn.relu(ops.norm()(ops.conv(self.features, 3, self.strides)(y)))
            out_features = 4 * self.features
            y = ops.norm(zero_init=True)(ops.conv(out_features, 1)(y))
        if x.shape[-1] != out_features or self.strides != 1:
            x = ops.norm(name="shortcut_norm")(
                ops.conv(out_features, 1, self.strides, name="shortcut")(x))
        return nn.relu(x + y)


@register("resnet", ResNetConfig)
class ResNetEncoder(nn.Module):
    """CNN encoder: ``image`` ``(B, H, W, C)`` -> ``BaseModelOutput``.

    ``last_hidden_state`` ``(B, h * w, D)`` with ``h = H / downsample``
    (rounded up), ``pooler_output`` ``(B, D)``; with ``output_hidden_states``
    ``hidden_states`` holds each stage's feature map ``(B, h_i, w_i, C_i)``.
    """

    config: ResNetConfig

    @nn.compact
    def __call__(self, image: Array, *, deterministic: bool = True,
                 output_attentions: bool = False,
                 output_hidden_states: bool = False) -> BaseModelOutput:
        # output_attentions: accepted as every encoder does (a CNN has none to return).
        del output_attentions
        cfg = self.config
        if image.ndim != 4 or image.shape[-1] != cfg.num_channels:
            raise ValueError(
                f"ResNet expects images (batch, height, width, {cfg.num_channels}) NHWC; got "
                f"shape {tuple(image.shape)}."
            )
        if min(image.shape[1:3]) < cfg.downsample:
            raise ValueError(
                f"Image {image.shape[1]}x{image.shape[2]} is smaller than the network's total "
                f"stride {cfg.downsample}; use larger images or stem='small'/fewer stages."
            )
        ops = _Ops(cfg, deterministic)
        x = image.astype(DTYPES[cfg.dtype])
        if cfg.stem == "imagenet":
            x = nn.relu(ops.norm(name="stem_norm")(ops.conv(cfg.width, 7, 2, name="stem")(x)))
            x = nn.max_pool(x, (3, 3), (2, 2), padding=((1, 1), (1, 1)))
        else:
            x = nn.relu(ops.norm(name="stem_norm")(ops.conv(cfg.width, 3, 1, name="stem")(x)))
        maps = []
        for i, count in enumerate(cfg.stage_sizes):
            for j in range(count):
                strides = 2 if i > 0 and j == 0 else 1
                x = _Block(cfg, cfg.width * 2**i, strides, deterministic,
                           name=f"stage{i}_block{j}")(x)
            maps.append(x)
        b, h, w, c = x.shape
        tokens = x.reshape(b, h * w, c)
        if cfg.projection_dim:
            tokens = nn.DenseGeneral(
                cfg.projection_dim, dtype=DTYPES[cfg.dtype], param_dtype=DTYPES[cfg.param_dtype],
                kernel_init=nn.with_logical_partitioning(nn.initializers.lecun_normal(),
                                                         ("conv_out", "embed")),
                bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("embed",)),
                name="projection",
            )(tokens)
        tokens = nn.with_logical_constraint(tokens, ("batch", "length", "embed"))
        return BaseModelOutput(
            last_hidden_state=tokens, pooler_output=tokens.mean(axis=1),
            hidden_states=tuple(maps) if output_hidden_states else None,
        )


@register("resnet_classifier", ResNetConfig)
class ResNetForImageClassification(nn.Module):
    """ResNet + linear classifier on the pooled features -> ``logits`` ``(B, num_labels)``."""

    config: ResNetConfig

    @nn.compact
    def __call__(self, image: Array, *, deterministic: bool = True,
                 output_hidden_states: bool = False) -> SequenceClassifierOutput:
        cfg = self.config
        out = ResNetEncoder(cfg, name="resnet")(image, deterministic=deterministic,
                                                output_hidden_states=output_hidden_states)
        head = classifier_head(cfg.num_labels, DTYPES[cfg.dtype], DTYPES[cfg.param_dtype])
        logits = head(out.pooler_output)
        return SequenceClassifierOutput(logits=logits.astype(jnp.float32),
                                        hidden_states=out.hidden_states)
