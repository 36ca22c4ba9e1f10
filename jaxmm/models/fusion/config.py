"""Configuration of a multimodal fusion encoder.

One config covers every fusion kind (the Scenic MBT view: *where* the
modalities meet is a hyper-parameter):

* ``early``: all modalities form one token sequence from the first layer
  (``fusion_layer = 0``).
* ``late``: each modality has its own layers for the whole depth; pooled
  per-modality features are combined at the end (``fusion_layer = num_layers``).
* ``hybrid``: ``fusion_layer`` separate layers per modality, then joint layers;
  with ``num_bottleneck_tokens > 0`` the joint layers exchange information only
  through shared bottleneck tokens (MBT) instead of full joint attention.
* ``cross_attention``: the ``cross_query`` modality's tokens attend to the other
  modalities' tokens in every layer (one-way, e.g. text over image as in
  ALBEF), or, with ``bidirectional=True``, every modality attends to all the
  others (co-attention, as in ViLBERT).
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

from jaxmm.config import ConfigBase, ConfigError
from jaxmm.layers.blocks import DTYPES, REMAT_POLICIES, TransformerConfig
from jaxmm.layers.mlp import ACTIVATIONS

__all__ = ["COMBINE_METHODS", "FUSION_KINDS", "KNOWN_MODALITIES", "FusionConfig"]

FUSION_KINDS = ("early", "late", "hybrid", "cross_attention")
COMBINE_METHODS = ("concat", "sum", "mean", "gate", "attention")
# Modalities with batch fields and built-in input embedders (see modality.py);
# the fusion encoder itself accepts any names.
KNOWN_MODALITIES = ("text", "image", "audio", "video")


@dataclasses.dataclass(frozen=True)
class FusionConfig(ConfigBase):
    """Hyper-parameters of :class:`jaxmm.models.fusion.FusionEncoder`.

    Attributes:
      kind: ``early``, ``late``, ``hybrid`` or ``cross_attention`` (module doc).
      modalities: names of the fused modalities, in token order.
      num_layers, d_model, num_heads, mlp_dim, activation, norm_eps,
        dropout_rate, attention_dropout_rate, scan_layers, remat_policy, dtype,
        param_dtype, attention_impl: as in :class:`jaxmm.layers.TransformerConfig`
        (every layer is pre-LN).
      fusion_layer: number of separate (per-modality) layers before fusion.
        Must be 0 for ``early`` and ``num_layers`` for ``late`` (``None`` picks
        those); ``hybrid`` needs ``0 <= fusion_layer <= num_layers``.
      num_bottleneck_tokens: MBT bottleneck tokens for the fused layers (0 = full
        joint attention).
      pool: per-modality pooled feature: ``cls`` (a learned token prepended to
        each modality) or ``mean`` (masked mean over the modality's tokens).
      combine: how per-modality pooled features become ``pooler_output``:
        ``concat`` (width ``M * d_model``), ``sum``, ``mean``, ``gate`` (learned
        softmax gates over modalities, per feature) or ``attention`` (attention
        pooling over modalities with a learned query). Absent modalities (all
        tokens padded) are left out of every method.
      attention_pattern: joint layers: ``bidirectional`` (padding mask only) or
        ``prefix_lm`` (the last modality is causal; the others form a
        bidirectional prefix it can see).
      cross_query: ``cross_attention``: the modality whose tokens query the
        others (one-way).
      bidirectional: ``cross_attention``: every modality queries the others.
      max_positions: if > 0, learned position embeddings (per modality, up to
        this many tokens) are added after projection. Leave 0 when the
        modality encoders already encode positions.
    """

    kind: str = "early"
    modalities: tuple[str, ...] = ("text", "image")
    num_layers: int = 2
    d_model: int = 64
    num_heads: int = 4
    mlp_dim: int = 256
    activation: str = "gelu"
    norm_eps: float = 1e-6
    dropout_rate: float = 0.0
    attention_dropout_rate: float = 0.0
    fusion_layer: int | None = None
    num_bottleneck_tokens: int = 0
    pool: str = "cls"
    combine: str = "mean"
    attention_pattern: str = "bidirectional"
    cross_query: str | None = None
    bidirectional: bool = False
    max_positions: int = 0
    scan_layers: bool = False
    remat_policy: str = "none"
    dtype: str = "float32"
    param_dtype: str = "float32"
    attention_impl: str = "auto"

    SIZES: ClassVar = {
        "tiny": dict(num_layers=2, d_model=64, num_heads=4, mlp_dim=256),
        "small": dict(num_layers=4, d_model=256, num_heads=4, mlp_dim=1024),
        "base": dict(num_layers=12, d_model=768, num_heads=12, mlp_dim=3072),
    }

    def validate(self) -> None:
        def bad(msg: str):
            raise ConfigError(f"FusionConfig: {msg}")

        if self.kind not in FUSION_KINDS:
            bad(f"kind={self.kind!r} is not one of {', '.join(FUSION_KINDS)}.")
        if not self.modalities:
            bad("modalities is empty; name at least one, e.g. ('text', 'image').")
        if len(set(self.modalities)) != len(self.modalities):
            bad(f"modalities has duplicates: {self.modalities}.")
        if self.num_layers < 1:
            bad(f"num_layers must be >= 1; got {self.num_layers}.")
        if self.d_model % self.num_heads:
            bad(f"d_model ({self.d_model}) is not divisible by num_heads ({self.num_heads}).")
        choices = {
            "pool": ("cls", "mean"),
            "combine": COMBINE_METHODS,
            "attention_pattern": ("bidirectional", "prefix_lm"),
            "remat_policy": tuple(REMAT_POLICIES),
            "dtype": tuple(DTYPES),
            "param_dtype": tuple(DTYPES),
            "attention_impl": ("auto", "plain", "xla", "cudnn"),
            "activation": tuple(ACTIVATIONS),
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                bad(f"{name}={getattr(self, name)!r} is not one of {', '.join(allowed)}.")
        fl = self.fusion_layer
        if self.kind == "early" and fl not in (None, 0):
            bad(f"kind='early' fuses at layer 0; got fusion_layer={fl}. Use kind='hybrid'.")
        if self.kind == "late" and fl not in (None, self.num_layers):
            bad(f"kind='late' means fusion_layer = num_layers ({self.num_layers}); got {fl}. "
                "Use kind='hybrid' for fusion in between.")
        if self.kind == "hybrid":
            if fl is None or not 0 <= fl <= self.num_layers:
                bad(f"kind='hybrid' needs 0 <= fusion_layer <= num_layers ({self.num_layers}); "
                    f"got {fl}.")
        if self.num_bottleneck_tokens < 0:
            bad(f"num_bottleneck_tokens must be >= 0; got {self.num_bottleneck_tokens}.")
        if self.num_bottleneck_tokens and self.attention_pattern != "bidirectional":
            bad("bottleneck fusion supports attention_pattern='bidirectional' only.")
        if self.kind == "cross_attention":
            if len(self.modalities) < 2:
                bad("kind='cross_attention' needs at least two modalities.")
            if not self.bidirectional and self.cross_query not in self.modalities:
                bad(f"kind='cross_attention' one-way needs cross_query set to one of "
                    f"{self.modalities} (got {self.cross_query!r}), or bidirectional=True.")
        elif self.cross_query is not None or self.bidirectional:
            bad("cross_query/bidirectional apply to kind='cross_attention' only.")
        if not 0.0 <= self.dropout_rate < 1.0 or not 0.0 <= self.attention_dropout_rate < 1.0:
            bad("dropout rates must be in [0, 1).")
        if self.max_positions < 0:
            bad(f"max_positions must be >= 0; got {self.max_positions}.")

    # -- derived ------------------------------------------------------------
    @property
    def resolved_fusion_layer(self) -> int:
        """Separate layers before fusion (``cross_attention``: all of them)."""
        if self.kind == "early":
            return 0
        if self.kind in ("late", "cross_attention"):
            return self.num_layers
        return int(self.fusion_layer)

    @property
    def streams(self) -> tuple[str, ...]:
        """Modalities whose tokens are updated by layers (and pooled)."""
        if self.kind == "cross_attention" and not self.bidirectional:
            return (self.cross_query,)
        return self.modalities

    def transformer_config(
        self, num_layers: int, *, final_norm: bool = True, cross_attention: bool = False
    ) -> TransformerConfig:
        """The pre-LN :class:`TransformerConfig` for one stage of the encoder."""
        return TransformerConfig(
            num_layers=max(num_layers, 1),
            d_model=self.d_model,
            num_heads=self.num_heads,
            mlp_dim=self.mlp_dim,
            activation=self.activation,
            norm_eps=self.norm_eps,
            norm_position="pre",
            final_norm=final_norm,
            dropout_rate=self.dropout_rate,
            attention_dropout_rate=self.attention_dropout_rate,
            cross_attention=cross_attention,
            scan_layers=self.scan_layers,
            remat_policy=self.remat_policy,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            attention_impl=self.attention_impl,
        )
