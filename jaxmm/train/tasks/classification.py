"""Classification of images, text, audio or video into ``num_labels`` classes.

Batch: the model's inputs (``image`` / ``input_ids`` + ``attention_mask`` /
``input_features`` / ``audio`` / ``video``) and ``label`` ``(B,)``. The model
returns ``logits`` ``(B, num_labels)`` (``SequenceClassifierOutput``).
The fields passed are the ones the model declares (:mod:`jaxmm.models.specs`)
for ``task.modality``: an AST classifier gets its ``(num_mel_bins, max_frames)``
features, a video classifier its ``(frames, H, W, C)`` clips, and a
``MultimodalClassifier`` (``modality="multimodal"``) every modality of its
``fusion.modalities`` (text, image, audio, video; early, late, hybrid or
cross-attention fusion). Raw ``audio`` becomes the declared log-mel features on
device. A modality the model has no encoder for is a one-line ``ConfigError``.
Metrics: ``loss``, ``accuracy`` and, with 5+ classes, ``top5_accuracy``. A head
with one output (``num_labels=1``) is a regression on a float ``label``: the loss
is the mean squared error (as Hugging Face does), reported also as ``mse``.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from jaxmm.config import ConfigBase, ConfigError
from jaxmm.models.specs import spec_modalities
from jaxmm.train.tasks.base import (
    LossOutput,
    Task,
    example_weights,
    register_task,
    softmax_xent,
)
from jaxmm.train.tasks.modalities import audio_to_features, check_modalities, modality_fields

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
        specs = self.input_specs()
        if not specs:  # a model that declares no inputs: the fixed fields and layout
            return
        have = spec_modalities(specs)
        if options.modality == "multimodal":
            wanted = have
        else:
            wanted = check_modalities((options.modality,), specs, model, "task.modality")
            if len(have) > 1:
                raise ConfigError(
                    f"task.modality={options.modality!r}, but the model reads "
                    f"{', '.join(have)} together.", hint="Set task.modality='multimodal'.")
        self.model_inputs = modality_fields(specs, wanted)
        if not set(wanted) <= {"image", "text"}:
            self.layout = "inputs"  # any other modality: data shaped as the model declares

    def prepare(self, batch, rng, train):
        return super().prepare(audio_to_features(batch, self.input_specs()), rng, train)

    def inputs(self, batch):
        out = super().inputs(batch)
        specs = self.input_specs() or {}
        if "input_features" in out and "audio" not in specs:
            out.pop("audio", None)  # the model reads the features made from it
        return out

    def loss(self, variables, batch, *, train, rng, constants=None) -> LossOutput:
        out, extra = self.apply(variables, batch, train=train, rng=rng)
        result = classification_loss(out.logits, batch, self.options.label_smoothing)
        return result.replace(extra=extra)
