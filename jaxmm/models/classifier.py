"""Multimodal classifier: any subset of text/image/audio/video, any fusion kind.

``MultimodalClassifier`` encodes each configured modality (stems or registered
encoders, :mod:`jaxmm.models.modality`), fuses them
(:class:`~jaxmm.models.fusion.FusionEncoder`) and classifies:

* ``head="pooled"``: a linear classifier on the fused ``pooler_output``
  (per-modality pooled features combined by ``fusion.combine``);
* ``head="modality_logits"``: late fusion of decisions: one linear classifier
  per modality (its own weights), and the per-modality logits combined by ``fusion.combine``
  (``concat`` is followed by a linear layer back to ``num_labels``).

Inputs follow the batch contract (``input_ids``/``attention_mask``, ``image``,
``input_features`` or ``audio``, ``video``); returns
:class:`~jaxmm.models.outputs.SequenceClassifierOutput` with ``logits``
``(B, num_labels)`` (``extra`` holds the per-modality logits for
``modality_logits``).
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxmm.layers.config_fields import DropoutFields
from jaxmm.models.fusion import FusionConfig, ModalityCombiner
from jaxmm.models.modality import ModalityEncoders, MultimodalEncoder
from jaxmm.models.outputs import SequenceClassifierOutput
from jaxmm.models.registry import register

Array = jax.Array

__all__ = ["MultimodalClassifier", "MultimodalClassifierConfig", "classifier_head"]

HEADS = ("pooled", "modality_logits")


def classifier_head(features: int, name: str, zero_init: bool = False) -> nn.Dense:
    """Linear classifier with logical axis names (``embed -> None``)."""
    init = nn.initializers.zeros if zero_init else nn.initializers.normal(0.02)
    return nn.Dense(features, kernel_init=nn.with_logical_partitioning(init, ("embed", None)),
                    bias_init=nn.with_logical_partitioning(nn.initializers.zeros, (None,)),
                    name=name)


@dataclasses.dataclass(frozen=True, kw_only=True)
class MultimodalClassifierConfig(DropoutFields):
    """Attributes:
      fusion: the fusion encoder (its ``modalities`` are the inputs used).
      encoders: per-modality encoders (:class:`ModalityEncoders`).
      num_labels: number of classes.
      head: ``pooled`` or ``modality_logits`` (module doc).
      dropout_rate: dropout on the pooled features before the classifier (the
        shared field of :class:`~jaxmm.layers.config_fields.DropoutFields`).
    """

    fusion: FusionConfig = dataclasses.field(default_factory=lambda: FusionConfig(
        kind="early", modalities=("text", "image"), max_positions=128))
    encoders: ModalityEncoders = dataclasses.field(default_factory=ModalityEncoders)
    num_labels: int = 2
    head: str = "pooled"

    SIZES: ClassVar = {
        "tiny": dict(fusion=dict(kind="early", modalities=("text", "image"), num_layers=2,
                                 d_model=64, num_heads=4, mlp_dim=128, max_positions=128)),
        "small": dict(fusion=dict(kind="early", modalities=("text", "image"), num_layers=4,
                                  d_model=256, num_heads=4, mlp_dim=1024, max_positions=512)),
    }

    def validate(self) -> None:
        self.require_at_least(1, "num_labels")
        self.require_one_of("head", HEADS)

    def input_specs(self) -> dict | None:
        """Each fused modality's inputs (:mod:`jaxmm.models.specs`)."""
        return self.encoders.input_specs(self.fusion.modalities)

    @property
    def modalities(self) -> tuple[str, ...]:
        return self.fusion.modalities


@register("multimodal_classifier", MultimodalClassifierConfig)
class MultimodalClassifier(nn.Module):
    """Classifier over fused modalities; see the module docstring.

    ``__call__(input_ids=None, attention_mask=None, image=None,
    input_features=None, audio=None, video=None, token_type_ids=None)``; every
    modality in ``config.fusion.modalities`` must be given.
    """

    config: MultimodalClassifierConfig

    @nn.compact
    def __call__(
        self, input_ids: Array | None = None, attention_mask: Array | None = None,
        image: Array | None = None, input_features: Array | None = None,
        audio: Array | None = None, video: Array | None = None,
        token_type_ids: Array | None = None, *, deterministic: bool = True,
        output_attentions: bool = False,
    ) -> SequenceClassifierOutput:
        cfg = self.config
        batch = dict(input_ids=input_ids, attention_mask=attention_mask, image=image,
                     input_features=input_features, audio=audio, video=video,
                     token_type_ids=token_type_ids)
        fused = MultimodalEncoder(cfg.fusion, cfg.encoders, name="encoder")(
            batch, deterministic=deterministic, output_attentions=output_attentions)
        drop = nn.Dropout(cfg.dropout_rate)
        extra: Any = None
        if cfg.head == "pooled":
            pooled = drop(fused.pooler_output, deterministic=deterministic)
            logits = classifier_head(cfg.num_labels, "classifier")(pooled)
        else:
            per = drop(fused.modality_pooled, deterministic=deterministic)  # (B, M, D)
            per_logits = jnp.stack([
                classifier_head(cfg.num_labels, f"{m}_classifier")(per[:, i])
                for i, m in enumerate(cfg.fusion.streams)], axis=1)  # (B, M, num_labels)
            logits = ModalityCombiner(cfg.fusion.combine, name="combine_logits")(
                per_logits, fused.modality_present)
            if cfg.fusion.combine == "concat":
                logits = classifier_head(cfg.num_labels, "classifier")(logits)
            extra = {"modality_logits": per_logits}
        return SequenceClassifierOutput(
            logits=logits.astype("float32"),
            attentions=fused.attentions if output_attentions else None, extra=extra)
