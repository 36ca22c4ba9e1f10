"""Token and patch embeddings with logical axis names."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

Array = jax.Array

__all__ = ["ConvStem", "Embed", "PatchEmbed"]


class Embed(nn.Module):
    """Token embedding table ``(vocab, embed)``; ``attend`` gives tied output logits."""

    num_embeddings: int
    features: int
    embedding_init: Any = nn.initializers.normal(0.02)
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    def setup(self):
        self.embedding = self.param(
            "embedding",
            nn.with_logical_partitioning(self.embedding_init, ("vocab", "embed")),
            (self.num_embeddings, self.features),
            self.param_dtype,
        )

    def __call__(self, ids: Array) -> Array:
        if not jnp.issubdtype(jnp.asarray(ids).dtype, jnp.integer):
            raise ValueError(f"Token ids must be integers; got dtype {jnp.asarray(ids).dtype}.")
        return jnp.take(self.embedding, ids, axis=0).astype(self.dtype)

    def attend(self, x: Array) -> Array:
        """``x @ embedding.T``: logits over the vocabulary (weight tying)."""
        return jnp.einsum(
            "...e,ve->...v", x.astype(self.dtype), self.embedding.astype(self.dtype)
        )


class PatchEmbed(nn.Module):
    """Non-overlapping patch embedding: a strided convolution computed as one matmul.

    Works for images (``patch_size=(ph, pw)``, input ``(B, H, W, C)``) and for
    video tubelets (``patch_size=(pt, ph, pw)``, input ``(B, T, H, W, C)``).
    Each spatial (and temporal) size must be a multiple of its patch size.

    Parameters: ``kernel`` ``(*patch_size, C, features)`` (logical axes
    ``(None, ..., None, "embed")``; equal to a Hugging Face conv weight
    ``(features, C, *patch_size)`` transposed) and ``bias`` ``(features,)``.

    Returns ``(B, *grid, features)`` with ``grid = size // patch_size``.
    """

    features: int
    patch_size: tuple[int, ...]
    use_bias: bool = True
    kernel_init: Any = nn.initializers.lecun_normal()
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: Array) -> Array:
        n = len(self.patch_size)
        if x.ndim != n + 2:
            raise ValueError(
                f"PatchEmbed with patch_size {tuple(self.patch_size)} expects inputs of rank "
                f"{n + 2} (batch, {n} spatial/temporal axes, channels); got shape {x.shape}."
            )
        sizes, channels = x.shape[1:-1], x.shape[-1]
        for axis, (size, p) in enumerate(zip(sizes, self.patch_size)):
            if size % p:
                raise ValueError(
                    f"Input axis {axis + 1} has size {size}, which is not a multiple of the "
                    f"patch size {p}; resize or crop the input to a multiple of {p}."
                )
        kernel = self.param(
            "kernel",
            nn.with_logical_partitioning(self.kernel_init, (None,) * (n + 1) + ("embed",)),
            tuple(self.patch_size) + (channels, self.features),
            self.param_dtype,
        )
        grid = [s // p for s, p in zip(sizes, self.patch_size)]
        # (B, g0, p0, g1, p1, ..., C) -> (B, g0, g1, ..., p0, p1, ..., C)
        shape = [x.shape[0]]
        for g, p in zip(grid, self.patch_size):
            shape += [g, p]
        x = x.reshape(*shape, channels)
        perm = [0] + [1 + 2 * i for i in range(n)] + [2 + 2 * i for i in range(n)] + [2 * n + 1]
        x = x.transpose(perm).reshape(x.shape[0], *grid, -1)
        y = jnp.einsum(
            "...k,kf->...f", x.astype(self.dtype),
            kernel.reshape(-1, self.features).astype(self.dtype),
        )
        if self.use_bias:
            bias = self.param(
                "bias", nn.with_logical_partitioning(nn.initializers.zeros, ("embed",)),
                (self.features,), self.param_dtype,
            )
            y = y + bias.astype(self.dtype)
        return y


class ConvStem(nn.Module):
    """Convolutional patch embedding for images ("early convolutions", Xiao et al. 2021,
    "Early Convolutions Help Transformers See Better"): ``log2(patch_size)`` 3x3 stride-2
    convolutions, each followed by a LayerNorm over channels and GELU, with widths
    doubling up to ``features``, then a 1x1 convolution to ``features``.

    A drop-in for a ``patch_size`` x ``patch_size`` :class:`PatchEmbed`: ``(B, H, W, C)``
    -> ``(B, H / p, W / p, features)``. Overlapping 3x3 windows see shapes that straddle
    patch borders, which a linear patch projection cannot, and small models trained
    from scratch learn local shape much sooner with it. ``patch_size`` must be a power
    of two (>= 2).
    """

    features: int
    patch_size: int
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: Array) -> Array:
        p = self.patch_size
        if p < 2 or p & (p - 1):
            raise ValueError(f"ConvStem needs a power-of-two patch_size >= 2; got {p}. Use "
                             "the linear patch embedding for other patch sizes.")
        if x.ndim != 4:
            raise ValueError(f"ConvStem expects images (batch, height, width, channels); got "
                             f"shape {tuple(x.shape)}.")
        h, w = x.shape[1:3]
        if h % p or w % p:
            raise ValueError(f"Image size {h}x{w} is not a multiple of the patch size {p}; "
                             "resize or crop it.")
        n = p.bit_length() - 1  # stride-2 convolutions
        widths = [max(8, self.features // 2 ** (n - 1 - i)) for i in range(n)]
        x = x.astype(self.dtype)
        for i, width in enumerate(widths):
            x = nn.Conv(width, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)), use_bias=False,
                        dtype=self.dtype, param_dtype=self.param_dtype,
                        kernel_init=nn.with_logical_partitioning(
                            nn.initializers.lecun_normal(), (None, None, None, "embed")),
                        name=f"conv_{i}")(x)
            x = nn.LayerNorm(1e-6, dtype=self.dtype, param_dtype=self.param_dtype,
                             scale_init=nn.with_logical_partitioning(nn.initializers.ones,
                                                                     ("embed",)),
                             bias_init=nn.with_logical_partitioning(nn.initializers.zeros,
                                                                    ("embed",)),
                             name=f"norm_{i}")(x)
            x = nn.gelu(x)
        return nn.Dense(self.features, dtype=self.dtype, param_dtype=self.param_dtype,
                        kernel_init=nn.with_logical_partitioning(
                            nn.initializers.lecun_normal(), (None, "embed")),
                        bias_init=nn.with_logical_partitioning(nn.initializers.zeros,
                                                               ("embed",)),
                        name="projection")(x)
