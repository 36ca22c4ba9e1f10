"""A stack of encoder or decoder layers, as a Python loop or ``nn.scan``.

With ``config.scan_layers`` the layer parameters are stacked along a leading
``layers`` axis (one compiled layer body, fast compiles for deep models);
otherwise each layer has its own subtree ``layers_0``, ``layers_1``, ....
:func:`stack_layer_params` / :func:`unstack_layer_params` convert between the
two layouts. ``config.remat_policy`` wraps each layer in ``nn.remat``
(:func:`remat_module`).
Both paths run the same layer code and give the same numbers.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp

from jaxmm.layers.blocks import REMAT_POLICIES, DecoderLayer, EncoderLayer, TransformerConfig
from jaxmm.layers.norms import make_norm

Array = jax.Array

__all__ = ["StackOutput", "TransformerStack", "remat_module", "stack_layer_params",
           "unstack_layer_params"]


def remat_module(module_cls: type[nn.Module], policy: str, static: Sequence[str]) -> type:
    """``module_cls`` wrapped in ``nn.remat`` with the named ``policy``
    (``"none"`` returns it unchanged).

    ``static`` names the ``__call__`` arguments that are Python values (flags
    such as ``deterministic``); ``nn.remat`` needs their positions, which are
    read from the signature here, so adding an argument cannot silently shift
    them. Callers pass those arguments positionally.
    """
    if policy not in REMAT_POLICIES:
        raise ValueError(f"remat policy {policy!r} is not one of {', '.join(REMAT_POLICIES)}.")
    if policy == "none":
        return module_cls
    names = list(inspect.signature(module_cls.__call__).parameters)  # "self" is position 0
    missing = [n for n in static if n not in names]
    if missing:
        raise TypeError(f"{module_cls.__name__}.__call__ has no argument(s) {missing}; "
                        f"its arguments are {names[1:]}.")
    return nn.remat(module_cls, policy=REMAT_POLICIES[policy],
                    static_argnums=tuple(names.index(n) for n in static))


@flax.struct.dataclass
class StackOutput:
    """Outputs of a stack (Hugging Face field names).

    hidden_states: ``num_layers + 1`` arrays (embeddings, then after each
      layer; the last one after the final norm) when requested.
    attentions / cross_attentions: one ``(B, H, T, S)`` array per layer.
    """

    last_hidden_state: Array
    hidden_states: tuple[Array, ...] | None = None
    attentions: tuple[Array, ...] | None = None
    cross_attentions: tuple[Array, ...] | None = None


class _Layer(nn.Module):
    """Uniform ``(carry, *broadcast) -> (carry, per-layer outputs)`` wrapper."""

    config: TransformerConfig
    decoder: bool

    @nn.compact
    def __call__(self, x, mask, bias, positions, encoder_out, cross_mask, cross_bias,
                 decode, deterministic, output_attentions, output_hidden_states):
        if self.decoder:
            x, (self_w, cross_w) = DecoderLayer(self.config, name="layer")(
                x, encoder_out, mask, bias, positions, cross_mask, cross_bias,
                decode=decode, deterministic=deterministic, return_weights=output_attentions,
            )
        else:
            x, self_w = EncoderLayer(self.config, name="layer")(
                x, mask, bias, positions, deterministic=deterministic,
                return_weights=output_attentions,
            )
            cross_w = None
        per_layer = (x if output_hidden_states else None, self_w, cross_w)
        return x, per_layer


class TransformerStack(nn.Module):
    """``num_layers`` encoder (``decoder=False``) or decoder layers + final norm."""

    config: TransformerConfig
    decoder: bool = False

    @nn.compact
    def __call__(
        self,
        x: Array,
        *,
        mask: Array | None = None,
        bias: Array | None = None,
        positions: Array | None = None,
        encoder_out: Array | None = None,
        cross_mask: Array | None = None,
        cross_bias: Array | None = None,
        decode: bool = False,
        deterministic: bool = True,
        output_attentions: bool = False,
        output_hidden_states: bool = False,
    ) -> StackOutput:
        cfg = self.config
        if x.ndim != 3 or x.shape[-1] != cfg.d_model:
            raise ValueError(
                f"TransformerStack expects inputs (batch, length, {cfg.d_model}); got {x.shape}."
            )
        x = x.astype(cfg.compute_dtype)
        x_in = x
        layer_cls = remat_module(_Layer, cfg.remat_policy, ("decode", "deterministic",
                                                          "output_attentions",
                                                          "output_hidden_states"))
        args = (mask, bias, positions, encoder_out, cross_mask, cross_bias,
                decode, deterministic, output_attentions, output_hidden_states)
        if cfg.scan_layers:
            scanned = nn.scan(
                layer_cls,
                variable_axes={"params": 0, "cache": 0, "intermediates": 0},
                split_rngs={"params": True, "dropout": True},
                in_axes=(nn.broadcast,) * len(args),
                length=cfg.num_layers,
                metadata_params={nn.PARTITION_NAME: "layers"},
            )
            x, (hs, attn, xattn) = scanned(cfg, self.decoder, name="layers")(x, *args)
            split = lambda a: None if a is None else tuple(a[i] for i in range(cfg.num_layers))  # noqa: E731
            hs, attn, xattn = split(hs), split(attn), split(xattn)
        else:
            outs = []
            for i in range(cfg.num_layers):
                x, per_layer = layer_cls(cfg, self.decoder, name=f"layers_{i}")(x, *args)
                outs.append(per_layer)
            gather = lambda j: (  # noqa: E731
                None if not outs or outs[0][j] is None else tuple(o[j] for o in outs)
            )
            hs, attn, xattn = gather(0), gather(1), gather(2)
        if cfg.final_norm:
            x = make_norm(cfg.norm, cfg.norm_eps, cfg.compute_dtype, cfg.weights_dtype,
                          "final_norm")(x)
        all_hidden = None
        if output_hidden_states:
            # Stack input, outputs of layers 0..L-2, then the final (normed) output.
            all_hidden = (x_in,) + tuple(hs[:-1]) + (x,)
        return StackOutput(
            last_hidden_state=x,
            hidden_states=all_hidden,
            attentions=attn if output_attentions else None,
            cross_attentions=xattn if (output_attentions and self.decoder
                                       and cfg.cross_attention) else None,
        )


def stack_layer_params(params: dict[str, Any], num_layers: int, prefix: str = "layers") -> dict:
    """Loop layout (``layers_0``..``layers_{L-1}``) -> scan layout (``layers``, stacked)."""
    params = dict(params)
    per_layer = [params.pop(f"{prefix}_{i}") for i in range(num_layers)]
    params[prefix] = jax.tree.map(lambda *xs: jnp.stack(xs), *per_layer)
    return params


def unstack_layer_params(params: dict[str, Any], num_layers: int, prefix: str = "layers") -> dict:
    """Scan layout (``layers`` stacked on axis 0) -> loop layout (``layers_i``)."""
    params = dict(params)
    stacked = params.pop(prefix)
    for i in range(num_layers):
        params[f"{prefix}_{i}"] = jax.tree.map(lambda a, i=i: a[i], stacked)
    return params
