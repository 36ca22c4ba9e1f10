"""Image-text matching with in-batch hard negatives, plus image-text contrastive (ALBEF).

Batch: ``image`` and ``input_ids`` / ``attention_mask`` of one matching caption per
image (retrieval evaluation batches with all captions, ``(B, C, T)``, use the first).
The model is :class:`jaxmm.models.itm.ImageTextMatcher` (``model.name='itm'``): each
modality is encoded once, and the fusion encoder scores ``3B`` pairings of the tokens.

Loss over a batch of ``B`` examples::

    ITM: 2-way cross-entropy, mean over the 3B pairs: the B matches, for every image a
         negative caption, for every caption a negative image
  + itc_weight * symmetric InfoNCE of the unimodal embeddings (image-text contrastive)

Negatives (``negatives``): ``hard`` samples caption ``j`` for image ``i`` with
probability ``softmax_j(exp(logit_scale) * cos(image_i, text_j))`` and images for
captions likewise, with the contrastive similarity held constant (ALBEF); ``uniform``
draws them uniformly. A row whose caption is identical to the positive's (same
``input_ids``) is never a negative: it describes the image too. When every other row of
the batch has the same caption there is no negative for that row; its two negative
pairs are dropped (weight 0) rather than mislabelled, and the loss averages over the
pairs that remain.

The ITC temperature is the model's learnable ``logit_scale`` (as CLIP and ALBEF): the
best temperature depends on the embedding width, the data and the point in training,
and the same scale sharpens the hard-negative sampling as the embeddings improve.

Evaluation draws uniform negatives from a fixed key, so the numbers are comparable
across steps and runs. Metrics: ``itm_pos_accuracy`` and ``itm_neg_accuracy`` (matches
called matches, non-matches called non-matches), ``balanced_accuracy`` (their mean;
chance 0.5), ``itm_ranking_accuracy`` (threshold-free: how often a match scores
above the negative pair of its image or caption; chance 0.5), ``itm_loss``,
``itc_loss`` and ``i2t_accuracy`` (the in-batch caption most similar to an image is
its own, or an identical one). A padded short evaluation
batch is skipped (the loss couples all rows).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from jaxmm import losses
from jaxmm.config import ConfigBase, ConfigError
from jaxmm.models.itm import pair_rows
from jaxmm.train.tasks.base import LossOutput, register_task, softmax_xent
from jaxmm.train.tasks.contrastive import ContrastiveTask

Array = jax.Array

__all__ = ["ITMOptions", "ITMTask", "sample_negatives"]

# Evaluation negatives come from this key, the same at every step.
EVAL_NEGATIVES_SEED = 0
# The contrastive scale is clipped here, as in jaxmm.losses.infonce_loss.
MAX_SCALE = 100.0


@dataclasses.dataclass(frozen=True)
class ITMOptions(ConfigBase):
    """itc_weight: weight of the contrastive loss (0 = ITM alone); negatives: ``hard``
    (sampled by contrastive similarity) or ``uniform``, for training."""

    itc_weight: float = 1.0
    negatives: str = "hard"

    def validate(self) -> None:
        self.require_one_of("negatives", ("hard", "uniform"))
        if self.itc_weight < 0:
            raise ConfigError(f"task.itc_weight must be >= 0; got {self.itc_weight}.")


def same_caption(input_ids: Array) -> Array:
    """``(B, B)`` bool: rows ``i`` and ``j`` have identical token ids."""
    return jnp.all(input_ids[:, None, :] == input_ids[None, :, :], axis=-1)


def sample_negatives(rng: Array, similarity: Array, input_ids: Array
                     ) -> tuple[Array, Array, Array]:
    """A negative caption for every image and a negative image for every caption.

    ``similarity`` ``(B, B)`` (image ``i``, caption ``j``) logits of the sampling
    distribution (zeros: uniform). Rows with a caption identical to row ``i``'s (``i``
    itself included) are never drawn. Returns ``(text_for_image, image_for_text,
    has_negative)``: ``(B,)`` indices, and whether row ``i`` has any other caption in
    the batch; where it has none, both its indices are ``i`` itself.
    """
    same = same_caption(input_ids)
    has_negative = ~jnp.all(same, axis=1)
    eye = jnp.eye(same.shape[0], dtype=bool)
    # A row without candidates draws itself (and is weighted out by the caller).
    allowed = jnp.where(has_negative[:, None], ~same, eye)
    logits = jnp.where(allowed, similarity.astype(jnp.float32), -jnp.inf)
    text_for_image, image_for_text = losses.sample_itm_negatives(
        rng, logits, exclude_diagonal=False)
    return text_for_image, image_for_text, has_negative


def _contrastive_scale(logit_scale: Array) -> Array:
    return jnp.minimum(jnp.exp(jnp.asarray(logit_scale, jnp.float32)), MAX_SCALE)


def _forward(model, image, input_ids, attention_mask=None, *, deterministic, negatives_rng,
             hard):
    """Runs inside ``model.apply``: the unimodal embeddings and the ITM logits of the
    ``3B`` pairs (encoding each example once)."""
    seqs, masks = model.encode(image, input_ids, attention_mask, deterministic=deterministic)
    emb = model.embed_tokens((seqs, masks))
    similarity = jnp.zeros((image.shape[0],) * 2, jnp.float32)
    if hard:
        similarity = jax.lax.stop_gradient(
            _contrastive_scale(emb.logit_scale) * emb.image_embeds @ emb.text_embeds.T)
    text_for_image, image_for_text, has_negative = sample_negatives(negatives_rng, similarity,
                                                                     input_ids)
    image_side, text_side = pair_rows((seqs["image"], masks["image"]),
                                      (seqs["text"], masks["text"]),
                                      text_for_image, image_for_text)
    pairs = ({"image": image_side[0], "text": text_side[0]},
             {"image": image_side[1], "text": text_side[1]})
    logits = model.match(pairs, deterministic=deterministic).logits
    return emb, logits, has_negative


@register_task
class ITMTask(ContrastiveTask):
    """The contrastive task's batches (image-caption pairs, first caption of a group),
    with the matching loss on top."""

    name = "itm"
    Options = ITMOptions
    default_model = "itm"

    def prepare(self, batch, rng, train):
        missing = [k for k in ("image", "input_ids") if k not in batch]
        if missing:
            raise ConfigError(
                f"task 'itm' needs {' and '.join(missing)} in the batch (image-caption pairs); "
                f"it has {sorted(batch)}. Use an image-caption dataset (data=scenes, "
                "coco_captions, flickr30k, image_captions/NAME) with task='retrieval'.")
        return super().prepare(batch, rng, train)

    def loss(self, variables, batch, *, train, rng, constants=None) -> LossOutput:
        dropout_rng, negatives_rng = jax.random.split(rng)
        if not train:
            negatives_rng = jax.random.key(EVAL_NEGATIVES_SEED)
        (emb, logits, has_negative), extra = self.apply(
            variables, batch, train=train, rng=dropout_rng, method=_forward,
            negatives_rng=negatives_rng,
            hard=train and self.options.negatives == "hard")
        b = has_negative.shape[0]
        n = jnp.asarray(b, jnp.float32)
        neg_weight = jnp.tile(has_negative.astype(jnp.float32), 2)
        nll_pos, hit_pos, n_pos = softmax_xent(logits[:b], jnp.ones(b, jnp.int32))
        nll_neg, hit_neg, n_neg = softmax_xent(logits[b:], jnp.zeros(2 * b, jnp.int32),
                                               weights=neg_weight)
        itm = (nll_pos + nll_neg) / (n_pos + n_neg)
        # Threshold-free: each match outscores the negative pair of its image / caption.
        margin = logits[:, 1] - logits[:, 0]
        ranked = ((jnp.tile(margin[:b], 2) > margin[b:]) * neg_weight).sum()
        itc = losses.infonce_loss(emb.image_embeds, emb.text_embeds, emb.logit_scale,
                                  max_scale=MAX_SCALE)
        cos = emb.image_embeds @ emb.text_embeds.T
        i2t = same_caption(batch["input_ids"])[jnp.arange(b), jnp.argmax(cos, axis=1)]
        return LossOutput(
            loss=n * (itm + self.options.itc_weight * itc), weight=n, extra=extra,
            metrics={"itm_loss": (nll_pos + nll_neg, n_pos + n_neg), "itc_loss": (itc * n, n),
                     "itm_pos_accuracy": (hit_pos, n_pos), "itm_neg_accuracy": (hit_neg, n_neg),
                     "itm_ranking_accuracy": (ranked, n_neg),
                     "i2t_accuracy": (i2t.sum().astype(jnp.float32), n)})

    def summarize(self, metrics):
        out = dict(metrics)
        if "itm_pos_accuracy" in out and "itm_neg_accuracy" in out:
            out["balanced_accuracy"] = 0.5 * (out["itm_pos_accuracy"] + out["itm_neg_accuracy"])
        return out
