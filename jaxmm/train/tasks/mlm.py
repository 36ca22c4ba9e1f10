"""Masked language modelling (BERT/RoBERTa pre-training).

Batch: ``input_ids``, ``attention_mask`` (and ``token_type_ids``) ``(B, T)``.
Without ``labels`` in the batch, tokens are corrupted on device inside the
step with :func:`jaxmm.losses.mlm_mask` (a fresh mask every step, from the
step's RNG); with ``labels`` the data is taken as already masked.
Metrics: ``loss`` and ``accuracy`` over the masked positions, ``perplexity``.
"""

from __future__ import annotations

import dataclasses

from jaxmm import losses
from jaxmm.config import ConfigBase, ConfigError
from jaxmm.train.tasks.base import LossOutput, Task, example_weights, register_task, softmax_xent
from jaxmm.train.tasks.lm import perplexity


@dataclasses.dataclass(frozen=True)
class MLMOptions(ConfigBase):
    """mask_token_id: the [MASK] id (the tokenizer's ``mask_token_id``; 3 for the
    synthetic data). special_ids: ids never masked (e.g. [CLS], [SEP]).
    mlm_probability / mask_fraction / random_fraction: BERT's 15% / 80% / 10%."""

    mask_token_id: int | None = None
    special_ids: tuple[int, ...] = ()
    mlm_probability: float = 0.15
    mask_fraction: float = 0.8
    random_fraction: float = 0.1
    label_smoothing: float = 0.0

    def validate(self) -> None:
        if not 0.0 < self.mlm_probability < 1.0:
            raise ConfigError(
                f"task.mlm_probability must be in (0, 1); got {self.mlm_probability}.")


@register_task
class MaskedLMTask(Task):
    name = "mlm"
    Options = MLMOptions
    default_model = "bert_mlm"
    model_inputs = ("input_ids", "attention_mask", "token_type_ids")
    layout = "text"

    def prepare(self, batch, rng, train):
        if "labels" in batch:
            return batch
        if self.options.mask_token_id is None:
            raise ConfigError("task.mask_token_id is not set: the MLM task masks tokens on the fly "
                              "and needs the [MASK] id (tokenizer.mask_token_id).")
        ids, labels = losses.mlm_mask(
            rng, batch["input_ids"], mask_token_id=self.options.mask_token_id,
            vocab_size=self.model_config.vocab_size, special_ids=self.options.special_ids,
            attention_mask=batch.get("attention_mask"),
            mlm_probability=self.options.mlm_probability,
            mask_fraction=self.options.mask_fraction,
            random_fraction=self.options.random_fraction)
        return {**batch, "input_ids": ids, "labels": labels}

    def loss(self, variables, batch, *, train, rng, constants=None) -> LossOutput:
        out, extra = self.apply(variables, batch, train=train, rng=rng)
        nll, correct, n = softmax_xent(out.logits, batch["labels"],
                                       weights=example_weights(batch)[:, None],
                                       label_smoothing=self.options.label_smoothing)
        return LossOutput(loss=nll, weight=n, metrics={"accuracy": (correct, n)}, extra=extra)

    def summarize(self, metrics):
        return perplexity(metrics)
