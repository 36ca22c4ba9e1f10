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

from jaxmm.layers import TransformerConfig
from jaxmm.layers.config_fields import (
    STACK_SIZES,
    ComputeFields,
    DropoutFields,
    TransformerFields,
)

__all__ = ["COMBINE_METHODS", "FUSION_KINDS", "KNOWN_MODALITIES", "FusionConfig"]

FUSION_KINDS = ("early", "late", "hybrid", "cross_attention")
COMBINE_METHODS = ("concat", "sum", "mean", "gate", "attention")
# Modalities with batch fields and built-in input embedders (see modality.py);
# the fusion encoder itself accepts any names.
KNOWN_MODALITIES = ("text", "image", "audio", "video")


@dataclasses.dataclass(frozen=True, kw_only=True)
class FusionConfig(ComputeFields, DropoutFields, TransformerFields):
    """Hyper-parameters of :class:`jaxmm.models.fusion.FusionEncoder`.

    Attributes:
      kind: ``early``, ``late``, ``hybrid`` or ``cross_attention`` (module doc).
      modalities: names of the fused modalities, in token order.
      num_layers, d_model, num_heads, mlp_dim, activation, norm_eps,
        dropout_rate, attention_dropout_rate, scan_layers, remat_policy, dtype,
        param_dtype, attention_impl: the shared fields of
        :mod:`jaxmm.layers.config_fields` (every layer is pre-LN).
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
      projection_init: initialiser of the per-modality input projections:
        ``normal`` (N(0, 0.02), as BERT) or ``lecun`` (variance preserving, so
        unit-scale encoder outputs stay unit scale; at small widths N(0, 0.02)
        shrinks them several-fold and cross-attention to them starts out flat).
    """

    DEFAULTS: ClassVar = dict(norm_eps=1e-6)

    kind: str = "early"
    modalities: tuple[str, ...] = ("text", "image")
    fusion_layer: int | None = None
    num_bottleneck_tokens: int = 0
    pool: str = "cls"
    combine: str = "mean"
    attention_pattern: str = "bidirectional"
    cross_query: str | None = None
    bidirectional: bool = False
    max_positions: int = 0
    projection_init: str = "normal"

    SIZES: ClassVar = STACK_SIZES

    def validate(self) -> None:
        bad = self.config_error
        self.require_one_of("kind", FUSION_KINDS)
        if not self.modalities:
            raise bad("modalities is empty; name at least one, e.g. ('text', 'image').")
        if len(set(self.modalities)) != len(self.modalities):
            raise bad(f"modalities has duplicates: {self.modalities}.")
        self.require_one_of("pool", ("cls", "mean"))
        self.require_one_of("projection_init", ("normal", "lecun"))
        self.require_one_of("combine", COMBINE_METHODS)
        self.require_one_of("attention_pattern", ("bidirectional", "prefix_lm"))
        fl = self.fusion_layer
        if self.kind == "early" and fl not in (None, 0):
            raise bad(f"kind='early' fuses at layer 0; got fusion_layer={fl}. Use kind='hybrid'.")
        if self.kind == "late" and fl not in (None, self.num_layers):
            raise bad(f"kind='late' means fusion_layer = num_layers ({self.num_layers}); got "
                      f"{fl}. Use kind='hybrid' for fusion in between.")
        if self.kind == "hybrid" and (fl is None or not 0 <= fl <= self.num_layers):
            raise bad(f"kind='hybrid' needs 0 <= fusion_layer <= num_layers ({self.num_layers}); "
                      f"got {fl}.")
        self.require_at_least(0, "num_bottleneck_tokens", "max_positions")
        if self.num_bottleneck_tokens and self.attention_pattern != "bidirectional":
            raise bad("bottleneck fusion supports attention_pattern='bidirectional' only.")
        if self.kind == "cross_attention":
            if len(self.modalities) < 2:
                raise bad("kind='cross_attention' needs at least two modalities.")
            if not self.bidirectional and self.cross_query not in self.modalities:
                raise bad(f"kind='cross_attention' one-way needs cross_query set to one of "
                          f"{self.modalities} (got {self.cross_query!r}), or bidirectional=True.")
        elif self.cross_query is not None or self.bidirectional:
            raise bad("cross_query/bidirectional apply to kind='cross_attention' only.")

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
        return TransformerConfig.from_fields(
            self, num_layers=max(num_layers, 1), norm_position="pre", final_norm=final_norm,
            cross_attention=cross_attention,
        )
