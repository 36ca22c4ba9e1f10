"""Scaled dot-product attention, attention masks, and multi-head attention.

Shapes (used throughout):
  B batch, T query length, S key/value length, H query heads, K key/value heads
  (H % K == 0; K == H is MHA, K == 1 is MQA, otherwise GQA), D head dim, E model
  width.

Masks are boolean, ``True`` = may attend, broadcastable to ``(B, H, T, S)``.
Biases are additive float arrays broadcastable to ``(B, H, T, S)``.
"""

from __future__ import annotations

from typing import Any, Literal

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxmm.layers.positions import apply_rotary_embedding

Array = jax.Array
Implementation = Literal["auto", "plain", "xla", "cudnn"]

__all__ = [
    "MultiHeadAttention",
    "causal_mask",
    "check_token_mask",
    "combine_masks",
    "dot_product_attention",
    "key_padding_mask",
    "padding_mask",
    "prefix_lm_mask",
    "segment_mask",
]


# ---------------------------------------------------------------------------
# Masks
# ---------------------------------------------------------------------------


def padding_mask(query_valid: Array, key_valid: Array | None = None) -> Array:
    """``(B, 1, T, S)`` mask from 1/0 validity vectors ``(B, T)`` and ``(B, S)``.

    A query row that is padding attends nowhere it would not otherwise; the
    key side is what matters for correctness, the query side keeps padded rows
    from influencing anything downstream.
    """
    if key_valid is None:
        key_valid = query_valid
    q = jnp.asarray(query_valid).astype(bool)[:, None, :, None]
    k = jnp.asarray(key_valid).astype(bool)[:, None, None, :]
    return q & k


def check_token_mask(name: str, mask: Array | None, batch: int, length: int | None) -> Array | None:
    """Checks a 1/0 token mask has shape ``(batch, length)`` (batch may be 1).

    ``length=None`` accepts any length. Returns the mask as an array (None stays None).
    """
    if mask is None:
        return None
    mask = jnp.asarray(mask)
    if mask.ndim != 2 or mask.shape[0] not in (1, batch) or (
        length is not None and mask.shape[1] != length
    ):
        want = f"(batch, {'length' if length is None else length}) = ({batch}, {length})"
        raise ValueError(f"{name} must have shape {want}; got {tuple(mask.shape)}.")
    return mask


def key_padding_mask(key_valid: Array) -> Array:
    """``(B, 1, 1, S)`` mask that hides padded keys only."""
    return jnp.asarray(key_valid).astype(bool)[:, None, None, :]


def causal_mask(query_length: int, key_length: int | None = None, offset: int | None = None):
    """``(1, 1, T, S)`` lower-triangular mask: query i sees keys j <= i + offset.

    ``offset`` defaults to ``S - T`` so the last query aligns with the last key
    (the usual layout when queries are the newest positions).
    """
    key_length = query_length if key_length is None else key_length
    if offset is None:
        offset = key_length - query_length
    q = np.arange(query_length)[:, None]
    k = np.arange(key_length)[None, :]
    return jnp.asarray((k <= q + offset)[None, None])


def prefix_lm_mask(prefix_lengths: Array, length: int) -> Array:
    """``(B, 1, L, L)`` prefix-LM mask.

    Positions inside the prefix (``j < prefix_length``) are visible to every
    query (bidirectional prefix); the rest is causal.
    """
    prefix_lengths = jnp.asarray(prefix_lengths)
    q = jnp.arange(length)[:, None]
    k = jnp.arange(length)[None, :]
    causal = k <= q
    in_prefix = k[None] < prefix_lengths[:, None, None]
    return (causal[None] | in_prefix)[:, None]


def segment_mask(segment_ids: Array) -> Array:
    """``(B, 1, T, T)`` mask for packed rows: a query sees only keys of its own segment
    (``segment_ids`` ``(B, T)``, 1, 2, ... per sequence; 0 = padding, which sees nothing
    and is seen by nothing)."""
    seg = jnp.asarray(segment_ids)
    same = seg[:, :, None] == seg[:, None, :]
    return (same & (seg[:, None, :] > 0))[:, None]


def combine_masks(*masks: Array | None) -> Array | None:
    """Logical AND of the given masks (``None`` entries are ignored)."""
    masks = [jnp.asarray(m).astype(bool) for m in masks if m is not None]
    if not masks:
        return None
    out = masks[0]
    for m in masks[1:]:
        out = jnp.logical_and(out, m)
    return out


# ---------------------------------------------------------------------------
# Scaled dot-product attention
# ---------------------------------------------------------------------------


def _large_negative(dtype) -> Array:
    # Same constant as jax.nn.dot_product_attention, so both paths agree.
    return jnp.asarray(-0.7 * float(jnp.finfo(dtype).max), dtype=dtype)


def _check_broadcast(name: str, arr: Array | None, target: tuple[int, ...]) -> None:
    if arr is None:
        return
    if arr.ndim != 4:
        raise ValueError(
            f"Attention {name} must have 4 dimensions broadcastable to "
            f"(batch, heads, query_len, key_len) = {target}; got shape {tuple(arr.shape)}. "
            "Build masks with jaxmm.layers.padding_mask / causal_mask / key_padding_mask."
        )
    for got, want, axis in zip(arr.shape, target, ("batch", "heads", "query_len", "key_len")):
        if got not in (1, want):
            raise ValueError(
                f"Attention {name} has shape {tuple(arr.shape)}, which does not broadcast to "
                f"(batch, heads, query_len, key_len) = {target}: its {axis} size is {got}, "
                f"expected 1 or {want}."
            )


def _check_qkv(query: Array, key: Array, value: Array) -> None:
    if query.ndim != 4 or key.ndim != 4 or value.ndim != 4:
        raise ValueError(
            "dot_product_attention expects query (B, T, H, D) and key/value (B, S, K, D); got "
            f"query {tuple(query.shape)}, key {tuple(key.shape)}, value {tuple(value.shape)}."
        )
    if key.shape != value.shape:
        raise ValueError(
            f"key and value shapes differ: {tuple(key.shape)} vs {tuple(value.shape)}."
        )
    b, _, h, d = query.shape
    kb, _, k, kd = key.shape
    if kb != b or kd != d:
        raise ValueError(
            f"query {tuple(query.shape)} and key {tuple(key.shape)} disagree on batch or "
            "head dim (axes 0 and 3 must match)."
        )
    if h % k:
        raise ValueError(
            f"Number of query heads ({h}) must be a multiple of the number of key/value heads "
            f"({k}) for grouped-query attention."
        )


def dot_product_attention(
    query: Array,
    key: Array,
    value: Array,
    *,
    mask: Array | None = None,
    bias: Array | None = None,
    scale: float | None = None,
    dropout_rate: float = 0.0,
    dropout_rng: Array | None = None,
    deterministic: bool = True,
    return_weights: bool = False,
    implementation: Implementation = "auto",
) -> Array | tuple[Array, Array]:
    """softmax(Q K^T * scale + bias, masked) V for every head.

    Args:
      query: ``(B, T, H, D)``.
      key, value: ``(B, S, K, D)`` with ``H % K == 0`` (GQA/MQA share each
        key/value head across ``H // K`` query heads).
      mask: boolean, ``True`` = attend, broadcastable to ``(B, H, T, S)``.
      bias: additive, broadcastable to ``(B, H, T, S)`` (relative positions, ALiBi).
      scale: logit scale; defaults to ``1 / sqrt(D)``.
      dropout_rate, dropout_rng, deterministic: dropout on the attention weights.
      return_weights: also return the ``(B, H, T, S)`` attention weights.
      implementation: ``"plain"`` (explicit einsum/softmax; the reference path),
        ``"xla"`` / ``"cudnn"`` (``jax.nn.dot_product_attention``), or ``"auto"``:
        ``jax.nn.dot_product_attention`` with its own backend choice, except on
        CPU (where the plain path is faster) and when dropout or returned
        weights need the plain path.

    Softmax is computed in float32 whatever the input dtype. A query row whose
    keys are all masked gets uniform weights (not NaN).

    Returns:
      ``(B, T, H, D)`` outputs, and the weights if ``return_weights``.
    """
    _check_qkv(query, key, value)
    b, t, h, d = query.shape
    s, k = key.shape[1], key.shape[2]
    target = (b, h, t, s)
    if mask is not None:
        mask = jnp.asarray(mask)
        if mask.dtype != jnp.bool_:
            raise ValueError(
                f"Attention mask must be boolean (True = attend); got dtype {mask.dtype}. "
                "Convert a 1/0 attention_mask with jaxmm.layers.padding_mask()."
            )
    _check_broadcast("mask", mask, target)
    _check_broadcast("bias", bias, target)
    scale = 1.0 / np.sqrt(d) if scale is None else scale
    use_dropout = dropout_rate > 0.0 and not deterministic
    if implementation not in ("auto", "plain", "xla", "cudnn"):
        raise ValueError(
            f"Unknown attention implementation {implementation!r}; "
            "use 'auto', 'plain', 'xla' or 'cudnn'."
        )
    # On CPU, XLA's fused attention is slower than the plain einsum path (about 1.7x
    # at 1500 tokens), so "auto" uses the plain path there.
    on_cpu = implementation == "auto" and jax.default_backend() == "cpu"
    if implementation != "plain" and not on_cpu and not use_dropout and not return_weights:
        impl = None if implementation == "auto" else implementation
        if mask is not None:
            mask = jnp.broadcast_to(mask, (mask.shape[0], h, t, s)) if mask.shape[1] != h else mask
        if bias is not None:
            bias = bias.astype(jnp.promote_types(query.dtype, jnp.float32))
        return jax.nn.dot_product_attention(
            query, key, value, bias=bias, mask=mask, scale=scale, implementation=impl
        )

    # Plain path: group query heads over their shared key/value head.
    # (Plain MHA uses 4-D einsums: the grouped 5-D form is ~2x slower on CPU.)
    g = h // k
    logits_dtype = jnp.promote_types(query.dtype, jnp.float32)
    if g == 1:
        logits = jnp.einsum("bthd,bshd->bhts", query, key, preferred_element_type=logits_dtype)
    else:
        q = query.reshape(b, t, k, g, d)
        logits = jnp.einsum("btkgd,bskd->bkgts", q, key, preferred_element_type=logits_dtype)
    logits = logits.reshape(b, h, t, s) * jnp.asarray(scale, logits_dtype)
    if bias is not None:
        logits = (logits + bias).astype(logits_dtype)
    if mask is not None:
        logits = jnp.where(mask, logits, _large_negative(logits_dtype))
    weights = jax.nn.softmax(logits.astype(jnp.float32), axis=-1).astype(value.dtype)
    attn = weights
    if use_dropout:
        if dropout_rng is None:
            raise ValueError("dropout_rng is required when dropout is active.")
        keep = jax.random.bernoulli(dropout_rng, 1.0 - dropout_rate, weights.shape)
        attn = jnp.where(keep, weights / (1.0 - dropout_rate), 0.0).astype(weights.dtype)
    if g == 1:
        out = jnp.einsum("bhts,bshd->bthd", attn, value)
    else:
        out = jnp.einsum("bkgts,bskd->btkgd", attn.reshape(b, k, g, t, s), value)
        out = out.reshape(b, t, h, d)
    if return_weights:
        return out, weights
    return out


# ---------------------------------------------------------------------------
# Multi-head attention module
# ---------------------------------------------------------------------------


class Projection(nn.Module):
    """``einsum`` projection with an explicitly shaped, logically named kernel.

    ``in_axes`` input axes (counted from the end) are contracted against the
    kernel's leading axes; ``features`` are appended. E.g. ``E -> (H, D)`` with
    kernel ``(E, H, D)``, or ``(H, D) -> E`` with kernel ``(H, D, E)``.
    """

    features: tuple[int, ...]
    in_axes: int
    kernel_axes: tuple[str, ...]
    use_bias: bool = True
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32
    kernel_init: Any = nn.initializers.normal(0.02)

    @nn.compact
    def __call__(self, x: Array) -> Array:
        in_shape = x.shape[-self.in_axes:]
        kernel = self.param(
            "kernel",
            nn.with_logical_partitioning(self.kernel_init, self.kernel_axes),
            tuple(in_shape) + tuple(self.features),
            self.param_dtype,
        )
        letters = "abcdefgh"
        batch = "xyz"[: x.ndim - self.in_axes]
        ins = letters[: self.in_axes]
        outs = letters[self.in_axes: self.in_axes + len(self.features)]
        y = jnp.einsum(
            f"{batch}{ins},{ins}{outs}->{batch}{outs}",
            x.astype(self.dtype), kernel.astype(self.dtype),
        )
        if self.use_bias:
            bias = self.param(
                "bias",
                nn.with_logical_partitioning(
                    nn.initializers.zeros, self.kernel_axes[self.in_axes:]
                ),
                tuple(self.features),
                self.param_dtype,
            )
            y = y + bias.astype(self.dtype)
        return y


class MultiHeadAttention(nn.Module):
    """Self- or cross-attention with MHA/GQA/MQA heads, rotary, bias and a KV cache.

    Parameters (logical axes): ``query`` ``(embed, heads, kv)``, ``key``/``value``
    ``(embed, kv_heads, kv)``, ``out`` ``(heads, kv, embed)``.

    Call: ``y, weights = mha(x, kv=None, mask=..., bias=..., positions=...)``
    with ``x`` ``(B, T, E)``; ``weights`` is ``(B, H, T, S)`` when
    ``return_weights`` else ``None``.

    **KV cache** (``decode=True``): the ``cache`` collection holds
    ``cached_key``/``cached_value`` ``(B, L, K, D)`` and ``cache_index``. It is
    created by an ``init``/``apply`` call with ``decode=True`` whose input has
    the full cache length ``L``. Each later call writes its ``T`` new keys at
    ``cache_index`` and attends causally over the filled part; ``mask`` (if
    given) must then span the whole cache, ``(B, 1|H, T, L)``, and typically
    hides left padding. For cross-attention, a call with ``kv`` computes and
    caches the projected keys/values; calls with ``kv=None`` reuse them.
    """

    num_heads: int
    head_dim: int | None = None
    num_kv_heads: int | None = None
    out_features: int | None = None
    is_cross_attention: bool = False
    use_bias: bool = True
    out_bias: bool | None = None
    dropout_rate: float = 0.0
    scale: float | None = None
    rotary_theta: float | None = None
    rotary_dim: int | None = None
    rotary_interleaved: bool = False
    rotary_scaling: Any = None  # a RopeScaling, or None
    implementation: Implementation = "auto"
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32
    kernel_init: Any = nn.initializers.normal(0.02)

    def _kv_heads(self) -> int:
        k = self.num_kv_heads or self.num_heads
        if self.num_heads % k:
            raise ValueError(
                f"num_heads ({self.num_heads}) must be a multiple of num_kv_heads ({k})."
            )
        return k

    @nn.compact
    def __call__(
        self,
        x: Array,
        kv: Array | None = None,
        *,
        mask: Array | None = None,
        bias: Array | None = None,
        positions: Array | None = None,
        kv_positions: Array | None = None,
        decode: bool = False,
        deterministic: bool = True,
        return_weights: bool = False,
    ) -> tuple[Array, Array | None]:
        if x.ndim != 3:
            raise ValueError(
                f"MultiHeadAttention input must be (batch, length, width); got {x.shape}."
            )
        embed = x.shape[-1]
        out_features = self.out_features or embed
        head_dim = self.head_dim
        if head_dim is None:
            if embed % self.num_heads:
                raise ValueError(
                    f"Model width {embed} is not divisible by num_heads {self.num_heads}; "
                    "set head_dim explicitly."
                )
            head_dim = embed // self.num_heads
        k_heads = self._kv_heads()
        dense = lambda feats, names, name: Projection(  # noqa: E731
            feats, 1, ("embed",) + names, self.use_bias, self.dtype, self.param_dtype,
            self.kernel_init, name=name,
        )
        query = dense((self.num_heads, head_dim), ("heads", "kv"), "query")(x)

        use_cached_cross = self.is_cross_attention and decode and kv is None
        if not self.is_cross_attention:
            kv = x
        elif kv is None and not use_cached_cross:
            raise ValueError("Cross-attention needs `kv` (the encoder output) outside decode mode.")

        if use_cached_cross:
            if not self.has_variable("cache", "cross_key"):
                raise ValueError(
                    "Cross-attention cache is empty: call the decoder once with the encoder "
                    "output before decoding with kv=None."
                )
            key = self.get_variable("cache", "cross_key")
            value = self.get_variable("cache", "cross_value")
        else:
            key = dense((k_heads, head_dim), ("kv_heads", "kv"), "key")(kv)
            value = dense((k_heads, head_dim), ("kv_heads", "kv"), "value")(kv)

        if self.rotary_theta is not None and not self.is_cross_attention:
            if positions is None:
                base = 0
                if decode and self.has_variable("cache", "cache_index"):
                    base = self.get_variable("cache", "cache_index")
                positions = base + jnp.arange(x.shape[1])[None, :]
            query = apply_rotary_embedding(
                query, positions, theta=self.rotary_theta, rotary_dim=self.rotary_dim,
                interleaved=self.rotary_interleaved, scaling=self.rotary_scaling,
            )
            key = apply_rotary_embedding(
                key, positions if kv_positions is None else kv_positions,
                theta=self.rotary_theta, rotary_dim=self.rotary_dim,
                interleaved=self.rotary_interleaved, scaling=self.rotary_scaling,
            )

        if decode and self.is_cross_attention and not use_cached_cross:
            ck = self.variable("cache", "cross_key", jnp.zeros, key.shape, key.dtype)
            cv = self.variable("cache", "cross_value", jnp.zeros, value.shape, value.dtype)
            if not self.is_initializing():
                ck.value, cv.value = key, value
        elif decode and not self.is_cross_attention:
            key, value, mask = self._update_cache(key, value, mask)

        dropout_rng = None
        if self.dropout_rate > 0.0 and not deterministic:
            dropout_rng = self.make_rng("dropout")
        result = dot_product_attention(
            query, key, value, mask=mask, bias=bias, scale=self.scale,
            dropout_rate=self.dropout_rate, dropout_rng=dropout_rng,
            deterministic=deterministic, return_weights=return_weights,
            implementation=self.implementation,
        )
        out, weights = result if return_weights else (result, None)
        out_bias = self.use_bias if self.out_bias is None else self.out_bias
        out = Projection(
            (out_features,), 2, ("heads", "kv", "embed"), out_bias, self.dtype,
            self.param_dtype, self.kernel_init, name="out",
        )(out)
        return out, weights

    def _update_cache(self, key: Array, value: Array, mask: Array | None):
        """Writes new keys/values into the fixed-size cache; returns the full cache."""
        initialized = self.has_variable("cache", "cached_key")
        cached_key = self.variable("cache", "cached_key", jnp.zeros, key.shape, key.dtype)
        cached_value = self.variable("cache", "cached_value", jnp.zeros, value.shape, value.dtype)
        index = self.variable("cache", "cache_index", lambda: jnp.array(0, jnp.int32))
        if not initialized:
            # Creating the cache: the input length defines the cache length.
            return key, value, mask
        b, t = key.shape[0], key.shape[1]
        max_len = cached_key.value.shape[1]
        if cached_key.value.shape[0] != b or cached_key.value.shape[2:] != key.shape[2:]:
            raise ValueError(
                f"KV cache was created for shape {cached_key.value.shape} but got keys "
                f"{key.shape}; re-create the cache for this batch."
            )
        i = index.value
        zero = jnp.array(0, jnp.int32)
        cached_key.value = jax.lax.dynamic_update_slice(
            cached_key.value, key.astype(cached_key.value.dtype), (zero, i, zero, zero)
        )
        cached_value.value = jax.lax.dynamic_update_slice(
            cached_value.value, value.astype(cached_value.value.dtype), (zero, i, zero, zero)
        )
        index.value = i + t
        # Query row r (absolute position i + r) sees cache slots j <= i + r.
        slots = jnp.arange(max_len)[None, None, None, :]
        rows = i + jnp.arange(t)[None, None, :, None]
        cache_mask = slots <= rows
        if mask is not None and mask.shape[-1] != max_len:
            raise ValueError(
                f"In decode mode the attention mask must span the whole cache "
                f"(last axis {max_len}); got shape {mask.shape}."
            )
        del b
        return cached_key.value, cached_value.value, combine_masks(cache_mask, mask)
