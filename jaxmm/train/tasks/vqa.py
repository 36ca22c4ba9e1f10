"""Visual question answering.

``mode="classify"`` (default): the model reads ``image``, ``input_ids`` and
``attention_mask`` (the question) and returns ``logits`` over an answer
vocabulary ``(B, num_answers)``. Targets are either ``label`` ``(B,)`` (softmax
cross-entropy) or VQA v2 soft scores ``answer_scores`` ``(B, num_answers)`` in
[0, 1] (sigmoid cross-entropy, as in the VQA literature); the metric
``vqa_score`` is the soft score of the predicted answer (= accuracy with hard
labels).

Batches with several questions per image (``input_ids`` ``(B, Q, T)``,
``label`` ``(B, Q)``, as evaluation pipelines give them) are flattened to
``B * Q`` image-question rows.

``mode="generate"``: an encoder-decoder answers in text; the batch carries
``decoder_input_ids`` / ``labels`` (as in :mod:`~jaxmm.train.tasks.seq2seq`).
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import optax

from jaxmm.config import ConfigBase, ConfigError
from jaxmm.train.tasks.base import LossOutput, example_weights, flatten_groups, register_task
from jaxmm.train.tasks.classification import classification_loss
from jaxmm.train.tasks.seq2seq import Seq2SeqTask


@dataclasses.dataclass(frozen=True)
class VQAOptions(ConfigBase):
    mode: str = "classify"
    label_smoothing: float = 0.0

    def validate(self) -> None:
        if self.mode not in ("classify", "generate"):
            raise ConfigError(f"task.mode={self.mode!r} is not one of classify, generate.")


@register_task
class VQATask(Seq2SeqTask):
    name = "vqa"
    Options = VQAOptions
    default_model = "vqa"
    layout = "vqa"
    encoder_inputs = ("image", "input_ids", "attention_mask")

    @property
    def model_inputs(self):  # type: ignore[override]
        if self.options.mode == "classify":
            return self.encoder_inputs
        return super().model_inputs

    def example_batch(self, batch_size=1, **dims):
        if self.options.mode == "classify":
            return super(Seq2SeqTask, self).example_batch(batch_size, **dims)
        return super().example_batch(batch_size, **dims)

    def prepare(self, batch, rng, train):
        # Evaluation pipelines may give several questions per image, (B, Q, T).
        return super().prepare(flatten_groups(batch), rng, train)

    def loss(self, variables, batch, *, train, rng, constants=None) -> LossOutput:
        if self.options.mode == "generate":
            return super().loss(variables, batch, train=train, rng=rng, constants=constants)
        out, extra = self.apply(variables, batch, train=train, rng=rng)
        logits = out.logits.astype(jnp.float32)
        if "answer_scores" not in batch:
            return classification_loss(logits, batch, self.options.label_smoothing).replace(
                extra=extra)
        w = example_weights(batch)
        scores = batch["answer_scores"].astype(jnp.float32)
        bce = optax.sigmoid_binary_cross_entropy(logits, scores).sum(-1)
        picked = jnp.take_along_axis(scores, jnp.argmax(logits, -1)[:, None], axis=-1)[:, 0]
        n = w.sum()
        return LossOutput(loss=(bce * w).sum(), weight=n, extra=extra,
                          metrics={"vqa_score": ((picked * w).sum(), n)})


__all__ = ["VQATask"]
