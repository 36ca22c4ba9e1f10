"""Position-wise feed-forward blocks: GELU/ReLU MLPs and gated (SwiGLU/GeGLU) MLPs."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

Array = jax.Array

__all__ = ["ACTIVATIONS", "Mlp", "classifier_head", "get_activation"]


def _quick_gelu(x):
    return x * jax.nn.sigmoid(1.702 * x)


ACTIVATIONS = {
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),  # exact (erf) GELU
    "gelu_tanh": lambda x: jax.nn.gelu(x, approximate=True),  # HF "gelu_new"
    "quick_gelu": _quick_gelu,  # CLIP
    "relu": jax.nn.relu,
    "silu": jax.nn.silu,
    "swish": jax.nn.silu,
    "tanh": jnp.tanh,
    "sigmoid": jax.nn.sigmoid,
}
# Hugging Face spellings of the same functions.
ACTIVATIONS.update(
    {"gelu_new": ACTIVATIONS["gelu_tanh"], "gelu_pytorch_tanh": ACTIVATIONS["gelu_tanh"],
     "gelu_fast": ACTIVATIONS["gelu_tanh"]}
)


def get_activation(name: str):
    """Activation function by name (``gelu``, ``gelu_tanh``, ``relu``, ``silu``, ...)."""
    if name not in ACTIVATIONS:
        from jaxmm.config import nearest

        close = nearest(name, list(ACTIVATIONS))
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(
            f"Unknown activation {name!r}.{hint} Available: {', '.join(sorted(ACTIVATIONS))}."
        )
    return ACTIVATIONS[name]


class Mlp(nn.Module):
    """``wo(act(wi x))`` or, when ``gated``, ``wo(act(wi_0 x) * wi_1 x)``.

    Gated with ``silu`` is SwiGLU (Llama), with ``gelu_tanh`` GeGLU (T5 v1.1).
    Kernels carry logical axes ``(embed, mlp)`` and ``(mlp, embed)``.
    """

    hidden_dim: int
    out_dim: int | None = None
    activation: str = "gelu"
    gated: bool = False
    use_bias: bool = True
    dropout_rate: float = 0.0
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32
    kernel_init: Any = nn.initializers.normal(0.02)

    def _dense(self, features, names, name):
        return nn.Dense(
            features,
            use_bias=self.use_bias,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            kernel_init=nn.with_logical_partitioning(self.kernel_init, names),
            bias_init=nn.with_logical_partitioning(nn.initializers.zeros, names[-1:]),
            name=name,
        )

    @nn.compact
    def __call__(self, x: Array, deterministic: bool = True) -> Array:
        act = get_activation(self.activation)
        out_dim = self.out_dim or x.shape[-1]
        if self.gated:
            h = act(self._dense(self.hidden_dim, ("embed", "mlp"), "wi_0")(x))
            h = h * self._dense(self.hidden_dim, ("embed", "mlp"), "wi_1")(x)
        else:
            h = act(self._dense(self.hidden_dim, ("embed", "mlp"), "wi")(x))
        h = nn.with_logical_constraint(h, ("batch", "length", "mlp"))
        h = nn.Dropout(self.dropout_rate)(h, deterministic=deterministic)
        return self._dense(out_dim, ("mlp", "embed"), "wo")(h)


def classifier_head(num_labels: int, dtype: Any = jnp.float32, param_dtype: Any = jnp.float32,
                    name: str = "classifier") -> nn.Dense:
    """Zero-initialised linear classifier ``(..., embed) -> (..., num_labels)``.

    Kernel axes ``("embed", None)``; zero init makes the first logits uniform.
    """
    return nn.Dense(
        num_labels, dtype=dtype, param_dtype=param_dtype,
        kernel_init=nn.with_logical_partitioning(nn.initializers.zeros, ("embed", None)),
        bias_init=nn.with_logical_partitioning(nn.initializers.zeros, (None,)),
        name=name,
    )
