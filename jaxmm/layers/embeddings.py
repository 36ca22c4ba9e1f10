"""Token and patch embeddings with logical axis names."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

Array = jax.Array

__all__ = ["Embed", "PatchEmbed"]


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
