"""Transformer layers: the shared layer config, encoder layer and decoder layer.

Both layers are residual blocks in either form:

* pre-LN:  ``x = x + Dropout(Sublayer(Norm(x)))`` (GPT-2, T5, ViT, Whisper, Llama)
* post-LN: ``x = Norm(x + Dropout(Sublayer(x)))`` (original Transformer, BERT)
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import flax.linen as nn
import jax

from jaxmm.config import ConfigBase
from jaxmm.layers.attention import MultiHeadAttention
from jaxmm.layers.config_fields import (
    DTYPES,
    REMAT_POLICIES,
    STACK_SIZES,
    ComputeFields,
    DropoutFields,
    LayerVariantFields,
    TransformerFields,
    shared_field_values,
)
from jaxmm.layers.mlp import Mlp
from jaxmm.layers.norms import make_norm
from jaxmm.layers.positions import RopeScaling

Array = jax.Array

__all__ = ["DTYPES", "REMAT_POLICIES", "DecoderLayer", "EncoderLayer", "TransformerConfig"]


@dataclasses.dataclass(frozen=True, kw_only=True)
class TransformerConfig(ComputeFields, DropoutFields, LayerVariantFields, TransformerFields):
    """Hyper-parameters shared by every layer of a Transformer stack.

    The widths (``num_layers``, ``d_model``, ``num_heads``, ``mlp_dim``,
    ``activation``, ``norm_eps``, ``attention_dropout_rate``), ``dropout_rate``,
    the compute fields (``dtype``, ``param_dtype``, ``scan_layers``,
    ``remat_policy``, ``attention_impl``) and the layer variant (``head_dim``,
    ``gated_mlp``, ``norm``, ``use_bias``) come from
    :mod:`jaxmm.layers.config_fields`. Its own attributes:

    Attributes:
      num_kv_heads: key/value heads (default ``num_heads``) for GQA/MQA.
      norm_position: ``pre`` (pre-LN) or ``post`` (post-LN).
      final_norm: apply a norm after the last layer (usual for pre-LN stacks).
      attention_scale: logit scale (default ``1/sqrt(head_dim)``; T5 uses 1.0).
      rotary_theta: if set, rotary position embedding with this base;
        ``rotary_dim`` rotates only that many features per head;
        ``rope_scaling`` (a :class:`~jaxmm.layers.RopeScaling`) scales its frequencies.
      cross_attention: decoder layers attend to an encoder output.
      initializer_range: std of the normal init of attention and MLP kernels.
    """

    num_kv_heads: int | None = None
    norm_position: str = "pre"
    final_norm: bool = True
    attention_scale: float | None = None
    rotary_theta: float | None = None
    rotary_dim: int | None = None
    rope_scaling: RopeScaling | None = None
    cross_attention: bool = False
    initializer_range: float = 0.02

    SIZES: ClassVar = STACK_SIZES

    def validate(self) -> None:
        kv = self.num_kv_heads or self.num_heads
        if kv < 1 or self.num_heads % kv:
            raise self.config_error(
                f"num_heads ({self.num_heads}) must be a multiple of num_kv_heads "
                f"({self.num_kv_heads}); e.g. num_kv_heads=1 (MQA) or a divisor of num_heads."
            )
        self.require_one_of("norm_position", ("pre", "post"))
        if self.initializer_range <= 0:
            raise self.config_error(
                f"initializer_range must be > 0; got {self.initializer_range}.")

    @classmethod
    def from_fields(cls, source: ConfigBase, **overrides: Any) -> TransformerConfig:
        """The stack a family config describes: ``source``'s values for the shared
        width, dropout, compute and layer-variant fields it has, then the family's
        ``overrides``."""
        shared = shared_field_values(source, TransformerFields, DropoutFields, ComputeFields,
                                     LayerVariantFields)
        return cls(**{**shared, **overrides})

    @property
    def resolved_head_dim(self) -> int:
        return self.head_dim or self.d_model // self.num_heads


def _attention(cfg: TransformerConfig, name: str, cross: bool) -> MultiHeadAttention:
    return MultiHeadAttention(
        num_heads=cfg.num_heads,
        head_dim=cfg.resolved_head_dim,
        num_kv_heads=cfg.num_kv_heads,
        out_features=cfg.d_model,
        is_cross_attention=cross,
        use_bias=cfg.use_bias,
        dropout_rate=cfg.attention_dropout_rate,
        scale=cfg.attention_scale,
        rotary_theta=None if cross else cfg.rotary_theta,
        rotary_dim=cfg.rotary_dim,
        rotary_scaling=None if cross else cfg.rope_scaling,
        implementation=cfg.attention_impl,
        dtype=cfg.compute_dtype,
        param_dtype=cfg.weights_dtype,
        kernel_init=nn.initializers.normal(cfg.initializer_range),
        name=name,
    )


class _ResidualMixin:
    """Pre-/post-LN residual wrapper shared by both layer kinds."""

    config: TransformerConfig

    def residual(self, x, sublayer, norm_name: str, deterministic: bool):
        cfg = self.config
        norm = make_norm(cfg.norm, cfg.norm_eps, cfg.compute_dtype, cfg.weights_dtype, norm_name)
        drop = nn.Dropout(cfg.dropout_rate)
        if cfg.norm_position == "pre":
            y, aux = sublayer(norm(x))
            return x + drop(y, deterministic=deterministic), aux
        y, aux = sublayer(x)
        return norm(x + drop(y, deterministic=deterministic)), aux

    def mlp(self, x, deterministic: bool):
        cfg = self.config
        block = Mlp(
            hidden_dim=cfg.mlp_dim,
            activation=cfg.activation,
            gated=cfg.gated_mlp,
            use_bias=cfg.use_bias,
            dtype=cfg.compute_dtype,
            param_dtype=cfg.weights_dtype,
            kernel_init=nn.initializers.normal(cfg.initializer_range),
            name="mlp",
        )
        return self.residual(
            x, lambda h: (block(h, deterministic=deterministic), None), "mlp_norm", deterministic
        )


class EncoderLayer(_ResidualMixin, nn.Module):
    """Self-attention + feed-forward, each in a residual block.

    ``x`` ``(B, T, E)`` -> ``(x, weights)``; ``weights`` ``(B, H, T, T)`` when
    ``return_weights`` else ``None``.
    """

    config: TransformerConfig

    @nn.compact
    def __call__(
        self, x: Array, mask: Array | None = None, bias: Array | None = None,
        positions: Array | None = None, deterministic: bool = True,
        return_weights: bool = False,
    ) -> tuple[Array, Any]:
        x = nn.with_logical_constraint(x, ("batch", "length", "embed"))
        attn = _attention(self.config, "self_attention", cross=False)
        x, weights = self.residual(
            x,
            lambda h: attn(h, mask=mask, bias=bias, positions=positions,
                           deterministic=deterministic, return_weights=return_weights),
            "attention_norm",
            deterministic,
        )
        x, _ = self.mlp(x, deterministic)
        return nn.with_logical_constraint(x, ("batch", "length", "embed")), weights


class DecoderLayer(_ResidualMixin, nn.Module):
    """Self-attention, optional cross-attention (``config.cross_attention``), FFN.

    ``mask`` is the self-attention mask (causal + padding; the caller builds
    it). In ``decode`` mode the KV cache supplies causality and ``mask`` spans
    the cache. Returns ``(x, (self_weights, cross_weights))``.
    """

    config: TransformerConfig

    @nn.compact
    def __call__(
        self, x: Array, encoder_out: Array | None = None, mask: Array | None = None,
        bias: Array | None = None, positions: Array | None = None,
        cross_mask: Array | None = None, cross_bias: Array | None = None,
        decode: bool = False, deterministic: bool = True, return_weights: bool = False,
    ) -> tuple[Array, Any]:
        cfg = self.config
        x = nn.with_logical_constraint(x, ("batch", "length", "embed"))
        attn = _attention(cfg, "self_attention", cross=False)
        x, self_w = self.residual(
            x,
            lambda h: attn(h, mask=mask, bias=bias, positions=positions, decode=decode,
                           deterministic=deterministic, return_weights=return_weights),
            "attention_norm",
            deterministic,
        )
        cross_w = None
        if cfg.cross_attention:
            if encoder_out is None and not decode:
                raise ValueError(
                    "This decoder has cross-attention: pass encoder_out (the encoder's "
                    "last_hidden_state)."
                )
            xattn = _attention(cfg, "cross_attention", cross=True)
            x, cross_w = self.residual(
                x,
                lambda h: xattn(h, encoder_out, mask=cross_mask, bias=cross_bias, decode=decode,
                                deterministic=deterministic, return_weights=return_weights),
                "cross_attention_norm",
                deterministic,
            )
        x, _ = self.mlp(x, deterministic)
        return nn.with_logical_constraint(x, ("batch", "length", "embed")), (self_w, cross_w)
