"""DETR-style set-prediction detector (Carion et al. 2020), without the Transformer encoder.

Image ``(B, H, W, C)`` -> a registered image encoder (``resnet`` or ``vit``, ...) ->
tokens ``(B, S, E_enc)`` -> linear projection to ``d_model`` + fixed 2D sine positions of
the feature grid (any image size) ->
a pre-LN Transformer decoder whose ``num_queries`` learned object queries self-attend and
cross-attend to the memory -> per query: class logits over ``num_classes + 1`` (the last
is "no object") and a box ``(cx, cy, w, h)`` in [0, 1] (a 3-layer MLP + sigmoid).

The heads run on every decoder layer's output (after the shared final norm), which the
set criterion (:func:`jaxmm.losses.detr_loss`) uses for DETR's auxiliary losses.
Matching predictions to objects is the criterion's job, not the model's.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, ClassVar

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxmm.layers import DecoderLayer, TransformerConfig, make_norm
from jaxmm.layers.blocks import DTYPES
from jaxmm.layers.config_fields import ComputeFields, DropoutFields, TransformerFields
from jaxmm.models import registry
from jaxmm.models.dual_encoder import resolve_encoder_config

Array = jax.Array

__all__ = ["DetrConfig", "DetrForObjectDetection", "DetrOutput"]


@flax.struct.dataclass(kw_only=True)
class DetrOutput:
    """``logits`` ``(B, Q, num_classes + 1)`` and ``pred_boxes`` ``(B, Q, 4)`` (cxcywh in
    [0, 1]) of the last decoder layer; ``layer_logits`` / ``layer_pred_boxes`` hold every
    decoder layer's ``(L, B, Q, ...)`` (the last row equals the final outputs);
    ``last_hidden_state`` ``(B, Q, D)``; ``encoder_last_hidden_state`` ``(B, S, E_enc)``."""

    logits: Array
    pred_boxes: Array
    layer_logits: Array
    layer_pred_boxes: Array
    last_hidden_state: Array
    encoder_last_hidden_state: Array


_SIZES: dict[str, dict[str, Any]] = {
    "tiny": dict(backbone="resnet", backbone_config="tiny", num_layers=2, d_model=64,
                 num_heads=4, mlp_dim=128, num_queries=8),
    "r50": dict(backbone="resnet", backbone_config="resnet50", num_layers=6, d_model=256,
                num_heads=8, mlp_dim=2048, num_queries=100),
}


@dataclasses.dataclass(frozen=True, kw_only=True)
class DetrConfig(ComputeFields, DropoutFields, TransformerFields):
    """DETR hyper-parameters.

    The decoder's widths (``num_layers`` decoder layers, ``d_model``, ``num_heads``,
    ``mlp_dim``, ``activation``, ...), dropout and compute fields are the shared ones.

    Attributes:
      backbone: a registered image encoder (``"resnet"``, ``"vit"``, ``"clip_vision"``...).
      backbone_config: its config (a size name, a mapping, or a config object).
      num_queries: object queries = most objects one image can have.
      num_classes: object classes; the logits have one more, "no object" (the last).
    """

    DEFAULTS: ClassVar = dict(num_layers=6, d_model=256, num_heads=8, mlp_dim=2048,
                              activation="relu", dropout_rate=0.1)

    backbone: str = "resnet"
    backbone_config: Any = "resnet50"
    num_queries: int = 100
    num_classes: int = 91

    SIZES: ClassVar = _SIZES

    @classmethod
    def prepare(cls, values: dict[str, Any]) -> dict[str, Any]:
        values = super().prepare(values)
        values["backbone_config"] = resolve_encoder_config(values["backbone"],
                                                           values["backbone_config"])
        return values

    def validate(self) -> None:
        self.require_at_least(1, "num_queries", "num_classes")

    @property
    def image_size(self) -> Any:
        return getattr(self.backbone_config, "image_size", None)

    @property
    def num_channels(self) -> int | None:
        return getattr(self.backbone_config, "num_channels", None)

    @property
    def transformer(self) -> TransformerConfig:
        """The decoder stack's layer config."""
        return TransformerConfig.from_fields(self, norm_position="pre", final_norm=True,
                                             cross_attention=True)


def _sine(length: int, width: int) -> np.ndarray:
    """``(length, width)`` sin/cos table (NumPy: a trace-time constant)."""
    freq = 1.0 / 10000.0 ** (np.arange(width // 2) * 2.0 / width)
    angle = np.arange(length)[:, None] * freq[None]
    return np.concatenate([np.sin(angle), np.cos(angle)], -1)


def memory_positions(num_tokens: int, image_hw: tuple[int, int], backbone: Any, width: int,
                     grid: tuple[int, int] | None = None) -> np.ndarray:
    """Fixed positions ``(num_tokens, width)`` of a backbone's tokens: 2D sine (half the
    channels for the row, half for the column) over its feature grid, zeros for leading
    extra tokens (a ViT's class token); a 1D sine table when the grid is unknown."""
    h, w = image_hw
    if grid is None:
        if hasattr(backbone, "downsample"):  # a CNN: stride-`downsample` feature map
            grid = (math.ceil(h / backbone.downsample), math.ceil(w / backbone.downsample))
        elif hasattr(backbone, "patch_size"):  # a ViT: patches after any class token
            grid = (h // backbone.patch_size, w // backbone.patch_size)
    if grid is None or grid[0] * grid[1] > num_tokens or width % 4:
        return _sine(num_tokens, width)
    rows, cols = _sine(grid[0], width // 2), _sine(grid[1], width // 2)
    table = np.concatenate([np.repeat(rows, grid[1], 0), np.tile(cols, (grid[0], 1))], -1)
    return np.concatenate([np.zeros((num_tokens - len(table), width)), table], 0)


@registry.register("detr", DetrConfig)
class DetrForObjectDetection(nn.Module):
    """DETR-style detector: ``__call__(image (B, H, W, C))`` -> :class:`DetrOutput`.

    Params: ``backbone`` (the encoder's), ``input_projection``, ``query_embeddings``
    ``(Q, D)``, ``decoder_layer_{i}``, ``decoder_norm``, ``class_head`` and
    ``box_head_{0,1,2}``.
    """

    config: DetrConfig

    @nn.compact
    def __call__(self, image: Array, *, deterministic: bool = True) -> DetrOutput:
        cfg = self.config
        dcfg = cfg.transformer
        dtype, pdtype = DTYPES[cfg.dtype], DTYPES[cfg.param_dtype]
        enc = registry.get(cfg.backbone).module_cls(cfg.backbone_config, name="backbone")(
            image, deterministic=deterministic)
        memory, grid = enc.last_hidden_state, None
        if memory.ndim == 4:  # a convolutional feature map -> tokens
            grid = memory.shape[1:3]
            memory = memory.reshape(memory.shape[0], -1, memory.shape[-1])
        b, s, _ = memory.shape
        dense = dict(dtype=dtype, param_dtype=pdtype,
                     kernel_init=nn.with_logical_partitioning(nn.initializers.xavier_uniform(),
                                                              (None, "embed")),
                     bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("embed",)))
        memory = nn.Dense(cfg.d_model, name="input_projection", **dense)(memory)
        positions = memory_positions(s, image.shape[1:3], cfg.backbone_config, cfg.d_model, grid)
        memory = memory + jnp.asarray(positions, dtype)[None]
        queries = self.param(
            "query_embeddings",
            nn.with_logical_partitioning(nn.initializers.normal(1.0), (None, "embed")),
            (cfg.num_queries, cfg.d_model), pdtype)
        x = jnp.broadcast_to(queries[None].astype(dtype), (b, cfg.num_queries, cfg.d_model))
        norm = make_norm(dcfg.norm, dcfg.norm_eps, dcfg.compute_dtype, dcfg.weights_dtype,
                         "decoder_norm")
        layer_outputs = []
        for i in range(cfg.num_layers):
            x, _ = DecoderLayer(dcfg, name=f"decoder_layer_{i}")(
                x, memory, deterministic=deterministic)
            layer_outputs.append(norm(x))
        hidden = jnp.stack(layer_outputs)  # (L, B, Q, D)
        logits = nn.Dense(cfg.num_classes + 1, name="class_head", **dense)(hidden)
        h = hidden
        for j in range(2):
            h = nn.relu(nn.Dense(cfg.d_model, name=f"box_head_{j}", **dense)(h))
        boxes = jax.nn.sigmoid(nn.Dense(4, name="box_head_2", **dense)(h).astype(jnp.float32))
        logits = logits.astype(jnp.float32)
        return DetrOutput(
            logits=logits[-1], pred_boxes=boxes[-1], layer_logits=logits,
            layer_pred_boxes=boxes, last_hidden_state=layer_outputs[-1],
            encoder_last_hidden_state=enc.last_hidden_state)
