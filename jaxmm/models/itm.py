"""Image-text matching (ITM): does this caption describe this image?

:class:`ImageTextMatcher` is a binary head on a fusion encoder over ``image``
and ``input_ids`` (any fusion kind; cross-attention fusion with text querying
the image is the ALBEF/BLIP layout) returning ``logits`` ``(B, 2)`` (class 1 =
match) for :func:`jaxmm.losses.itm_loss`.

:func:`itm_pairs` builds the training pairs ALBEF-style: the ``B`` matching
pairs, plus for every image a hard negative caption and for every caption a
hard negative image, sampled from the contrastive similarity
(:func:`jaxmm.losses.sample_itm_negatives`), ``3B`` pairs in all.

:meth:`ImageTextMatcher.embed` gives the unimodal embeddings for image-text
contrastive learning; the ``itm`` training task (:mod:`jaxmm.train.tasks.itm`)
encodes each example once and fuses the ``3B`` pairings of the tokens
(:func:`pair_rows`).
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp

from jaxmm.config import ConfigBase, ConfigError
from jaxmm.layers.norms import l2_normalize
from jaxmm.losses import sample_itm_negatives
from jaxmm.models.classifier import classifier_head
from jaxmm.models.dual_encoder import masked_mean
from jaxmm.models.fusion import FusionConfig
from jaxmm.models.modality import ModalityEncoders, MultimodalEncoder
from jaxmm.models.outputs import SequenceClassifierOutput
from jaxmm.models.registry import register

Array = jax.Array

__all__ = ["ITMConfig", "ITMEmbeddings", "ImageTextMatcher", "itm_pairs", "pair_rows"]


@dataclasses.dataclass(frozen=True, kw_only=True)
class ITMConfig(ConfigBase):
    """``fusion`` over ``("image", "text")``, the modality ``encoders``, and the
    unimodal embeddings of :meth:`ImageTextMatcher.embed`: ``embed_dim`` wide, scored
    with the learnable log inverse temperature ``logit_scale`` (initial value
    ``logit_scale_init_value``, log(1/0.07) as in CLIP/ALBEF)."""

    fusion: FusionConfig = dataclasses.field(default_factory=lambda: FusionConfig(
        kind="cross_attention", modalities=("text", "image"), cross_query="text",
        max_positions=128, projection_init="lecun"))
    encoders: ModalityEncoders = dataclasses.field(default_factory=ModalityEncoders)
    embed_dim: int = 256
    logit_scale_init_value: float = 2.6592

    SIZES: ClassVar = {
        "tiny": dict(fusion=dict(kind="cross_attention", modalities=("text", "image"),
                                 cross_query="text", num_layers=2, d_model=64, num_heads=4,
                                 mlp_dim=128, max_positions=128, projection_init="lecun"),
                     embed_dim=64),
    }

    def validate(self) -> None:
        if set(self.fusion.modalities) != {"image", "text"}:
            raise ConfigError(f"ITMConfig: fusion.modalities must be ('image', 'text') in some "
                              f"order; got {self.fusion.modalities}.")
        self.require_at_least(1, "embed_dim")


@flax.struct.dataclass
class ITMEmbeddings:
    """:meth:`ImageTextMatcher.embed`'s output: L2-normalised ``image_embeds`` and
    ``text_embeds`` ``(B, embed_dim)`` (float32) and the scalar ``logit_scale``."""

    image_embeds: Array
    text_embeds: Array
    logit_scale: Array


Tokens = tuple[dict[str, Array], dict[str, Array]]


@register("itm", ITMConfig)
class ImageTextMatcher(nn.Module):
    """``__call__(image, input_ids, attention_mask=None)`` ->
    ``SequenceClassifierOutput`` with ``logits`` ``(B, 2)``.

    The steps are methods too, so a training step encodes each modality once and
    fuses many image-text pairings of the result (ALBEF): :meth:`encode` (the
    modality encoders' tokens), :meth:`embed_tokens` / :meth:`embed` (unimodal
    embeddings for image-text contrastive learning: masked mean of each modality's
    tokens, a linear projection, L2 normalisation) and :meth:`match` (fusion +
    the 2-way head on given tokens). ``model.init`` creates every parameter.
    """

    config: ITMConfig

    def setup(self):
        cfg = self.config
        self.encoder = MultimodalEncoder(cfg.fusion, cfg.encoders)
        self.itm_head = classifier_head(2, None)
        self.image_projection = classifier_head(cfg.embed_dim, None)
        self.text_projection = classifier_head(cfg.embed_dim, None)
        self.logit_scale = self.param(
            "logit_scale",
            nn.with_logical_partitioning(nn.initializers.constant(cfg.logit_scale_init_value),
                                         ()),
            (), jnp.float32)

    def __call__(self, image: Array, input_ids: Array, attention_mask: Array | None = None, *,
                 deterministic: bool = True, output_attentions: bool = False
                 ) -> SequenceClassifierOutput:
        tokens = self.encode(image, input_ids, attention_mask, deterministic=deterministic)
        if self.is_initializing():  # create the projections too
            self.embed_tokens(tokens)
        return self.match(tokens, deterministic=deterministic,
                          output_attentions=output_attentions)

    def encode(self, image: Array, input_ids: Array, attention_mask: Array | None = None, *,
               deterministic: bool = True) -> Tokens:
        """``({"image": (B, T_i, E_i), "text": ...}, {modality: (B, T_m) mask})``."""
        return self.encoder.encode(
            dict(image=image, input_ids=input_ids, attention_mask=attention_mask),
            deterministic=deterministic)

    def embed_tokens(self, tokens: Tokens) -> ITMEmbeddings:
        """Unimodal embeddings of :meth:`encode`'s tokens."""
        seqs, masks = tokens
        pooled = {m: masked_mean(seqs[m], masks[m]) for m in ("image", "text")}
        return ITMEmbeddings(image_embeds=l2_normalize(self.image_projection(pooled["image"])),
                             text_embeds=l2_normalize(self.text_projection(pooled["text"])),
                             logit_scale=self.logit_scale)

    def embed(self, image: Array, input_ids: Array, attention_mask: Array | None = None, *,
              deterministic: bool = True) -> ITMEmbeddings:
        """L2-normalised image and text embeddings ``(B, embed_dim)`` (no fusion)."""
        return self.embed_tokens(self.encode(image, input_ids, attention_mask,
                                             deterministic=deterministic))

    def match(self, tokens: Tokens, *, deterministic: bool = True,
              output_attentions: bool = False) -> SequenceClassifierOutput:
        """ITM logits ``(B, 2)`` (class 1 = match) of row-aligned image and text tokens."""
        fused = self.encoder.fuse(*tokens, deterministic=deterministic,
                                  output_attentions=output_attentions)
        logits = self.itm_head(fused.pooler_output)
        return SequenceClassifierOutput(logits=logits.astype(jnp.float32),
                                        attentions=fused.attentions)


def pair_rows(image_side: Any, text_side: Any, text_for_image: Array, image_for_text: Array
              ) -> tuple[Any, Any]:
    """Row-aligned image and text sides (pytrees of ``(B, ...)`` arrays) of ``3B`` pairs:
    the ``B`` matching pairs, ``(image i, text text_for_image[i])`` and
    ``(image image_for_text[j], text j)``."""
    ar = jnp.arange(text_for_image.shape[0])
    take = lambda side, i, j: jax.tree.map(  # noqa: E731
        lambda a: jnp.concatenate([a, a[i], a[j]], 0), side)
    return take(image_side, ar, image_for_text), take(text_side, text_for_image, ar)


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
    image, (input_ids, attention_mask) = pair_rows(image, (input_ids, attention_mask),
                                                   text_for_image, image_for_text)
    return {
        "image": image, "input_ids": input_ids, "attention_mask": attention_mask,
        "is_match": jnp.concatenate([jnp.ones(b, jnp.int32), jnp.zeros(2 * b, jnp.int32)]),
    }
