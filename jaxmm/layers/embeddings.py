"""Token and patch embeddings with logical axis names."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

Array = jax.Array

__all__ = ["Embed"]


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
