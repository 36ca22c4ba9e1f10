"""Answers from a generative VQA model: encode image and question once, then
:func:`jaxmm.generate` from the fused tokens.

A :class:`~jaxmm.models.vqa.VQAModel` with ``mode="generate"`` is an
encoder-decoder whose encoder takes two inputs (``image`` and the question's
``input_ids``) and returns its own padding mask over the fused tokens; this
module runs that encoder and hands both to the decoding loop.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxmm.generation.api import generate

__all__ = ["generate_answers"]


def generate_answers(model: Any, params: Any, image: np.ndarray, input_ids: np.ndarray,
                     attention_mask: np.ndarray | None = None, **generate_kwargs: Any
                     ) -> np.ndarray:
    """Answer token ids ``(B, 1 + n)`` (decoder start token first) from a
    ``mode="generate"`` :class:`~jaxmm.models.vqa.VQAModel`.

    ``image`` ``(B, H, W, C)`` and the question ``input_ids``/``attention_mask``
    ``(B, T)`` are encoded once; then :func:`jaxmm.generate` decodes from the
    fused tokens and their padding mask. ``generate_kwargs`` as in
    :func:`jaxmm.generate` (``max_new_tokens`` or ``generation_config`` is required).
    """
    if getattr(model.config, "mode", None) != "generate":
        raise ValueError("generate_answers needs a VQAModel with mode='generate'; a 'classify' "
                         "model answers with argmax(logits).")
    if attention_mask is None:
        attention_mask = np.ones(np.shape(input_ids), np.int32)
    enc = jax.jit(lambda p, x, i, m: model.apply({"params": p}, x, i, m, method="encode"))(
        params, jnp.asarray(image), jnp.asarray(input_ids), jnp.asarray(attention_mask))
    out = generate(model, params, encoder_outputs=enc.last_hidden_state,
                   encoder_attention_mask=np.asarray(enc.attention_mask), **generate_kwargs)
    return np.asarray(out.sequences)
