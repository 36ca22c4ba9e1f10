"""Multimodal fusion: early, late, hybrid/bottleneck (MBT) and cross-attention.

``FusionEncoder(FusionConfig(kind=..., modalities=...))`` fuses per-modality
token sequences; ``ModalityCombiner`` combines per-modality vectors (pooled
features or logits) by concat, sum, mean, gating or attention pooling.
"""

from jaxmm.models.fusion.combine import ModalityCombiner, masked_softmax
from jaxmm.models.fusion.config import (
    COMBINE_METHODS,
    FUSION_KINDS,
    KNOWN_MODALITIES,
    FusionConfig,
)
from jaxmm.models.fusion.encoder import FusionEncoder, FusionOutput, check_modalities
from jaxmm.models.registry import register

register("fusion", FusionConfig, "Multimodal fusion encoder (early/late/hybrid/cross-attention)")(
    FusionEncoder
)

__all__ = [
    "COMBINE_METHODS",
    "FUSION_KINDS",
    "KNOWN_MODALITIES",
    "FusionConfig",
    "FusionEncoder",
    "FusionOutput",
    "ModalityCombiner",
    "check_modalities",
    "masked_softmax",
]
