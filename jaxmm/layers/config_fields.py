"""Config fields shared by every Transformer stack, each declared and checked once.

The layer-level :class:`~jaxmm.layers.TransformerConfig` and every model family's
config (BERT, GPT, T5, ViT, CLIP, Whisper, AST, fusion, ...) inherit these groups
instead of re-declaring the fields, so a new option (say, quantization) is one
field in one group. Each group checks its own fields in ``check_fields``, which
:class:`~jaxmm.config.ConfigBase` runs for every class that inherits it, with the
same message for every family. A family changes a default through ``DEFAULTS``::

    @dataclasses.dataclass(frozen=True, kw_only=True)
    class ViTConfig(ComputeFields, DropoutFields, TransformerFields):
        DEFAULTS = {"num_layers": 12, "d_model": 768, "num_heads": 12, "mlp_dim": 3072}
        patch_size: int = 16

The groups (fields; what their ``check_fields`` checks):

* :class:`PrecisionFields`: ``dtype``, ``param_dtype`` (names in :data:`DTYPES`).
* :class:`ComputeFields`: the precision fields + ``scan_layers``,
  ``remat_policy``, ``attention_impl`` (names in :data:`REMAT_POLICIES`,
  :data:`ATTENTION_IMPLS`).
* :class:`NormFields`: ``norm_eps`` (> 0).
* :class:`TransformerFields`: ``norm_eps`` + ``num_layers``, ``d_model``,
  ``num_heads``, ``mlp_dim``, ``activation``, ``attention_dropout_rate`` (sizes
  >= 1, heads divide ``d_model``, a known activation, a rate in [0, 1)).
* :class:`DropoutFields`: ``dropout_rate`` (in [0, 1)).
* :class:`LayerVariantFields`: ``head_dim``, ``gated_mlp``, ``norm``,
  ``use_bias``, the layer options GPT/Llama and T5 expose (a known norm,
  ``head_dim >= 1``).

Text vocabulary and special-token groups live in :mod:`jaxmm.models.config_fields`.
Defaults here are the layer-level ones (a tiny stack); families override them.
"""

from __future__ import annotations

import dataclasses
import functools
import typing
from typing import Any

import jax
import jax.numpy as jnp

from jaxmm.config import ConfigBase
from jaxmm.layers.attention import Implementation
from jaxmm.layers.mlp import ACTIVATIONS

__all__ = [
    "ATTENTION_IMPLS",
    "DTYPES",
    "REMAT_POLICIES",
    "STACK_SIZES",
    "ComputeFields",
    "DropoutFields",
    "LayerVariantFields",
    "NormFields",
    "PrecisionFields",
    "TransformerFields",
    "shared_field_values",
]

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}

# Names accepted by ComputeFields.remat_policy -> jax.checkpoint policy
# ("none" = no rematerialisation; "full" = save nothing, recompute everything).
REMAT_POLICIES = {
    "none": None,
    "full": jax.checkpoint_policies.nothing_saveable,
    "dots": jax.checkpoint_policies.checkpoint_dots,
    "dots_no_batch": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
    "everything": jax.checkpoint_policies.everything_saveable,
}

ATTENTION_IMPLS: tuple[str, ...] = typing.get_args(Implementation)

# Size presets of a generic stack (TransformerConfig, FusionConfig).
STACK_SIZES = {
    "tiny": dict(num_layers=2, d_model=64, num_heads=4, mlp_dim=256),
    "small": dict(num_layers=4, d_model=256, num_heads=4, mlp_dim=1024),
    "base": dict(num_layers=12, d_model=768, num_heads=12, mlp_dim=3072),
}


@dataclasses.dataclass(frozen=True, kw_only=True)
class PrecisionFields(ConfigBase):
    """Numeric precision.

    Attributes:
      dtype: computation dtype (``float32``, ``bfloat16``, ``float16``).
      param_dtype: parameter storage dtype (same names; usually ``float32``).
    """

    dtype: str = "float32"
    param_dtype: str = "float32"

    def check_fields(self) -> None:
        self.require_one_of("dtype", DTYPES)
        self.require_one_of("param_dtype", DTYPES)

    @property
    def compute_dtype(self):
        """``dtype`` as a JAX dtype."""
        return DTYPES[self.dtype]

    @property
    def weights_dtype(self):
        """``param_dtype`` as a JAX dtype."""
        return DTYPES[self.param_dtype]


@dataclasses.dataclass(frozen=True, kw_only=True)
class ComputeFields(PrecisionFields):
    """How a Transformer stack is computed (no effect on the parameters' values).

    Attributes:
      scan_layers: run the stack with ``nn.scan`` (params stacked on a leading
        ``layers`` axis) instead of a Python loop.
      remat_policy: ``none``, ``full``, ``dots``, ``dots_no_batch`` or
        ``everything`` (:data:`REMAT_POLICIES`).
      attention_impl: ``auto``, ``plain``, ``xla`` or ``cudnn``
        (:func:`jaxmm.layers.dot_product_attention`).
    """

    scan_layers: bool = False
    remat_policy: str = "none"
    attention_impl: str = "auto"

    def check_fields(self) -> None:
        self.require_one_of("remat_policy", REMAT_POLICIES)
        self.require_one_of("attention_impl", ATTENTION_IMPLS)


@dataclasses.dataclass(frozen=True, kw_only=True)
class NormFields(ConfigBase):
    """Attributes:
      norm_eps: epsilon of the normalisation layers (Hugging Face ``layer_norm_eps``).
    """

    norm_eps: float = 1e-5

    def check_fields(self) -> None:
        if not self.norm_eps > 0:
            raise self.config_error(f"norm_eps must be > 0; got {self.norm_eps}.")


@dataclasses.dataclass(frozen=True, kw_only=True)
class TransformerFields(NormFields):
    """The widths of a Transformer stack (Hugging Face names in brackets).

    Attributes:
      num_layers [num_hidden_layers]: depth ``L``.
      d_model [hidden_size]: model width ``E``.
      num_heads [num_attention_heads]: query heads ``H``; ``d_model`` must be a
        multiple of it unless the config has a ``head_dim`` field that is set.
      mlp_dim [intermediate_size]: hidden width of the feed-forward block.
      activation [hidden_act]: ``gelu`` (exact), ``gelu_tanh``, ``quick_gelu``,
        ``relu``, ``silu``, ... (:data:`jaxmm.layers.mlp.ACTIVATIONS`).
      attention_dropout_rate [attention_probs_dropout_prob]: dropout on the
        attention weights.
      norm_eps: see :class:`NormFields`.
    """

    num_layers: int = 2
    d_model: int = 64
    num_heads: int = 4
    mlp_dim: int = 256
    activation: str = "gelu"
    attention_dropout_rate: float = 0.0

    def check_fields(self) -> None:
        self.require_at_least(1, "num_layers", "d_model", "num_heads", "mlp_dim")
        if getattr(self, "head_dim", None) is None and self.d_model % self.num_heads:
            hint = " or set head_dim" if hasattr(self, "head_dim") else ""
            raise self.config_error(
                f"d_model ({self.d_model}) is not divisible by num_heads ({self.num_heads}); "
                f"change one of them{hint}."
            )
        self.require_one_of("activation", ACTIVATIONS)
        self.require_rate("attention_dropout_rate")


@dataclasses.dataclass(frozen=True, kw_only=True)
class DropoutFields(ConfigBase):
    """Attributes:
      dropout_rate [hidden_dropout_prob]: dropout on embeddings, residual
        branches and MLPs (heads: before the classifier).
    """

    dropout_rate: float = 0.0

    def check_fields(self) -> None:
        self.require_rate("dropout_rate")


@dataclasses.dataclass(frozen=True, kw_only=True)
class LayerVariantFields(ConfigBase):
    """How each layer is built, where a family lets it vary (GPT/Llama, T5).

    Attributes:
      head_dim: per-head width (``None``: ``d_model // num_heads``; T5 ``d_kv``).
      gated_mlp: gated feed-forward (SwiGLU with silu, GeGLU with gelu).
      norm: ``layernorm`` or ``rmsnorm``.
      use_bias: biases in attention and MLP projections.
    """

    head_dim: int | None = None
    gated_mlp: bool = False
    norm: str = "layernorm"
    use_bias: bool = True

    def check_fields(self) -> None:
        self.require_one_of("norm", ("layernorm", "rmsnorm"))
        if self.head_dim is not None:
            self.require_at_least(1, "head_dim")


def shared_field_values(source: ConfigBase, *groups: type[ConfigBase]) -> dict[str, Any]:
    """``{name: value}`` of ``source`` for every field of ``groups`` it has.

    What a family config hands on to the config it derives (its
    :class:`~jaxmm.layers.TransformerConfig`, a ViT inside AST), so a field added
    to a group reaches the derived config without touching the family.
    """
    return {name: getattr(source, name) for name in _shared_names(type(source), groups)}


@functools.cache
def _shared_names(cls: type, groups: tuple[type, ...]) -> tuple[str, ...]:
    names = {f.name for group in groups for f in dataclasses.fields(group)}
    return tuple(f.name for f in dataclasses.fields(cls) if f.name in names)
