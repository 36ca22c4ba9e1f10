"""Weight-only int8 quantisation of any model's params (for inference).

Each targeted weight is stored as int8 values and a float32 scale per output
channel (symmetric, no zero point)::

    scale = max(|W|) over the input axes / 127
    q     = clip(round(W / scale), -127, 127)     # int8
    W'    = q * scale                             # |W - W'| <= scale / 2

Dense kernels get one scale per output feature (the input axes are the ones
:func:`jaxmm.lora.kernel_layout` names: the first, or all but the last for the
attention output projections; a ``scan_layers`` stack axis keeps its own
scales); embedding tables one scale per row (token), which also serves a tied
LM head. Vectors (biases, norm scales) stay as they are.

:func:`quantize_params` returns the same tree with :class:`QArray` leaves (a
pytree: it passes through ``jax.jit``, ``jax.device_put`` and sharding like any
params). Run the model on ``dequantize(qparams)`` *inside* the jitted function,
so the stored weights stay int8 and XLA converts them where they are used::

    qparams = quantize.quantize_params(params)
    logits = jax.jit(lambda p, x: model.apply({"params": quantize.dequantize(p)}, x))(qparams, ids)

:func:`jaxmm.generate` accepts ``qparams`` directly (it dequantizes inside its
compiled decoding program).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from jaxmm.config import ConfigError
from jaxmm.lora import kernel_layout

__all__ = ["DEFAULT_TARGETS", "QArray", "dequantize", "is_quantized", "nbytes",
           "quantize_array", "quantize_params"]

# Every Dense kernel and every embedding table.
DEFAULT_TARGETS = (r"(^|/)kernel$", r"(^|/)embedding$")


@flax.struct.dataclass
class QArray:
    """An int8-quantised array: ``value`` (int8) times ``scale`` (float32, shaped to
    broadcast against ``value``), restored to ``dtype``."""

    value: jax.Array
    scale: jax.Array
    dtype: str = flax.struct.field(pytree_node=False, default="float32")

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.value.shape)

    def dequantize(self) -> jax.Array:
        return (self.value.astype(jnp.float32) * self.scale).astype(self.dtype)


def quantize_array(w: Any, reduce_axes: Sequence[int]) -> QArray:
    """Symmetric int8 of ``w`` with one scale per index of the axes not in
    ``reduce_axes`` (e.g. the input axes of a kernel)."""
    w = jnp.asarray(w)
    amax = jnp.max(jnp.abs(w.astype(jnp.float32)), axis=tuple(reduce_axes), keepdims=True)
    scale = jnp.where(amax > 0, amax / 127.0, 1.0)
    q = jnp.clip(jnp.round(w.astype(jnp.float32) / scale), -127, 127).astype(jnp.int8)
    return QArray(q, scale.astype(jnp.float32), jnp.dtype(w.dtype).name)


def _reduce_axes(path: str, shape: Sequence[int]) -> tuple[int, ...]:
    if path.endswith("embedding"):
        return tuple(range(1, len(shape)))  # one scale per row
    stacked, n_in, _ = kernel_layout(path, shape)
    return tuple(range(stacked, stacked + n_in))


def quantize_params(params: Any, targets: Sequence[str] = DEFAULT_TARGETS) -> Any:
    """``params`` with each weight of 2+ dims whose ``/``-joined path matches a
    ``targets`` regex replaced by a :class:`QArray`; raises a ``ConfigError`` when
    nothing matches."""
    pats = [re.compile(t) for t in targets]
    flat = traverse_util.flatten_dict(nn.meta.unbox(params), sep="/")
    hit = 0
    for path, w in flat.items():
        if isinstance(w, QArray) or np.ndim(w) < 2 or not any(r.search(path) for r in pats):
            continue
        if not jnp.issubdtype(jnp.asarray(w).dtype, jnp.floating):
            continue
        flat[path] = quantize_array(w, _reduce_axes(path, np.shape(w)))
        hit += 1
    if not hit:
        raise ConfigError(f"quantize targets {tuple(targets)!r} match no weight of 2+ dims.",
                          hint="Give regexes of '/'-joined param paths, e.g. 'kernel$'.")
    return traverse_util.unflatten_dict(flat, sep="/")


def is_quantized(tree: Any) -> bool:
    """Whether ``tree`` holds any :class:`QArray`."""
    return any(isinstance(x, QArray)
               for x in jax.tree.leaves(tree, is_leaf=lambda x: isinstance(x, QArray)))


def dequantize(tree: Any) -> Any:
    """``tree`` with every :class:`QArray` restored to a float array (others unchanged).
    Call it inside the jitted function that uses the params."""
    return jax.tree.map(lambda x: x.dequantize() if isinstance(x, QArray) else x, tree,
                        is_leaf=lambda x: isinstance(x, QArray))


def nbytes(tree: Any) -> int:
    """Bytes of the arrays in ``tree`` (int8 values and scales of quantised leaves)."""
    return sum(int(np.prod(x.shape)) * jnp.dtype(x.dtype).itemsize
               for x in jax.tree.leaves(tree))
