"""DETR set-prediction detector (Carion et al. 2020), in two variants chosen by config.

Image ``(B, H, W, C)`` -> a registered image encoder (``resnet`` or ``vit``, ...) ->
tokens ``(B, S, E_enc)`` -> linear projection to ``d_model`` (DETR's 1x1 conv) ->
``encoder_layers`` Transformer encoder layers (0: none) -> a decoder whose ``num_queries``
learned object queries self-attend and cross-attend to the memory -> per query: class
logits over ``num_classes + 1`` (the last is "no object") and a box ``(cx, cy, w, h)`` in
[0, 1] (a 3-layer MLP + sigmoid).

``positions`` says where the fixed 2D sine positions of the feature grid go:

* ``"memory"`` (the default, jaxmm's compact variant): added once to the projected
  memory; the decoder input starts at the learned query embeddings; pre-LN layers.
* ``"attention"`` (DETR as published and as Hugging Face ``DetrForObjectDetection``):
  DETR's normalised sine (scale ``2 pi``) is added to the queries and keys, never the
  values, of every encoder self-attention and to the keys of every decoder
  cross-attention; the learned query embeddings are added to the decoder's self-attention
  queries/keys and cross-attention queries, and the decoder input starts at zeros. With
  ``norm_position="post"``, ``encoder_layers=6`` and a ``frozen_batch`` ResNet-50 this is
  facebook/detr-resnet-50 (size ``"detr_resnet50"``; ``jaxmm.convert`` imports it).

A batch of images padded to one size passes ``pixel_mask`` (1 = real pixel): padded
tokens are hidden from every attention (and, with ``"attention"``, from the positions).

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

from jaxmm.layers import (
    DecoderLayer,
    TransformerConfig,
    dot_product_attention,
    key_padding_mask,
    make_norm,
)
from jaxmm.layers.attention import Projection
from jaxmm.layers.blocks import DTYPES, _ResidualMixin
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
    ``last_hidden_state`` ``(B, Q, D)``; ``encoder_last_hidden_state``: the Transformer
    encoder's output ``(B, S, D)``, or the backbone's tokens ``(B, S, E_enc)`` when
    ``encoder_layers`` is 0."""

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
    # facebook/detr-resnet-50's architecture (Hugging Face DetrForObjectDetection).
    "detr_resnet50": dict(backbone="resnet",
                          backbone_config=dict(size="resnet50", norm="frozen_batch"),
                          num_layers=6, encoder_layers=6, d_model=256, num_heads=8,
                          mlp_dim=2048, num_queries=100, num_classes=91,
                          norm_position="post", positions="attention"),
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
      encoder_layers: Transformer encoder layers over the projected backbone tokens
        (0: none; same widths as the decoder).
      norm_position: ``"pre"`` (pre-LN layers) or ``"post"`` (post-LN, DETR's).
      positions: ``"memory"`` or ``"attention"`` (see the module doc).
    """

    DEFAULTS: ClassVar = dict(num_layers=6, d_model=256, num_heads=8, mlp_dim=2048,
                              activation="relu", dropout_rate=0.1)

    backbone: str = "resnet"
    backbone_config: Any = "resnet50"
    num_queries: int = 100
    num_classes: int = 91
    encoder_layers: int = 0
    norm_position: str = "pre"
    positions: str = "memory"

    SIZES: ClassVar = _SIZES

    @classmethod
    def prepare(cls, values: dict[str, Any]) -> dict[str, Any]:
        values = super().prepare(values)
        values["backbone_config"] = resolve_encoder_config(values["backbone"],
                                                           values["backbone_config"])
        return values

    def validate(self) -> None:
        self.require_at_least(1, "num_queries", "num_classes")
        self.require_at_least(0, "encoder_layers")
        self.require_one_of("norm_position", ("pre", "post"))
        self.require_one_of("positions", ("memory", "attention"))

    @property
    def image_size(self) -> Any:
        return getattr(self.backbone_config, "image_size", None)

    @property
    def num_channels(self) -> int | None:
        return getattr(self.backbone_config, "num_channels", None)

    @property
    def transformer(self) -> TransformerConfig:
        """The decoder's layer config (the encoder's, without cross-attention)."""
        return TransformerConfig.from_fields(self, norm_position=self.norm_position,
                                             final_norm=True, cross_attention=True)


def _sine(length: int, width: int) -> np.ndarray:
    """``(length, width)`` sin/cos table (NumPy: a trace-time constant)."""
    freq = 1.0 / 10000.0 ** (np.arange(width // 2) * 2.0 / width)
    angle = np.arange(length)[:, None] * freq[None]
    return np.concatenate([np.sin(angle), np.cos(angle)], -1)


def detr_sine_positions(mask: Any, dim: int, temperature: float = 10000.0,
                        xp: Any = np) -> Any:
    """DETR's 2D sine positions ``(B, h * w, dim)`` of feature grids whose valid cells
    are ``mask`` ``(B, h, w)`` (1 = real pixel, 0 = padding), row-major.

    The first ``dim / 2`` channels encode the row, the rest the column. A cell's row
    (column) coordinate is the count of valid cells up to it in its column (row),
    normalised by that column's (row's) total to ``(0, 2 pi]``; channel ``c`` of a half is
    ``sin`` (even ``c``) or ``cos`` (odd ``c``) of it over ``temperature ** (2 (c // 2) /
    (dim / 2))``. ``xp``: ``numpy`` (a trace-time constant) or ``jax.numpy``.
    """
    half = dim // 2
    freq = temperature ** (2 * (np.arange(half) // 2) / half)
    mask = xp.asarray(mask, np.float32)
    b, h, w = mask.shape
    rows, cols = xp.cumsum(mask, axis=1), xp.cumsum(mask, axis=2)
    rows = rows / (rows[:, -1:, :] + 1e-6) * 2 * math.pi
    cols = cols / (cols[:, :, -1:] + 1e-6) * 2 * math.pi

    def encode(coord):  # (B, h, w) -> (B, h, w, half)
        angle = coord[..., None] / freq.astype(np.float32)
        return xp.where(np.arange(half) % 2 == 0, xp.sin(angle), xp.cos(angle))

    return xp.concatenate([encode(rows), encode(cols)], -1).reshape(b, h * w, 2 * half)


def feature_grid(num_tokens: int, image_hw: tuple[int, int], backbone: Any,
                 grid: tuple[int, int] | None = None) -> tuple[int, int] | None:
    """The ``(rows, cols)`` feature grid behind a backbone's last ``rows * cols`` tokens
    (a CNN's stride-``downsample`` map, a ViT's patches), or ``None`` if unknown."""
    h, w = image_hw
    if grid is None:
        if hasattr(backbone, "downsample"):  # a CNN: stride-`downsample` feature map
            grid = (math.ceil(h / backbone.downsample), math.ceil(w / backbone.downsample))
        elif hasattr(backbone, "patch_size"):  # a ViT: patches after any class token
            grid = (h // backbone.patch_size, w // backbone.patch_size)
    return None if grid is None or grid[0] * grid[1] > num_tokens else tuple(grid)


def memory_positions(num_tokens: int, image_hw: tuple[int, int], backbone: Any, width: int,
                     grid: tuple[int, int] | None = None, *,
                     detr_sine: bool = False) -> np.ndarray:
    """Fixed positions ``(num_tokens, width)`` of a backbone's tokens: 2D sine (half the
    channels for the row, half for the column) over its feature grid, zeros for leading
    extra tokens (a ViT's class token); a 1D sine table when the grid is unknown.
    ``detr_sine``: DETR's normalised table (:func:`detr_sine_positions`)."""
    grid = feature_grid(num_tokens, image_hw, backbone, grid)
    if grid is None or width % 4:
        return _sine(num_tokens, width)
    if detr_sine:
        table = detr_sine_positions(np.ones((1, *grid)), width)[0]
    else:
        rows, cols = _sine(grid[0], width // 2), _sine(grid[1], width // 2)
        table = np.concatenate([np.repeat(rows, grid[1], 0), np.tile(cols, (grid[0], 1))], -1)
    return np.concatenate([np.zeros((num_tokens - len(table), width)), table], 0)


def _grid_mask(pixel_mask: Array, image_shape: tuple[int, int, int],
               grid: tuple[int, int] | None) -> Array:
    """``pixel_mask`` ``(B, H, W)`` -> boolean ``(B, rows, cols)`` on the feature grid:
    the pixel at ``floor(i * H / rows)`` (PyTorch's nearest ``interpolate``)."""
    if pixel_mask.shape != image_shape:
        raise ValueError(f"pixel_mask must have shape (batch, height, width) = "
                         f"{tuple(image_shape)}; got {tuple(pixel_mask.shape)}.")
    if grid is None:
        raise ValueError("pixel_mask needs a backbone with a known feature grid (a CNN or "
                         "a ViT); this backbone's tokens have none.")
    _, h, w = image_shape
    rows, cols = (np.minimum(np.floor(np.arange(n, dtype=np.float32)
                                      * (np.float32(size) / np.float32(n))), size - 1)
                  .astype(int) for n, size in ((grid[0], h), (grid[1], w)))
    return jnp.asarray(pixel_mask)[:, rows][:, :, cols].astype(bool)


class DetrAttention(nn.Module):
    """Multi-head attention whose query and key inputs (never the values) get position
    embeddings added, as in DETR: ``(x (B, T, E), kv (B, S, E), query_pos, key_pos)`` ->
    ``(B, T, E)``. Params as :class:`~jaxmm.layers.MultiHeadAttention`'s: ``query``,
    ``key``, ``value`` ``(embed, heads, kv)`` and ``out`` ``(heads, kv, embed)``."""

    config: TransformerConfig

    @nn.compact
    def __call__(self, x: Array, kv: Array, query_pos: Array | None = None,
                 key_pos: Array | None = None, *, mask: Array | None = None,
                 deterministic: bool = True) -> Array:
        cfg = self.config
        heads, head_dim = cfg.num_heads, cfg.resolved_head_dim

        def project(features, in_axes, axes, name):
            return Projection(features, in_axes, axes, cfg.use_bias, cfg.compute_dtype,
                              cfg.weights_dtype, nn.initializers.normal(cfg.initializer_range),
                              name=name)

        def plus(a, pos):
            return a if pos is None else a + pos.astype(a.dtype)

        query = project((heads, head_dim), 1, ("embed", "heads", "kv"), "query")(
            plus(x, query_pos))
        key = project((heads, head_dim), 1, ("embed", "kv_heads", "kv"), "key")(plus(kv, key_pos))
        value = project((heads, head_dim), 1, ("embed", "kv_heads", "kv"), "value")(kv)
        dropout = cfg.attention_dropout_rate > 0.0 and not deterministic
        out = dot_product_attention(
            query, key, value, mask=mask, scale=cfg.attention_scale,
            dropout_rate=cfg.attention_dropout_rate,
            dropout_rng=self.make_rng("dropout") if dropout else None,
            deterministic=deterministic, implementation=cfg.attention_impl)
        return project((cfg.d_model,), 2, ("heads", "kv", "embed"), "out")(out)


class DetrLayer(_ResidualMixin, nn.Module):
    """A DETR encoder layer (self-attention, MLP) or, with ``config.cross_attention``, a
    decoder layer (self-attention, cross-attention to ``memory``, MLP); pre- or post-LN
    (``config.norm_position``). ``pos`` is added to the self-attention queries/keys and the
    cross-attention queries, ``memory_pos`` to the cross-attention keys; ``memory_mask``
    ``(B, 1, 1, S)`` hides padded memory tokens (the keys of an encoder layer's
    self-attention, of a decoder layer's cross-attention). Param names are
    :class:`~jaxmm.layers.DecoderLayer`'s (``self_attention``, ``attention_norm``,
    ``cross_attention``, ``cross_attention_norm``, ``mlp``, ``mlp_norm``)."""

    config: TransformerConfig

    @nn.compact
    def __call__(self, x: Array, memory: Array | None = None, *, pos: Array | None = None,
                 memory_pos: Array | None = None, memory_mask: Array | None = None,
                 deterministic: bool = True) -> Array:
        decoder = self.config.cross_attention
        x = nn.with_logical_constraint(x, ("batch", "length", "embed"))
        attn = DetrAttention(self.config, name="self_attention")
        x, _ = self.residual(
            x, lambda h: (attn(h, h, pos, pos, mask=None if decoder else memory_mask,
                               deterministic=deterministic), None),
            "attention_norm", deterministic)
        if decoder:
            cross = DetrAttention(self.config, name="cross_attention")
            x, _ = self.residual(
                x, lambda h: (cross(h, memory, pos, memory_pos, mask=memory_mask,
                                    deterministic=deterministic), None),
                "cross_attention_norm", deterministic)
        x, _ = self.mlp(x, deterministic)
        return nn.with_logical_constraint(x, ("batch", "length", "embed"))


@registry.register("detr", DetrConfig)
class DetrForObjectDetection(nn.Module):
    """DETR-style detector: ``__call__(image (B, H, W, C))`` -> :class:`DetrOutput`.

    Params: ``backbone`` (the encoder's), ``input_projection``, ``encoder_layer_{i}``
    (if ``encoder_layers``), ``query_embeddings`` ``(Q, D)``, ``decoder_layer_{i}``,
    ``decoder_norm``, ``class_head`` and ``box_head_{0,1,2}``.
    """

    config: DetrConfig

    @nn.compact
    def __call__(self, image: Array, *, pixel_mask: Array | None = None,
                 deterministic: bool = True) -> DetrOutput:
        """``pixel_mask`` ``(B, H, W)``: 1 for real pixels, 0 for padding (a batch of
        images of different sizes padded to one); ``None``: every pixel is real. It is
        brought to the feature grid (nearest, as PyTorch's ``interpolate``) and hides
        padded tokens from every attention; with ``positions="attention"`` the sine
        positions count only valid cells, as DETR's do."""
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
        in_attention = cfg.positions == "attention"
        positions = jnp.asarray(memory_positions(s, image.shape[1:3], cfg.backbone_config,
                                                 cfg.d_model, grid, detr_sine=in_attention),
                                dtype)[None]
        memory_mask = None
        if pixel_mask is not None:
            valid = _grid_mask(pixel_mask, image.shape[:3],
                               feature_grid(s, image.shape[1:3], cfg.backbone_config, grid))
            if in_attention:
                table = detr_sine_positions(valid, cfg.d_model, xp=jnp).astype(dtype)
                positions = jnp.concatenate(
                    [jnp.zeros((b, s - table.shape[1], cfg.d_model), dtype), table], 1)
            valid = jnp.concatenate([jnp.ones((b, s - valid[0].size), bool),
                                     valid.reshape(b, -1)], 1)
            memory_mask = key_padding_mask(valid)
        if not in_attention:
            memory = memory + positions
        encoder_out = enc.last_hidden_state
        if cfg.encoder_layers:
            memory = nn.Dropout(cfg.dropout_rate)(memory, deterministic=deterministic)
            ecfg = dcfg.replace(cross_attention=False)  # the encoder's layers: same widths
            for i in range(cfg.encoder_layers):
                memory = DetrLayer(ecfg, name=f"encoder_layer_{i}")(
                    memory, pos=positions if in_attention else None, memory_mask=memory_mask,
                    deterministic=deterministic)
            encoder_out = memory
        queries = self.param(
            "query_embeddings",
            nn.with_logical_partitioning(nn.initializers.normal(1.0), (None, "embed")),
            (cfg.num_queries, cfg.d_model), pdtype)
        queries = jnp.broadcast_to(queries[None].astype(dtype), (b, cfg.num_queries, cfg.d_model))
        norm = make_norm(dcfg.norm, dcfg.norm_eps, dcfg.compute_dtype, dcfg.weights_dtype,
                         "decoder_norm")
        # "attention": the queries are positions and the decoder input starts at zeros.
        x = jnp.zeros_like(queries) if in_attention else queries
        layer_outputs = []
        for i in range(cfg.num_layers):
            if in_attention:
                x = DetrLayer(dcfg, name=f"decoder_layer_{i}")(
                    x, memory, pos=queries, memory_pos=positions, memory_mask=memory_mask,
                    deterministic=deterministic)
            else:
                x, _ = DecoderLayer(dcfg, name=f"decoder_layer_{i}")(
                    x, memory, cross_mask=memory_mask, deterministic=deterministic)
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
            encoder_last_hidden_state=encoder_out)
