"""Normalisation layers (LayerNorm, RMSNorm) with logical axis names, and L2 normalisation."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

Array = jax.Array

__all__ = ["LayerNorm", "RMSNorm", "l2_normalize", "make_norm"]


class LayerNorm(nn.Module):
    """LayerNorm over the last axis, statistics in float32 (two-pass variance)."""

    epsilon: float = 1e-5
    use_bias: bool = True
    use_scale: bool = True
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: Array) -> Array:
        xf = x.astype(jnp.float32)
        mean = jnp.mean(xf, axis=-1, keepdims=True)
        var = jnp.mean(jnp.square(xf - mean), axis=-1, keepdims=True)
        y = (xf - mean) * jax.lax.rsqrt(var + self.epsilon)
        feat = (x.shape[-1],)
        if self.use_scale:
            scale = self.param(
                "scale", nn.with_logical_partitioning(nn.initializers.ones, ("embed",)),
                feat, self.param_dtype,
            )
            y = y * scale.astype(jnp.float32)
        if self.use_bias:
            bias = self.param(
                "bias", nn.with_logical_partitioning(nn.initializers.zeros, ("embed",)),
                feat, self.param_dtype,
            )
            y = y + bias.astype(jnp.float32)
        return y.astype(self.dtype)


class RMSNorm(nn.Module):
    """``x / sqrt(mean(x^2) + eps) * scale`` (T5, Llama), computed in float32."""

    epsilon: float = 1e-6
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: Array) -> Array:
        scale = self.param(
            "scale",
            nn.with_logical_partitioning(nn.initializers.ones, ("embed",)),
            (x.shape[-1],),
            self.param_dtype,
        )
        xf = x.astype(jnp.float32)
        y = xf * jax.lax.rsqrt(jnp.mean(jnp.square(xf), axis=-1, keepdims=True) + self.epsilon)
        return (y.astype(self.dtype) * scale.astype(self.dtype)).astype(self.dtype)


def make_norm(kind: str, epsilon: float, dtype: Any, param_dtype: Any, name: str | None = None,
              use_bias: bool = True):
    """``"layernorm"`` or ``"rmsnorm"`` by name."""
    if kind == "layernorm":
        return LayerNorm(epsilon=epsilon, use_bias=use_bias, dtype=dtype,
                         param_dtype=param_dtype, name=name)
    if kind == "rmsnorm":
        return RMSNorm(epsilon=epsilon, dtype=dtype, param_dtype=param_dtype, name=name)
    raise ValueError(f"Unknown norm {kind!r}; use 'layernorm' or 'rmsnorm'.")


def l2_normalize(x: Array, eps: float = 1e-12) -> Array:
    """``x / ||x||`` over the last axis, in float32 (``||x||**2`` floored at ``eps``)."""
    x = x.astype(jnp.float32)
    return x * jax.lax.rsqrt(jnp.maximum(jnp.sum(x * x, axis=-1, keepdims=True), eps))
