"""Position information: sinusoidal, learned, T5 relative bias, rotary and ALiBi."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxmm.config import ConfigBase, ConfigError

Array = jax.Array

__all__ = [
    "DecodePositions",
    "LearnedPositionEmbedding",
    "RelativePositionBias",
    "RopeScaling",
    "alibi_bias",
    "alibi_slopes",
    "apply_rotary_embedding",
    "bicubic_resize_matrix",
    "relative_position_bucket",
    "resize_position_grid",
    "rotary_frequencies",
    "sinusoidal_embedding",
    "sinusoidal_positions",
]


def sinusoidal_positions(
    length: int, dim: int, *, base: float = 10000.0, layout: str = "interleaved",
    dtype: Any = jnp.float32,
) -> Array:
    """Fixed sinusoidal table ``(length, dim)`` from "Attention Is All You Need".

    ``layout="interleaved"``: PE[pos, 2i] = sin(pos / base^(2i/dim)),
    PE[pos, 2i+1] = cos(pos / base^(2i/dim)).
    ``layout="concat"``: all sines then all cosines (same frequencies).
    """
    if dim % 2:
        raise ValueError(f"Sinusoidal positions need an even width; got {dim}.")
    pos = np.arange(length, dtype=np.float64)[:, None]
    inv = base ** (-np.arange(0, dim, 2, dtype=np.float64) / dim)
    angles = pos * inv[None, :]
    if layout == "interleaved":
        table = np.zeros((length, dim))
        table[:, 0::2] = np.sin(angles)
        table[:, 1::2] = np.cos(angles)
    elif layout == "concat":
        table = np.concatenate([np.sin(angles), np.cos(angles)], axis=-1)
    else:
        raise ValueError(f"Unknown sinusoidal layout {layout!r}; use 'interleaved' or 'concat'.")
    return jnp.asarray(table, dtype=dtype)


def sinusoidal_embedding(
    positions: Array, dim: int, *, base: float = 10000.0, layout: str = "interleaved",
    dtype: Any = jnp.float32,
) -> Array:
    """Sinusoidal embeddings ``(..., dim)`` of (possibly traced) integer ``positions``.

    Row ``p`` equals ``sinusoidal_positions(p + 1, dim, ...)[p]``; use this when
    positions are not a static ``arange`` (left-padded prompts, decoding).
    """
    if dim % 2:
        raise ValueError(f"Sinusoidal positions need an even width; got {dim}.")
    if layout not in ("interleaved", "concat"):
        raise ValueError(f"Unknown sinusoidal layout {layout!r}; use 'interleaved' or 'concat'.")
    inv = jnp.asarray(base ** (-np.arange(0, dim, 2, dtype=np.float64) / dim), jnp.float32)
    angles = jnp.asarray(positions).astype(jnp.float32)[..., None] * inv
    sin, cos = jnp.sin(angles), jnp.cos(angles)
    if layout == "interleaved":
        table = jnp.stack([sin, cos], axis=-1).reshape(angles.shape[:-1] + (dim,))
    else:
        table = jnp.concatenate([sin, cos], axis=-1)
    return table.astype(dtype)


class DecodePositions(nn.Module):
    """Position ids of this call's tokens, and the KV-cache write index.

    Call: ``positions, index, cache_length = DecodePositions()(batch, length,
    position_ids, decode)``.

    * Outside decode mode: ``positions`` are ``position_ids`` (broadcast to
      ``(B, T)``) or ``arange(T)``; ``index`` is 0 and ``cache_length`` None.
    * ``decode=True``, first call (cache creation, the input length is the
      cache length ``L``): records ``L`` and returns ``index`` 0 without
      advancing, like ``MultiHeadAttention``'s cache.
    * ``decode=True``, later calls: ``positions`` default to
      ``index + arange(T)``; the index advances by ``T``; ``cache_length`` is
      ``L`` (a static int).

    The ``cache`` collection holds ``index`` (int32 scalar) and
    ``slot_positions`` ``(B, L)``, the position id written to each cache slot.
    """

    @nn.compact
    def __call__(
        self, batch: int, length: int, position_ids: Array | None = None, decode: bool = False,
    ) -> tuple[Array, Array, int | None]:
        if position_ids is not None:
            position_ids = jnp.asarray(position_ids)
            if position_ids.ndim == 1:
                position_ids = position_ids[None]
            if position_ids.ndim != 2 or position_ids.shape[1] != length or (
                position_ids.shape[0] not in (1, batch)
            ):
                raise ValueError(
                    f"position_ids must have shape (batch, length) = ({batch}, {length}); got "
                    f"{tuple(position_ids.shape)}."
                )
            if not jnp.issubdtype(position_ids.dtype, jnp.integer):
                raise ValueError(f"position_ids must be integers; got {position_ids.dtype}.")
            position_ids = jnp.broadcast_to(position_ids.astype(jnp.int32), (batch, length))
        zero = jnp.zeros((), jnp.int32)
        if not decode:
            if position_ids is None:
                position_ids = jnp.broadcast_to(jnp.arange(length, dtype=jnp.int32),
                                                (batch, length))
            return position_ids, zero, None
        initialized = self.has_variable("cache", "index")
        index = self.variable("cache", "index", lambda: zero)
        start = index.value if initialized else zero
        if position_ids is None:
            position_ids = jnp.broadcast_to(start + jnp.arange(length, dtype=jnp.int32),
                                            (batch, length))
        slots = self.variable("cache", "slot_positions", lambda: position_ids)
        cache_length = slots.value.shape[1]
        if initialized:
            if slots.value.shape[0] != batch:
                raise ValueError(
                    f"The decode cache was created for batch {slots.value.shape[0]}, got {batch}; "
                    "re-create the cache for this batch size."
                )
            slots.value = jax.lax.dynamic_update_slice(slots.value, position_ids, (zero, start))
            index.value = start + length
        return position_ids, start, cache_length


class LearnedPositionEmbedding(nn.Module):
    """A learned ``(num_positions, features)`` table looked up by position id."""

    num_positions: int
    features: int
    embedding_init: Any = nn.initializers.normal(0.02)
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, positions: Array) -> Array:
        table = self.param(
            "embedding",
            nn.with_logical_partitioning(self.embedding_init, ("position", "embed")),
            (self.num_positions, self.features),
            self.param_dtype,
        )
        if not isinstance(positions, jax.core.Tracer):
            top = int(np.max(np.asarray(positions))) if np.size(positions) else 0
            if top >= self.num_positions:
                raise ValueError(
                    f"Position {top} is outside the learned position table of size "
                    f"{self.num_positions}; truncate inputs to {self.num_positions} tokens "
                    "or use a model with a larger max_position_embeddings."
                )
        return jnp.take(table, positions, axis=0).astype(self.dtype)


# ---------------------------------------------------------------------------
# T5 relative position bias
# ---------------------------------------------------------------------------


def relative_position_bucket(
    relative_position: Array, *, bidirectional: bool = True, num_buckets: int = 32,
    max_distance: int = 128,
) -> Array:
    """Maps ``key_pos - query_pos`` to T5's log-spaced buckets."""
    ret = jnp.zeros_like(relative_position)
    n = relative_position
    if bidirectional:
        num_buckets //= 2
        ret = ret + (n > 0).astype(jnp.int32) * num_buckets
        n = jnp.abs(n)
    else:
        n = -jnp.minimum(n, 0)
    max_exact = num_buckets // 2
    is_small = n < max_exact
    safe_n = jnp.maximum(n, 1).astype(jnp.float32)
    large = max_exact + (
        jnp.log(safe_n / max_exact) / math.log(max_distance / max_exact) * (num_buckets - max_exact)
    ).astype(jnp.int32)
    large = jnp.minimum(large, num_buckets - 1)
    return ret + jnp.where(is_small, n, large)


class RelativePositionBias(nn.Module):
    """T5-style bucketed relative position bias, ``(1, H, T, S)``."""

    num_heads: int
    num_buckets: int = 32
    max_distance: int = 128
    bidirectional: bool = True
    embedding_init: Any = nn.initializers.normal(0.02)
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, query_length: int, key_length: int, offset: Array | int = 0) -> Array:
        """Bias for queries at ``offset + [0, T)`` and keys at ``[0, S)``."""
        table = self.param(
            "embedding",
            nn.with_logical_partitioning(self.embedding_init, ("relpos_buckets", "heads")),
            (self.num_buckets, self.num_heads),
            self.param_dtype,
        )
        q = offset + jnp.arange(query_length)[:, None]
        k = jnp.arange(key_length)[None, :]
        buckets = relative_position_bucket(
            k - q, bidirectional=self.bidirectional, num_buckets=self.num_buckets,
            max_distance=self.max_distance,
        )
        values = jnp.take(table, buckets, axis=0)  # (T, S, H)
        return jnp.transpose(values, (2, 0, 1))[None]


# ---------------------------------------------------------------------------
# Rotary position embedding (RoPE)
# ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class RopeScaling(ConfigBase):
    """RoPE frequency scaling for long contexts (Hugging Face ``rope_parameters``).

    * ``linear``: every frequency divided by ``factor`` (position interpolation).
    * ``llama3`` (Llama 3.1+): wavelengths longer than
      ``original_max_position_embeddings / low_freq_factor`` are divided by
      ``factor``, those shorter than ``.../ high_freq_factor`` are kept, and the
      band in between is interpolated smoothly.
    """

    rope_type: str = "linear"
    factor: float = 1.0
    low_freq_factor: float = 1.0
    high_freq_factor: float = 4.0
    original_max_position_embeddings: int = 8192

    def validate(self) -> None:
        if self.rope_type not in ("linear", "llama3"):
            raise ConfigError(f"RopeScaling: rope_type={self.rope_type!r} is not one of linear, "
                              "llama3.")
        if self.factor <= 0:
            raise ConfigError(f"RopeScaling: factor must be > 0; got {self.factor}.")
        if self.rope_type == "llama3" and self.high_freq_factor <= self.low_freq_factor:
            raise ConfigError("RopeScaling: high_freq_factor must exceed low_freq_factor.")


def rotary_frequencies(
    rotary_dim: int, theta: float = 10000.0, scaling: RopeScaling | None = None,
) -> Array:
    """Inverse frequencies ``theta^(-2i/rotary_dim)`` for ``i < rotary_dim/2``, then scaled."""
    inv = 1.0 / (theta ** (jnp.arange(0, rotary_dim, 2, dtype=jnp.float32) / rotary_dim))
    if scaling is None:
        return inv
    if scaling.rope_type == "linear":
        return inv / scaling.factor
    old = scaling.original_max_position_embeddings
    wavelen = 2 * math.pi / inv
    scaled = jnp.where(wavelen > old / scaling.low_freq_factor, inv / scaling.factor, inv)
    smooth = (old / wavelen - scaling.low_freq_factor) / (
        scaling.high_freq_factor - scaling.low_freq_factor)
    smoothed = (1 - smooth) * scaled / scaling.factor + smooth * scaled
    medium = (wavelen >= old / scaling.high_freq_factor) & (
        wavelen <= old / scaling.low_freq_factor)
    return jnp.where(medium, smoothed, scaled)


def apply_rotary_embedding(
    x: Array, positions: Array, *, theta: float = 10000.0, rotary_dim: int | None = None,
    interleaved: bool = False, scaling: RopeScaling | None = None,
) -> Array:
    """Rotates ``x`` ``(B, T, H, D)`` by angle ``position * freq`` per feature pair.

    ``interleaved=False`` pairs feature ``i`` with ``i + rotary_dim/2``
    (the "rotate half" convention of GPT-NeoX / Llama in Hugging Face);
    ``interleaved=True`` pairs ``2i`` with ``2i+1`` (the original RoFormer).
    Only the first ``rotary_dim`` features rotate (partial rotary).
    ``scaling`` changes the frequencies (:class:`RopeScaling`).
    """
    d = x.shape[-1]
    rotary_dim = d if rotary_dim is None else rotary_dim
    if rotary_dim % 2 or rotary_dim > d:
        raise ValueError(f"rotary_dim must be even and <= head dim {d}; got {rotary_dim}.")
    positions = jnp.asarray(positions)
    if positions.ndim == 1:
        positions = positions[None]
    freqs = rotary_frequencies(rotary_dim, theta, scaling)
    angles = positions[..., None].astype(jnp.float32) * freqs  # (B, T, R/2)
    sin = jnp.sin(angles)[:, :, None, :]
    cos = jnp.cos(angles)[:, :, None, :]
    rot, rest = x[..., :rotary_dim].astype(jnp.float32), x[..., rotary_dim:]
    if interleaved:
        x1, x2 = rot[..., 0::2], rot[..., 1::2]
        out = jnp.stack([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1).reshape(rot.shape)
    else:
        x1, x2 = jnp.split(rot, 2, axis=-1)
        out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
    return jnp.concatenate([out.astype(x.dtype), rest], axis=-1)


# ---------------------------------------------------------------------------
# ALiBi
# ---------------------------------------------------------------------------


def alibi_slopes(num_heads: int) -> np.ndarray:
    """Head slopes from "Train Short, Test Long" (Press et al.), incl. non-powers of 2."""

    def power_of_two(n):
        start = 2 ** (-(2 ** -(math.log2(n) - 3)))
        return [start * start**i for i in range(n)]

    if math.log2(num_heads).is_integer():
        return np.asarray(power_of_two(num_heads), np.float32)
    closest = 2 ** math.floor(math.log2(num_heads))
    extra = power_of_two(2 * closest)[0::2][: num_heads - closest]
    return np.asarray(power_of_two(closest) + extra, np.float32)


def alibi_bias(num_heads: int, query_length: int, key_length: int, *, causal: bool = True):
    """``(1, H, T, S)`` bias ``-slope * distance`` (queries aligned to the last keys)."""
    slopes = jnp.asarray(alibi_slopes(num_heads))[None, :, None, None]
    q = jnp.arange(query_length)[:, None] + (key_length - query_length)
    k = jnp.arange(key_length)[None, :]
    dist = (q - k) if causal else jnp.abs(q - k)
    return -slopes * dist[None, None].astype(jnp.float32)


# ---------------------------------------------------------------------------
# Resizing learned 2-D position grids (ViT / CLIP at a new image size)
# ---------------------------------------------------------------------------


def bicubic_resize_matrix(in_size: int, out_size: int, a: float = -0.75) -> np.ndarray:
    """``(out_size, in_size)`` matrix of PyTorch's bicubic interpolation weights.

    Matches ``torch.nn.functional.interpolate(mode="bicubic",
    align_corners=False)`` with an explicit output size: source coordinate
    ``(i + 0.5) * in/out - 0.5``, Keys cubic kernel with ``a = -0.75`` and
    indices clamped at the borders (no antialiasing when shrinking).
    """
    if in_size < 1 or out_size < 1:
        raise ValueError(f"Resize sizes must be >= 1; got {in_size} -> {out_size}.")
    scale = in_size / out_size
    src = (np.arange(out_size, dtype=np.float64) + 0.5) * scale - 0.5
    base = np.floor(src)
    t = src - base

    def near(d):  # |d| <= 1
        return ((a + 2) * d - (a + 3)) * d * d + 1

    def far(d):  # 1 < |d| < 2
        return ((a * d - 5 * a) * d + 8 * a) * d - 4 * a

    weights = np.stack([far(t + 1), near(t), near(1 - t), far(2 - t)], axis=1)
    out = np.zeros((out_size, in_size), np.float64)
    for k in range(4):
        idx = np.clip(base.astype(np.int64) - 1 + k, 0, in_size - 1)
        np.add.at(out, (np.arange(out_size), idx), weights[:, k])
    return out


def resize_position_grid(
    table: Array, old_grid: tuple[int, int], new_grid: tuple[int, int]
) -> Array:
    """Bicubically resizes a learned ``(gh * gw, D)`` position table to ``new_grid``.

    Rows are in row-major grid order (as ViT/CLIP store them, without the
    class-token row). Matches Hugging Face ``interpolate_pos_encoding``
    (PyTorch bicubic, ``align_corners=False``). Returns ``(nh * nw, D)`` in the
    table's dtype; jit-friendly (grid sizes are static).
    """
    gh, gw = old_grid
    nh, nw = new_grid
    if table.ndim != 2 or table.shape[0] != gh * gw:
        raise ValueError(
            f"Position table of shape {tuple(table.shape)} does not hold a {gh}x{gw} grid "
            f"({gh * gw} rows, without the class-token row)."
        )
    if (gh, gw) == (nh, nw):
        return table
    rows = jnp.asarray(bicubic_resize_matrix(gh, nh), jnp.float32)
    cols = jnp.asarray(bicubic_resize_matrix(gw, nw), jnp.float32)
    grid = table.reshape(gh, gw, -1).astype(jnp.float32)
    out = jnp.einsum("ih,jw,hwd->ijd", rows, cols, grid, precision=jax.lax.Precision.HIGHEST)
    return out.reshape(nh * nw, -1).astype(table.dtype)
