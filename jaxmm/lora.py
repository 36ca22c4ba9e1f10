"""LoRA: low-rank adapters on any model's Dense kernels, as a params transform.

Nothing in the model changes. A targeted kernel ``W`` gets two factors, ``A``
(``in x r``, random) and ``B`` (``r x out``, zeros), and the forward pass uses
``W + (alpha / r) * A @ B``, computed from the params before ``model.apply``
(inside the jitted step, so XLA sees one matmul per layer as before)::

    adapters = lora.init_adapters(params, jax.random.key(0), lora.LoraConfig(rank=8))
    logits = model.apply({"params": lora.merge(params, adapters, cfg.scale)}, ids)

Only ``adapters`` are trained: differentiate with respect to them and give the
optimizer that tree alone, so the frozen base has no gradient and no optimizer
state. ``merge`` gives plain params for export, generation or ``convert.to_hf``.

Kernels are addressed by their ``/``-joined path (``decoder/layers_0/layer/
self_attention/query/kernel``) and selected with ``re.search`` on
:attr:`LoraConfig.targets`. A kernel of more than two dimensions (jaxmm's
attention projections: ``(embed, heads, head_dim)`` for q/k/v and ``(heads,
head_dim, embed)`` for the output) is treated as the matrix of its flattened
input and output axes (:func:`kernel_layout`); a stacked kernel of
``scan_layers`` (leading ``layers`` axis) gets one adapter per layer.

The adapters tree mirrors the params tree: at each targeted kernel's position
it holds ``{"lora_a": (*stack, in, r), "lora_b": (*stack, r, out)}``, and at
each param matched by :attr:`LoraConfig.train_full` (a new classifier head,
say; PEFT's ``modules_to_save``) ``{"full": <a trained copy of the param>}``,
which replaces the base value when merged.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import traverse_util

from jaxmm.config import ConfigError

__all__ = ["DEFAULT_TARGETS", "LoraConfig", "init_adapters", "kernel_layout", "merge",
           "num_params", "refresh_full", "target_paths"]

# Attention query/key/value/output and MLP kernels of every jaxmm family (and the
# Hugging Face names, for params imported under them).
DEFAULT_TARGETS = (
    r"(^|/)(query|key|value|out|q_proj|k_proj|v_proj|o_proj|out_proj)/kernel$",
    r"(^|/)(wi|wo|wi_0|wi_1|fc1|fc2|gate_proj|up_proj|down_proj)/kernel$",
)
# Kernels whose *output* is the last axis alone and whose input is all the other
# (non-stacked) axes: attention output projections of (heads, head_dim, embed).
_OUTPUT_PROJECTIONS = re.compile(r"(^|/)(out|o|o_proj|out_proj|wo)/kernel$")
INITS = ("kaiming", "normal")


@dataclasses.dataclass(frozen=True)
class LoraConfig:
    """rank: r of the factors. alpha: the update is scaled by ``alpha / rank``.
    targets: regexes (``re.search``) of the kernel paths to adapt. init: ``A``'s
    initialiser, ``"kaiming"`` (uniform, bound ``1/sqrt(in)``, as PEFT) or
    ``"normal"`` (std ``1/rank``); ``B`` is always zeros, so the adapted model
    starts equal to the base. train_full: regexes of params trained in full
    alongside the adapters (e.g. ``("classifier",)`` for a new task head)."""

    rank: int = 8
    alpha: float = 16.0
    targets: tuple[str, ...] = DEFAULT_TARGETS
    init: str = "kaiming"
    train_full: tuple[str, ...] = ()

    def __post_init__(self):
        if int(self.rank) < 1:
            raise ConfigError(f"lora.rank must be >= 1; got {self.rank}.")
        if self.init not in INITS:
            raise ConfigError(f"lora.init must be one of {', '.join(INITS)}; got {self.init!r}.")
        if not self.targets:
            raise ConfigError("lora.targets is empty; give at least one kernel path regex.")
        for key in ("targets", "train_full"):
            for pattern in getattr(self, key):
                try:
                    re.compile(pattern)
                except re.error as e:
                    raise ConfigError(f"lora.{key}: invalid regex {pattern!r}: {e}") from None

    @property
    def scale(self) -> float:
        return float(self.alpha) / int(self.rank)


def kernel_layout(path: str, shape: Sequence[int]) -> tuple[int, int, int]:
    """``(stacked, in_axes, out_axes)``: how many leading axes are a layer stack
    (``scan_layers``: a path component ``layers``), and how many of the rest are
    the input and the output. 2-D: one each. More: the output projections
    (``.../out/kernel``, ``wo``, ``o_proj``) have one output axis; others one
    input axis (``(embed, heads, head_dim)``)."""
    stacked = 1 if "layers" in path.split("/") and len(shape) >= 3 else 0
    rest = len(shape) - stacked
    if rest < 2:
        raise ConfigError(f"LoRA target {path!r} has shape {tuple(shape)}, not a kernel of "
                          "2+ dims; narrow lora.targets to Dense kernels.")
    n_in = rest - 1 if _OUTPUT_PROJECTIONS.search(path) else 1
    return stacked, n_in, rest - n_in


def _flat(tree: Any) -> dict[str, Any]:
    """``{"a/b/kernel": leaf}`` of a params tree (Flax's logical-axis boxes removed)."""
    return traverse_util.flatten_dict(nn.meta.unbox(tree), sep="/") if tree else {}


def target_paths(params: Any, targets: Sequence[str]) -> list[str]:
    """Paths of the params leaves matched by ``targets`` (2+ dims only); raises a
    :class:`ConfigError` naming some kernels when nothing matches."""
    pats = [re.compile(t) for t in targets]
    flat = _flat(params)
    hits = [p for p, x in flat.items() if len(jnp.shape(x)) >= 2 and any(r.search(p) for r in pats)]
    if not hits:
        kernels = [p for p, x in flat.items() if len(jnp.shape(x)) >= 2][:6]
        raise ConfigError(
            f"lora.targets {tuple(targets)!r} match no kernel of the model.",
            hint=f"Kernels are named like: {', '.join(kernels)}; set lora.targets to regexes "
            "of those paths.")
    return sorted(hits)


def init_adapters(params: Any, rng: jax.Array, config: LoraConfig) -> dict[str, Any]:
    """The adapters of ``params``' targeted kernels (``B = 0``: merged == base).

    Works on arrays or ``ShapeDtypeStruct``s (under ``jax.eval_shape``); factors
    are float32 whatever the kernel's dtype."""
    flat = _flat(params)
    out = {}
    for i, path in enumerate(target_paths(params, config.targets)):
        shape = tuple(flat[path].shape)
        stacked, n_in, _ = kernel_layout(path, shape)
        lead = shape[:stacked]
        d_in = math.prod(shape[stacked: stacked + n_in])
        d_out = math.prod(shape[stacked + n_in:])
        key = jax.random.fold_in(rng, i)
        a_shape = (*lead, d_in, config.rank)
        if config.init == "kaiming":
            bound = 1.0 / math.sqrt(d_in)
            a = jax.random.uniform(key, a_shape, jnp.float32, -bound, bound)
        else:
            a = jax.random.normal(key, a_shape, jnp.float32) / config.rank
        out[path + "/lora_a"] = a
        out[path + "/lora_b"] = jnp.zeros((*lead, config.rank, d_out), jnp.float32)
    full = [re.compile(t) for t in config.train_full]
    for path, x in flat.items():
        if any(r.search(path) for r in full):
            if path + "/lora_a" in out:
                raise ConfigError(f"{path!r} matches both lora.targets and lora.train_full; "
                                  "narrow one of them.")
            out[path + "/full"] = x
    if full and not any(k.endswith("/full") for k in out):
        raise ConfigError(f"lora.train_full {tuple(config.train_full)!r} matches no param.",
                          hint=f"Params are named like: {', '.join(list(flat)[:6])}.")
    return traverse_util.unflatten_dict(out, sep="/")


def refresh_full(adapters: Any, params: Any) -> Any:
    """``adapters`` with their ``train_full`` copies taken from ``params`` (after
    the base params were replaced, e.g. by pretrained weights)."""
    flat, base = _flat(adapters), _flat(params)
    for key in flat:
        if key.endswith("/full"):
            flat[key] = base[key[: -len("/full")]]
    return traverse_util.unflatten_dict(flat, sep="/")


def merge(params: Any, adapters: Any, scale: float) -> Any:
    """``params`` with ``W + scale * A @ B`` at each adapted kernel (in the
    kernel's dtype); a plain params tree. Leaves that are ``ShapeDtypeStruct``s
    stay as they are (the merged shapes equal the base's)."""
    if not adapters:
        return params
    flat = _flat(params)
    factors = _flat(adapters)
    for key, a in factors.items():
        if key.endswith("/full"):
            flat[key[: -len("/full")]] = a
            continue
        if not key.endswith("/lora_a"):
            continue
        path = key[: -len("/lora_a")]
        if path not in flat:
            raise ConfigError(f"LoRA adapter for {path!r} has no kernel in the params; the "
                              "adapters belong to another model.")
        w = flat[path]
        if isinstance(w, jax.ShapeDtypeStruct) or isinstance(a, jax.ShapeDtypeStruct):
            continue
        b = factors[path + "/lora_b"]
        delta = jnp.matmul(a, b, precision=jax.lax.Precision.HIGHEST).reshape(w.shape)
        flat[path] = (w + scale * delta).astype(w.dtype)
    return traverse_util.unflatten_dict(flat, sep="/")


def num_params(tree: Any) -> int:
    """Number of scalars in a tree (of arrays or ``ShapeDtypeStruct``s)."""
    return sum(math.prod(jnp.shape(x)) for x in jax.tree.leaves(tree))
