"""BERT pre-training: masked language modelling + next-sentence prediction, jointly.

Batch: ``input_ids``, ``attention_mask``, ``token_type_ids`` ``(B, T)`` (``[CLS] A
[SEP] B [SEP]`` sentence pairs) and ``next_sentence_label`` ``(B,)`` (0 = B follows
A, 1 = B is random), as the ``pretraining`` data presets build them in the input
pipeline (``data.nsp``, :mod:`jaxmm.data.nsp`). Tokens are masked on device each
step as in the ``mlm`` task (BERT's 15% / 80-10-10). The model returns
``prediction_logits`` and ``seq_relationship_logits`` (``bert_pretraining``).

Loss: the mean MLM cross-entropy over masked tokens plus ``nsp_weight`` x the mean
NSP cross-entropy over examples, as Hugging Face's ``BertForPreTraining`` sums
them. Under the loss contract (sums over a normaliser) the NSP sum is scaled by
``masked tokens / examples`` of the micro-batch, which is exact for one micro-batch
and a token-weighted mean across accumulated ones. Metrics: ``loss``,
``accuracy`` (masked tokens), ``mlm_loss``, ``nsp_loss``, ``nsp_accuracy``,
``perplexity`` (of the MLM).
"""

from __future__ import annotations

import dataclasses
import math

import jax.numpy as jnp

from jaxmm.config import ConfigError
from jaxmm.train.tasks.base import LossOutput, example_weights, register_task, softmax_xent
from jaxmm.train.tasks.lm import perplexity
from jaxmm.train.tasks.mlm import MaskedLMTask, MLMOptions


@dataclasses.dataclass(frozen=True)
class PretrainingOptions(MLMOptions):
    """MLM options (masking) and ``nsp_weight``: the NSP loss's weight (BERT: 1)."""

    nsp_weight: float = 1.0

    def validate(self) -> None:
        super().validate()
        if self.nsp_weight < 0:
            raise ConfigError(f"task.nsp_weight must be >= 0; got {self.nsp_weight}.")


@register_task
class PretrainingTask(MaskedLMTask):
    name = "pretraining"
    Options = PretrainingOptions
    default_model = "bert_pretraining"
    layout = "sentence_pairs"

    def loss(self, variables, batch, *, train, rng, constants=None) -> LossOutput:
        if "next_sentence_label" not in batch:
            raise ConfigError(
                f"pretraining needs 'next_sentence_label' (B,) in the batch; it has "
                f"{sorted(batch)}. Use a data preset with task='pretraining' (sentence pairs "
                "from data.nsp) or the masked-LM task 'mlm' for MLM alone.")
        out, extra = self.apply(variables, batch, train=train, rng=rng)
        if not hasattr(out, "seq_relationship_logits"):
            raise ConfigError(f"pretraining needs a model with MLM and NSP heads "
                              f"(bert_pretraining); {type(self.model).__name__} returns "
                              f"{type(out).__name__}.")
        weights = example_weights(batch)
        mlm_sum, correct, n_tokens = softmax_xent(
            out.prediction_logits, batch["labels"], weights=weights[:, None],
            label_smoothing=self.options.label_smoothing)
        nsp_sum, nsp_correct, n_examples = softmax_xent(
            out.seq_relationship_logits, batch["next_sentence_label"], weights=weights)
        scale = n_tokens / jnp.maximum(n_examples, 1.0)
        total = mlm_sum + self.options.nsp_weight * nsp_sum * scale
        return LossOutput(loss=total, weight=n_tokens, extra=extra, metrics={
            "accuracy": (correct, n_tokens), "mlm_loss": (mlm_sum, n_tokens),
            "nsp_loss": (nsp_sum, n_examples), "nsp_accuracy": (nsp_correct, n_examples)})

    def summarize(self, metrics):
        if "mlm_loss" not in metrics:
            return perplexity(metrics)
        # the MLM's perplexity, not that of the summed loss
        return {**metrics, "perplexity": math.exp(min(metrics["mlm_loss"], 50.0))}
