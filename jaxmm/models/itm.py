"""Image-text matching (ITM): does this caption describe this image?

:class:`ImageTextMatcher` is a binary head on a fusion encoder over ``image``
and ``input_ids`` (any fusion kind; cross-attention fusion with text querying
the image is the ALBEF/BLIP layout) returning ``logits`` ``(B, 2)`` (class 1 =
match) for :func:`jaxmm.losses.itm_loss`.

:func:`itm_pairs` builds the training pairs ALBEF-style: the ``B`` matching
pairs, plus for every image a hard negative caption and for every caption a
hard negative image, sampled from the contrastive similarity
(:func:`jaxmm.losses.sample_itm_negatives`), ``3B`` pairs in all.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxmm.config import ConfigBase, ConfigError
from jaxmm.losses import sample_itm_negatives
from jaxmm.models.classifier import classifier_head
from jaxmm.models.fusion import FusionConfig
from jaxmm.models.modality import ModalityEncoders, MultimodalEncoder
from jaxmm.models.outputs import SequenceClassifierOutput
from jaxmm.models.registry import register

Array = jax.Array

__all__ = ["ITMConfig", "ImageTextMatcher", "itm_pairs"]


@dataclasses.dataclass(frozen=True, kw_only=True)
class ITMConfig(ConfigBase):
    """``fusion`` over ``("image", "text")`` and the modality ``encoders``."""

    fusion: FusionConfig = dataclasses.field(default_factory=lambda: FusionConfig(
        kind="cross_attention", modalities=("text", "image"), cross_query="text",
        max_positions=128))
    encoders: ModalityEncoders = dataclasses.field(default_factory=ModalityEncoders)

    SIZES: ClassVar = {
        "tiny": dict(fusion=dict(kind="cross_attention", modalities=("text", "image"),
                                 cross_query="text", num_layers=2, d_model=64, num_heads=4,
                                 mlp_dim=128, max_positions=128)),
    }

    def validate(self) -> None:
        if set(self.fusion.modalities) != {"image", "text"}:
            raise ConfigError(f"ITMConfig: fusion.modalities must be ('image', 'text') in some "
                              f"order; got {self.fusion.modalities}.")


@register("itm", ITMConfig)
class ImageTextMatcher(nn.Module):
    """``__call__(image, input_ids, attention_mask=None)`` ->
    ``SequenceClassifierOutput`` with ``logits`` ``(B, 2)``."""

    config: ITMConfig

    @nn.compact
    def __call__(self, image: Array, input_ids: Array, attention_mask: Array | None = None, *,
                 deterministic: bool = True, output_attentions: bool = False
                 ) -> SequenceClassifierOutput:
        cfg = self.config
        fused = MultimodalEncoder(cfg.fusion, cfg.encoders, name="encoder")(
            dict(image=image, input_ids=input_ids, attention_mask=attention_mask),
            deterministic=deterministic, output_attentions=output_attentions)
        logits = classifier_head(2, "itm_head")(fused.pooler_output)
        return SequenceClassifierOutput(logits=logits.astype(jnp.float32),
                                        attentions=fused.attentions)


def itm_pairs(rng: Array, image: Array, input_ids: Array, attention_mask: Array,
              similarity: Array | None = None) -> dict[str, Any]:
    """``3B`` ITM pairs: positives, (image, hard negative text), (hard negative image, text).

    ``similarity`` ``(B, B)`` image-to-text scores (e.g. a dual encoder's
    ``logits_per_image``) steer the negatives toward confusable ones; without
    it they are uniform over the other examples. Returns ``image``,
    ``input_ids``, ``attention_mask`` and ``is_match`` ``(3B,)`` (1, 0, 0).
    Rows ``j`` with the same caption as ``i`` should be excluded by the caller
    (set their similarity to ``-inf``) when captions repeat in a batch.
    """
    b = image.shape[0]
    if similarity is None:
        similarity = jnp.zeros((b, b), jnp.float32)
    text_for_image, image_for_text = sample_itm_negatives(rng, similarity)
    cat = lambda a, i, j: jnp.concatenate([a, a[i], a[j]], 0)  # noqa: E731
    ar = jnp.arange(b)
    return {
        "image": cat(image, ar, image_for_text),
        "input_ids": cat(input_ids, text_for_image, ar),
        "attention_mask": cat(attention_mask, text_for_image, ar),
        "is_match": jnp.concatenate([jnp.ones(b, jnp.int32), jnp.zeros(2 * b, jnp.int32)]),
    }
