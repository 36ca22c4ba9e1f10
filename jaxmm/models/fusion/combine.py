"""Late combination of per-modality vectors (pooled features or logits).

``ModalityCombiner(method)(x, present)`` maps ``x`` ``(B, M, D)`` (one vector
per modality) and ``present`` ``(B, M)`` (1 where the modality has at least one
real token) to ``(B, D)`` (``(B, M * D)`` for ``concat``). Absent modalities
never contribute: they are zeroed for ``concat``/``sum``, left out of the mean,
and get zero weight in ``gate`` and ``attention``.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxmm.models.fusion.config import COMBINE_METHODS

Array = jax.Array

__all__ = ["ModalityCombiner", "masked_softmax"]


def masked_softmax(logits: Array, mask: Array, axis: int) -> Array:
    """Softmax over ``axis`` that gives masked entries exactly zero weight.

    Rows with no unmasked entry return all zeros (not NaN).
    """
    mask = mask.astype(bool)
    logits = jnp.where(mask, logits.astype(jnp.float32), -jnp.inf)
    peak = jnp.max(logits, axis=axis, keepdims=True)
    peak = jnp.where(jnp.isfinite(peak), peak, 0.0)
    e = jnp.where(mask, jnp.exp(logits - peak), 0.0)
    return e / jnp.maximum(jnp.sum(e, axis=axis, keepdims=True), 1e-30)


class ModalityCombiner(nn.Module):
    """Combines ``(B, M, D)`` per-modality vectors into one per example.

    Methods: ``concat``, ``sum``, ``mean``, ``gate`` (per-feature softmax gates
    over modalities computed from all of them, as in gated multimodal units),
    ``attention`` (a learned query scores each modality; softmax-weighted sum).
    """

    method: str = "mean"
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: Array, present: Array | None = None) -> Array:
        if self.method not in COMBINE_METHODS:
            raise ValueError(
                f"Unknown combine method {self.method!r}; use one of {', '.join(COMBINE_METHODS)}."
            )
        if x.ndim != 3:
            raise ValueError(f"ModalityCombiner expects (batch, modalities, width); got {x.shape}.")
        b, m, d = x.shape
        present = (jnp.ones((b, m), bool) if present is None else present.astype(bool))
        keep = present[..., None]
        x = x.astype(self.dtype)
        if self.method == "concat":
            return jnp.where(keep, x, 0).reshape(b, m * d)
        if self.method == "sum":
            return jnp.sum(jnp.where(keep, x, 0), axis=1)
        if self.method == "mean":
            count = jnp.maximum(jnp.sum(present, axis=1, keepdims=True), 1)
            return jnp.sum(jnp.where(keep, x, 0), axis=1) / count.astype(x.dtype)
        dense = lambda feats, names, name: nn.Dense(  # noqa: E731
            feats, dtype=self.dtype, param_dtype=self.param_dtype,
            kernel_init=nn.with_logical_partitioning(nn.initializers.normal(0.02), names),
            bias_init=nn.with_logical_partitioning(nn.initializers.zeros, names[-1:]),
            name=name,
        )
        if self.method == "gate":
            joint = jnp.where(keep, x, 0).reshape(b, m * d)
            gate_logits = dense(m * d, ("mlp", "embed"), "gate")(joint).reshape(b, m, d)
            weights = masked_softmax(gate_logits, keep, axis=1)
        else:  # attention pooling over modalities
            keys = jnp.tanh(dense(d, ("embed", "mlp"), "key")(x))
            query = self.param(
                "query", nn.with_logical_partitioning(nn.initializers.normal(0.02), ("mlp",)),
                (d,), self.param_dtype,
            )
            scores = jnp.einsum("bmd,d->bm", keys, query.astype(self.dtype)) / jnp.sqrt(d)
            weights = masked_softmax(scores, present, axis=1)[..., None]
        self.sow("intermediates", "combine_weights", weights)
        return jnp.sum(weights.astype(x.dtype) * jnp.where(keep, x, 0), axis=1)
