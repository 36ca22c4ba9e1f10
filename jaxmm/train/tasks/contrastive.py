"""Contrastive image-text pre-training (CLIP with InfoNCE, SigLIP with the sigmoid loss).

Batch: ``image`` and ``input_ids`` / ``attention_mask`` of matching captions.
The model returns ``image_embeds`` and ``text_embeds`` ``(B, D)``; the learnable
log inverse temperature is the output's ``logit_scale`` or the parameter
``logit_scale`` (and ``logit_bias`` for SigLIP). Negatives are the other
examples of the *global* batch (the arrays are global under ``jax.jit``).

Evaluation batches with several captions per image (``(B, C, T)``) are
scored on their first caption (full retrieval recall: :mod:`jaxmm.evaluate`).

Metrics: ``loss``, ``i2t_accuracy`` / ``t2i_accuracy`` (in-batch top-1
retrieval). A padded short eval batch is skipped (the loss couples all rows).
Retrieval eval batches with several captions per image (``input_ids``
``(B, C, T)``, the ``jaxmm.data`` retrieval layout) are scored on their first
caption; full multi-caption recall@K is :func:`jaxmm.evaluate.retrieval_recall`.
"""

from __future__ import annotations

import dataclasses
import math

import jax.numpy as jnp

from jaxmm import losses
from jaxmm.config import ConfigBase, ConfigError
from jaxmm.train.tasks.base import LossOutput, Task, first_of_groups, register_task


@dataclasses.dataclass(frozen=True)
class ContrastiveOptions(ConfigBase):
    """loss: ``infonce`` (CLIP) or ``sigmoid`` (SigLIP)."""

    loss: str = "infonce"

    def validate(self) -> None:
        if self.loss not in ("infonce", "sigmoid"):
            raise ConfigError(f"task.loss={self.loss!r} is not one of infonce, sigmoid.")


def _scalar(out, params, name, default):
    value = getattr(out, name, None)
    if value is None:
        value = params.get(name, default) if isinstance(params, dict) else default
    return jnp.asarray(value, jnp.float32).reshape(())


@register_task
class ContrastiveTask(Task):
    name = "contrastive"
    Options = ContrastiveOptions
    default_model = "clip"
    model_inputs = ("image", "input_ids", "attention_mask")
    layout = "image_text"
    supports_padding = False

    def prepare(self, batch, rng, train):
        # Retrieval eval pipelines give all captions, (B, C, T): score the first.
        return super().prepare(first_of_groups(batch), rng, train)

    def loss(self, variables, batch, *, train, rng, constants=None) -> LossOutput:
        out, extra = self.apply(variables, batch, train=train, rng=rng)
        img, txt = out.image_embeds, out.text_embeds
        params = variables["params"]
        scale = _scalar(out, params, "logit_scale", math.log(1 / 0.07))
        if self.options.loss == "infonce":
            loss = losses.infonce_loss(img, txt, scale)
        else:
            loss = losses.sigmoid_contrastive_loss(img, txt, scale,
                                                   _scalar(out, params, "logit_bias", -10.0))
        n = jnp.asarray(img.shape[0], jnp.float32)
        sim = img.astype(jnp.float32) @ txt.astype(jnp.float32).T
        target = jnp.arange(img.shape[0])
        i2t = (jnp.argmax(sim, axis=1) == target).sum().astype(jnp.float32)
        t2i = (jnp.argmax(sim, axis=0) == target).sum().astype(jnp.float32)
        return LossOutput(loss=loss * n, weight=n, extra=extra,
                          metrics={"i2t_accuracy": (i2t, n), "t2i_accuracy": (t2i, n)})
