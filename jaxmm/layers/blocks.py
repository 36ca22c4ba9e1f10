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
import jax.numpy as jnp

from jaxmm.config import ConfigBase, ConfigError
from jaxmm.layers.attention import MultiHeadAttention
from jaxmm.layers.mlp import ACTIVATIONS, Mlp
from jaxmm.layers.norms import make_norm
from jaxmm.layers.positions import RopeScaling

Array = jax.Array

__all__ = ["DTYPES", "REMAT_POLICIES", "DecoderLayer", "EncoderLayer", "TransformerConfig"]

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}

# Names accepted by TransformerConfig.remat_policy -> jax.checkpoint policy
# ("none" = no rematerialisation; "full" = save nothing, recompute everything).
REMAT_POLICIES = {
    "none": None,
    "full": jax.checkpoint_policies.nothing_saveable,
    "dots": jax.checkpoint_policies.checkpoint_dots,
    "dots_no_batch": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
    "everything": jax.checkpoint_policies.everything_saveable,
}


@dataclasses.dataclass(frozen=True)
class TransformerConfig(ConfigBase):
    """Hyper-parameters shared by every layer of a Transformer stack.

    Attributes:
      num_layers: depth of the stack.
      d_model: model width ``E``.
      num_heads: query heads ``H``; ``num_kv_heads`` (default ``H``) for GQA/MQA.
      head_dim: per-head width (default ``d_model // num_heads``).
      mlp_dim: hidden width of the feed-forward block.
      activation: ``gelu`` (exact), ``gelu_tanh``, ``quick_gelu``, ``relu``, ``silu``.
      gated_mlp: gated feed-forward (SwiGLU with silu, GeGLU with gelu).
      norm: ``layernorm`` or ``rmsnorm``; ``norm_eps`` its epsilon.
      norm_position: ``pre`` (pre-LN) or ``post`` (post-LN).
      final_norm: apply a norm after the last layer (usual for pre-LN stacks).
      use_bias: biases in attention and MLP projections.
      attention_scale: logit scale (default ``1/sqrt(head_dim)``; T5 uses 1.0).
      dropout_rate: residual/MLP dropout; attention_dropout_rate: on weights.
      rotary_theta: if set, rotary position embedding with this base;
        ``rotary_dim`` rotates only that many features per head;
        ``rope_scaling`` (a :class:`~jaxmm.layers.RopeScaling`) scales its frequencies.
      cross_attention: decoder layers attend to an encoder output.
      scan_layers: run the stack with ``nn.scan`` (params stacked on a leading
        ``layers`` axis) instead of a Python loop.
      remat_policy: ``none``, ``full``, ``dots``, ``dots_no_batch``, ``everything``.
      dtype: computation dtype (``float32`` / ``bfloat16``); params use
        ``param_dtype`` (``float32``).
      attention_impl: ``auto``, ``plain``, ``xla`` or ``cudnn``.
      initializer_range: std of the normal init of attention and MLP kernels.
    """

    num_layers: int = 2
    d_model: int = 64
    num_heads: int = 4
    num_kv_heads: int | None = None
    head_dim: int | None = None
    mlp_dim: int = 256
    activation: str = "gelu"
    gated_mlp: bool = False
    norm: str = "layernorm"
    norm_eps: float = 1e-5
    norm_position: str = "pre"
    final_norm: bool = True
    use_bias: bool = True
    attention_scale: float | None = None
    dropout_rate: float = 0.0
    attention_dropout_rate: float = 0.0
    rotary_theta: float | None = None
    rotary_dim: int | None = None
    rope_scaling: RopeScaling | None = None
    cross_attention: bool = False
    scan_layers: bool = False
    remat_policy: str = "none"
    dtype: str = "float32"
    param_dtype: str = "float32"
    attention_impl: str = "auto"
    initializer_range: float = 0.02

    SIZES: ClassVar = {
        "tiny": dict(num_layers=2, d_model=64, num_heads=4, mlp_dim=256),
        "small": dict(num_layers=4, d_model=256, num_heads=4, mlp_dim=1024),
        "base": dict(num_layers=12, d_model=768, num_heads=12, mlp_dim=3072),
    }

    def validate(self) -> None:
        def bad(msg):
            raise ConfigError(f"TransformerConfig: {msg}")

        for name in ("num_layers", "d_model", "num_heads", "mlp_dim"):
            if getattr(self, name) < 1:
                bad(f"{name} must be >= 1; got {getattr(self, name)}.")
        if self.head_dim is None and self.d_model % self.num_heads:
            bad(
                f"d_model ({self.d_model}) is not divisible by num_heads ({self.num_heads}); "
                "change one of them or set head_dim."
            )
        kv = self.num_kv_heads or self.num_heads
        if kv < 1 or self.num_heads % kv:
            bad(
                f"num_heads ({self.num_heads}) must be a multiple of num_kv_heads "
                f"({self.num_kv_heads}); e.g. num_kv_heads=1 (MQA) or a divisor of num_heads."
            )
        choices = {
            "norm": ("layernorm", "rmsnorm"),
            "norm_position": ("pre", "post"),
            "remat_policy": tuple(REMAT_POLICIES),
            "dtype": tuple(DTYPES),
            "param_dtype": tuple(DTYPES),
            "attention_impl": ("auto", "plain", "xla", "cudnn"),
            "activation": tuple(ACTIVATIONS),
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                bad(f"{name}={getattr(self, name)!r} is not one of {', '.join(allowed)}.")
        if self.initializer_range <= 0:
            bad(f"initializer_range must be > 0; got {self.initializer_range}.")
        for name in ("dropout_rate", "attention_dropout_rate"):
            if not 0.0 <= getattr(self, name) < 1.0:
                bad(f"{name} must be in [0, 1); got {getattr(self, name)}.")

    @property
    def compute_dtype(self):
        return DTYPES[self.dtype]

    @property
    def weights_dtype(self):
        return DTYPES[self.param_dtype]

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
