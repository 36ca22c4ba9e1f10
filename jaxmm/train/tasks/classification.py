"""Classification of images, text, audio or video into ``num_labels`` classes.

Batch: the model's inputs (``image`` / ``input_ids`` + ``attention_mask`` /
``input_features`` / ``audio`` / ``video``) and ``label`` ``(B,)``. The model
returns ``logits`` ``(B, num_labels)`` (``SequenceClassifierOutput``).
Metrics: ``loss``, ``accuracy`` and, with 5+ classes, ``top5_accuracy``. A head
with one output (``num_labels=1``) is a regression on a float ``label``: the loss
is the mean squared error (as Hugging Face does), reported also as ``mse``.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from jaxmm.config import ConfigBase, ConfigError
from jaxmm.train.tasks.base import (
    LossOutput,
    Task,
    example_weights,
    register_task,
    softmax_xent,
)

# modality -> (batch keys passed to the model, synthetic layout)
_MODALITIES = {
    "image": (("image",), "image"),
    "text": (("input_ids", "attention_mask", "token_type_ids"), "text"),
    "audio": (("input_features", "audio"), "audio_text"),
    "video": (("video",), "image"),
    # several at once (jaxmm.models.classifier.MultimodalClassifier): every field present
    "multimodal": (("image", "input_ids", "attention_mask", "token_type_ids", "input_features",
                    "audio", "video"), "image_text"),
}


@dataclasses.dataclass(frozen=True)
class ClassificationOptions(ConfigBase):
    """label_smoothing: as in the LM task. modality: image | text | audio | video |
    multimodal (which batch fields the model reads, and the synthetic-data layout)."""

    label_smoothing: float = 0.0
    modality: str = "image"

    def validate(self) -> None:
        if self.modality not in _MODALITIES:
            raise ConfigError(
                f"task.modality={self.modality!r} is not one of {', '.join(_MODALITIES)}."
            )
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ConfigError(
                f"task.label_smoothing must be in [0, 1); got {self.label_smoothing}.")


def regression_loss(values, batch) -> LossOutput:
    """Mean squared error of a one-output head against float ``batch['label']`` (the
    Hugging Face convention for ``num_labels == 1``, e.g. GLUE's stsb)."""
    w = example_weights(batch)
    err = (values.astype(jnp.float32) - batch["label"].astype(jnp.float32)) ** 2
    n = w.sum()
    return LossOutput(loss=(err * w).sum(), weight=n, metrics={"mse": ((err * w).sum(), n)})


def classification_loss(logits, batch, label_smoothing: float = 0.0) -> LossOutput:
    """Summed cross-entropy + accuracy (+ top-5) over ``batch['label']``; with one output,
    the regression loss (:func:`regression_loss`)."""
    label = batch.get("label")
    if label is None or label.ndim != 1:
        per_token = batch.get("labels", label)
        if per_token is not None and per_token.ndim == 2:
            raise ConfigError(
                f"task 'classification' takes one label per example (B,), but the batch has "
                f"per-token labels {tuple(per_token.shape)}; use "
                "task.name='token_classification' (with bert_token_classifier) for NER/tagging.")
        if label is None:
            raise ConfigError(f"task 'classification' needs 'label' (B,) in the batch; it has "
                              f"{sorted(batch)}.")
    if logits.shape[-1] == 1:
        return regression_loss(logits[..., 0], batch)
    w = example_weights(batch)
    nll, correct, n = softmax_xent(logits, label, weights=w, label_smoothing=label_smoothing)
    metrics = {"accuracy": (correct, n)}
    if logits.shape[-1] >= 5:
        _, top5 = jax.lax.top_k(logits.astype(jnp.float32), 5)
        hit = (top5 == label[:, None]).any(-1).astype(jnp.float32)
        metrics["top5_accuracy"] = ((hit * w).sum(), n)
    return LossOutput(loss=nll, weight=n, metrics=metrics)


@register_task
class ClassificationTask(Task):
    name = "classification"
    Options = ClassificationOptions
    default_model = "vit_classifier"
    model_inputs = ("image",)

    def __init__(self, options, model, teacher=None):
        super().__init__(options, model, teacher)
        self.model_inputs, self.layout = _MODALITIES[options.modality]

    def loss(self, variables, batch, *, train, rng, constants=None) -> LossOutput:
        out, extra = self.apply(variables, batch, train=train, rng=rng)
        result = classification_loss(out.logits, batch, self.options.label_smoothing)
        return result.replace(extra=extra)
