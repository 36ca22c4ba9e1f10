"""Extractive question answering (SQuAD): predict the answer's first and last token.

Batch: ``input_ids``, ``attention_mask``, ``token_type_ids`` ``(B, T)`` with
``start_positions`` / ``end_positions`` ``(B,)`` -- or, as evaluation pipelines give
them (:func:`jaxmm.data.catalog.squad`), all doc-stride windows of each example
``(B, W, T)`` / ``(B, W)``, flattened here to ``B * W`` rows (padding windows, with
an all-zero ``attention_mask``, get weight 0). The model (``bert_qa``) returns
``start_logits`` and ``end_logits`` ``(B, T)``.

Loss: as Hugging Face's ``BertForQuestionAnswering``, the mean of the start and end
cross-entropies; an answer outside the window (and a SQuAD v2 question without one)
points at index 0, the CLS token; label ``-100`` is ignored. Metrics:
``start_accuracy``, ``end_accuracy`` and ``span_accuracy`` (both right). Text
answers, exact match and F1 come from the ``squad`` evaluator.
"""

from __future__ import annotations

import jax.numpy as jnp

from jaxmm.train.tasks.base import (
    IGNORE_INDEX,
    LossOutput,
    NoOptions,
    Task,
    example_weights,
    flatten_groups,
    register_task,
    softmax_xent,
)

# Batch fields that carry a window axis in evaluation batches.
WINDOW_KEYS = ("input_ids", "attention_mask", "token_type_ids", "offsets", "start_positions",
               "end_positions")


def span_loss(start_logits, end_logits, batch) -> LossOutput:
    """Summed ``(start_xent + end_xent) / 2`` over the rows, with per-position accuracies."""
    w = example_weights(batch)
    start, end = batch["start_positions"], batch["end_positions"]
    ls, cs, n = softmax_xent(start_logits, start, weights=w)
    le, ce, _ = softmax_xent(end_logits, end, weights=w)
    valid = (start != IGNORE_INDEX).astype(jnp.float32) * w
    both = ((jnp.argmax(start_logits, -1) == start) & (jnp.argmax(end_logits, -1) == end))
    return LossOutput(loss=(ls + le) / 2, weight=n,
                      metrics={"start_accuracy": (cs, n), "end_accuracy": (ce, n),
                               "span_accuracy": ((both * valid).sum(), n)})


@register_task
class ExtractiveQATask(Task):
    name = "extractive_qa"
    Options = NoOptions
    default_model = "bert_qa"
    model_inputs = ("input_ids", "attention_mask", "token_type_ids")
    layout = "qa"

    def prepare(self, batch, rng, train):
        del rng, train
        return flatten_groups(batch, WINDOW_KEYS)

    def loss(self, variables, batch, *, train, rng, constants=None) -> LossOutput:
        out, extra = self.apply(variables, batch, train=train, rng=rng)
        return span_loss(out.start_logits, out.end_logits, batch).replace(extra=extra)
