"""Tensor mapping for the shared jaxmm layers <-> PyTorch ``nn.Linear``/``LayerNorm``.

Family converters describe *where* tensors live; these helpers do the layout
work: PyTorch ``Linear.weight`` is ``(out, in)``, a jaxmm ``Dense`` kernel is
``(in, out)``; attention projections are ``(E, H, D)`` / ``(H, D, E)``.

Import helpers take a :class:`~jaxmm.convert.io.TensorStore` and a tensor name
prefix (``"encoder.layer.0.attention.attention.query"``) and return the jaxmm
param subtree; a missing tensor is recorded by the store (reported together
by ``store.finish()``) and yields an empty placeholder. Export helpers take the
subtree and return ``{hf_name: array}``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from jaxmm.convert.io import TensorStore

__all__ = [
    "attention_from_hf",
    "attention_to_hf",
    "conv_from_hf",
    "conv_to_hf",
    "dense_from_hf",
    "dense_to_hf",
    "norm_from_hf",
    "norm_to_hf",
]


def _np(x: Any) -> np.ndarray:
    return np.asarray(x, dtype=np.float32)


def _reshape(arr: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    # Missing tensors come back empty; keep them empty so finish() reports them.
    return arr if arr.size == 0 else arr.reshape(shape)


def dense_from_hf(store: TensorStore, name: str, bias: bool = True) -> dict[str, np.ndarray]:
    """``name.weight`` ``(out, in)`` (+ ``name.bias``) -> ``{"kernel": (in, out), "bias"}``."""
    out = {"kernel": store.take(f"{name}.weight", transpose=True)}
    if bias:
        out["bias"] = store.take(f"{name}.bias")
    return out


def dense_to_hf(params: dict, name: str) -> dict[str, np.ndarray]:
    out = {f"{name}.weight": _np(params["kernel"]).T}
    if "bias" in params:
        out[f"{name}.bias"] = _np(params["bias"])
    return out


def norm_from_hf(store: TensorStore, name: str, bias: bool = True) -> dict[str, np.ndarray]:
    """LayerNorm/RMSNorm ``name.weight`` (+ ``name.bias``) -> ``{"scale", "bias"}``."""
    out = {"scale": store.take(f"{name}.weight")}
    if bias:
        out["bias"] = store.take(f"{name}.bias")
    return out


def norm_to_hf(params: dict, name: str) -> dict[str, np.ndarray]:
    out = {f"{name}.weight": _np(params["scale"])}
    if "bias" in params:
        out[f"{name}.bias"] = _np(params["bias"])
    return out


def conv_from_hf(store: TensorStore, name: str, bias: bool = True) -> dict[str, np.ndarray]:
    """PyTorch ``Conv{1,2,3}d`` weight ``(out, in, *k)`` -> Flax kernel ``(*k, in, out)``."""
    w = store.take(f"{name}.weight")
    if w.size:
        w = np.moveaxis(w, (0, 1), (-1, -2))
    out = {"kernel": w}
    if bias:
        out["bias"] = store.take(f"{name}.bias")
    return out


def conv_to_hf(params: dict, name: str) -> dict[str, np.ndarray]:
    out = {f"{name}.weight": np.ascontiguousarray(np.moveaxis(_np(params["kernel"]), (-1, -2),
                                                              (0, 1)))}
    if "bias" in params:
        out[f"{name}.bias"] = _np(params["bias"])
    return out


def attention_from_hf(
    store: TensorStore, names: dict[str, str], num_heads: int, num_kv_heads: int | None = None,
    *, bias: bool = True, zero_bias: tuple[str, ...] = (), out_bias: bool | None = None,
) -> dict[str, dict[str, np.ndarray]]:
    """Four HF linear layers -> a :class:`~jaxmm.layers.MultiHeadAttention` subtree.

    Args:
      names: HF prefixes for ``query``, ``key``, ``value``, ``out``.
      num_heads / num_kv_heads: head counts (``D = out_features / heads``).
      bias: whether q/k/v carry biases; ``zero_bias`` lists projections whose
        bias is absent in HF but present in jaxmm (Whisper's ``k_proj``):
        they are filled with zeros.
      out_bias: whether ``out`` has a bias (default ``bias``).
    """
    kv_heads = num_kv_heads or num_heads
    out: dict[str, dict[str, np.ndarray]] = {}
    for role in ("query", "key", "value"):
        heads = num_heads if role == "query" else kv_heads
        w = store.take(f"{names[role]}.weight")  # (H*D, E)
        d = w.shape[0] // heads if w.size else 0
        sub = {"kernel": _reshape(w.T, (w.shape[1] if w.size else 0, heads, d))}
        if role in zero_bias:
            sub["bias"] = np.zeros((heads, d), np.float32)
        elif bias:
            sub["bias"] = _reshape(store.take(f"{names[role]}.bias"), (heads, d))
        out[role] = sub
    w = store.take(f"{names['out']}.weight")  # (E, H*D)
    d = w.shape[1] // num_heads if w.size else 0
    out["out"] = {"kernel": _reshape(w.T, (num_heads, d, w.shape[0] if w.size else 0))}
    if bias if out_bias is None else out_bias:
        out["out"]["bias"] = store.take(f"{names['out']}.bias")
    return out


def attention_to_hf(params: dict, names: dict[str, str], *, drop_bias: tuple[str, ...] = ()
                    ) -> dict[str, np.ndarray]:
    """Inverse of :func:`attention_from_hf`; ``drop_bias`` projections lose their bias."""
    out = {}
    for role in ("query", "key", "value"):
        k = _np(params[role]["kernel"])  # (E, H, D)
        out[f"{names[role]}.weight"] = k.reshape(k.shape[0], -1).T
        if "bias" in params[role] and role not in drop_bias:
            out[f"{names[role]}.bias"] = _np(params[role]["bias"]).reshape(-1)
    k = _np(params["out"]["kernel"])  # (H, D, E)
    out[f"{names['out']}.weight"] = k.reshape(-1, k.shape[-1]).T
    if "bias" in params["out"]:
        out[f"{names['out']}.bias"] = _np(params["out"]["bias"])
    return out
