"""Token classification (named-entity recognition, tagging).

Batch: ``input_ids``, ``attention_mask`` (and ``token_type_ids``) ``(B, T)`` and
``labels`` ``(B, T)`` int: one class per token, ``-100`` where no label counts
(later sub-words of a word, special tokens, padding; see the
``tokenize_words`` preprocessing op). The model returns ``logits``
``(B, T, num_labels)`` (``TokenClassifierOutput``: ``bert_token_classifier``,
``roberta_token_classifier`` or any registered model with that output).
Loss: cross-entropy summed over the labelled tokens. Metrics: ``loss`` and
``accuracy`` over the labelled tokens. Entity-level F1 is the ``ner``
evaluator's job (:mod:`jaxmm.evaluate.evaluators.token_classification`).
"""

from __future__ import annotations

import dataclasses

from jaxmm.config import ConfigBase, ConfigError
from jaxmm.train.tasks.base import LossOutput, Task, example_weights, register_task, softmax_xent


@dataclasses.dataclass(frozen=True)
class TokenClassificationOptions(ConfigBase):
    """label_smoothing: as in the classification task."""

    label_smoothing: float = 0.0

    def validate(self) -> None:
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ConfigError(
                f"task.label_smoothing must be in [0, 1); got {self.label_smoothing}.")


def token_classification_loss(logits, batch, label_smoothing: float = 0.0) -> LossOutput:
    """Summed cross-entropy and accuracy over the labelled tokens of ``batch['labels']``."""
    if "labels" not in batch:
        raise ConfigError(f"token_classification needs per-token 'labels' (B, T) in the batch; "
                          f"it has {sorted(batch)} (tokenize with tokenize_words).")
    labels = batch["labels"]
    if labels.ndim != 2 or logits.ndim != 3 or logits.shape[:2] != labels.shape:
        raise ConfigError(f"token_classification needs logits (B, T, C) and labels (B, T); got "
                          f"logits {tuple(logits.shape)} and labels {tuple(labels.shape)} (model "
                          "must be a token classifier, e.g. bert_token_classifier).")
    nll, correct, n = softmax_xent(logits, labels, weights=example_weights(batch)[:, None],
                                   label_smoothing=label_smoothing)
    return LossOutput(loss=nll, weight=n, metrics={"accuracy": (correct, n)})


@register_task
class TokenClassificationTask(Task):
    name = "token_classification"
    Options = TokenClassificationOptions
    default_model = "bert_token_classifier"
    model_inputs = ("input_ids", "attention_mask", "token_type_ids")
    layout = "tagging"

    def loss(self, variables, batch, *, train, rng, constants=None) -> LossOutput:
        out, extra = self.apply(variables, batch, train=train, rng=rng)
        result = token_classification_loss(out.logits, batch, self.options.label_smoothing)
        return result.replace(extra=extra)
