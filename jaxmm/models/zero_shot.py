"""Zero-shot classification and retrieval scoring with a dual encoder.

Works with any model that has ``encode_image``/``encode_text`` methods
(:class:`~jaxmm.models.clip.CLIPModel`, :class:`~jaxmm.models.dual_encoder.DualEncoder`).

The CLIP recipe: every class name is written into each prompt template
(``"a photo of a {}."``), the prompts are encoded, each embedding is
L2-normalised, the class embedding is the renormalised mean over templates,
and an image's class scores are ``exp(logit_scale) * image_embed @ class_embeds.T``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array

__all__ = [
    "DEFAULT_TEMPLATES",
    "encode_images",
    "encode_texts",
    "zero_shot_classifier",
    "zero_shot_logits",
]

DEFAULT_TEMPLATES: tuple[str, ...] = (
    "a photo of a {}.",
    "a blurry photo of a {}.",
    "a photo of the large {}.",
    "a photo of the small {}.",
    "a drawing of a {}.",
    "itap of a {}.",
)

Tokenize = Callable[[Sequence[str]], Mapping[str, np.ndarray]]


def _tokenizer_fn(tokenizer: Any, max_length: int | None) -> Tokenize:
    """A jaxmm ``Tokenizer`` (with ``encode``) or a callable -> callable."""
    if hasattr(tokenizer, "encode"):
        return lambda texts: tokenizer.encode(list(texts), max_length=max_length, padding=True,
                                              truncation=True)
    if callable(tokenizer):
        return tokenizer
    raise TypeError(
        "tokenizer must be a jaxmm.data.tokenizers.Tokenizer or a callable mapping a list of "
        f"strings to dict(input_ids, attention_mask); got {type(tokenizer).__name__}."
    )


def _text_length_limit(model: nn.Module) -> int | None:
    cfg = model.config
    text = getattr(cfg, "text", None) or getattr(cfg, "text_encoder_config", None) or cfg
    return getattr(text, "max_position_embeddings", None)


def encode_texts(model: nn.Module, params: Any, tokenizer: Any, texts: Sequence[str], *,
                 batch_size: int = 256) -> np.ndarray:
    """``(N, D)`` L2-normalised text embeddings, computed in batches."""
    if not texts:
        raise ValueError("encode_texts needs at least one text.")
    tokenize = _tokenizer_fn(tokenizer, _text_length_limit(model))
    fn = jax.jit(lambda p, ids, mask: model.apply({"params": p}, ids, mask,
                                                  method="encode_text"))
    out = []
    for start in range(0, len(texts), batch_size):
        enc = tokenize(texts[start:start + batch_size])
        out.append(np.asarray(fn(params, jnp.asarray(enc["input_ids"]),
                                 jnp.asarray(enc["attention_mask"]))))
    return np.concatenate(out, 0)


def encode_images(model: nn.Module, params: Any, images: np.ndarray, *,
                  batch_size: int = 256) -> np.ndarray:
    """``(N, D)`` L2-normalised image embeddings of ``images`` ``(N, H, W, C)``."""
    images = np.asarray(images)
    if images.ndim != 4 or not len(images):
        raise ValueError(f"encode_images expects a non-empty (N, H, W, C) array; got shape "
                         f"{images.shape}.")
    fn = jax.jit(lambda p, x: model.apply({"params": p}, x, method="encode_image"))
    return np.concatenate([np.asarray(fn(params, jnp.asarray(images[i:i + batch_size])))
                           for i in range(0, len(images), batch_size)], 0)


def zero_shot_classifier(
    model: nn.Module, params: Any, tokenizer: Any, class_names: Sequence[str],
    templates: Sequence[str] = DEFAULT_TEMPLATES, *, batch_size: int = 256,
) -> np.ndarray:
    """``(C, D)`` normalised class embeddings averaged over prompt templates.

    Args:
      model, params: a dual encoder and its params.
      tokenizer: a jaxmm ``Tokenizer`` or a callable ``list[str] -> dict(input_ids,
        attention_mask)``.
      class_names: ``C`` names; templates: format strings with one ``{}``.
    """
    if not class_names:
        raise ValueError("zero_shot_classifier needs at least one class name.")
    bad = [t for t in templates if t.count("{}") != 1]
    if not templates or bad:
        raise ValueError(f"Each template needs exactly one '{{}}' for the class name; got "
                         f"{list(bad) or 'no templates'}.")
    prompts = [t.format(name) for name in class_names for t in templates]
    emb = encode_texts(model, params, tokenizer, prompts, batch_size=batch_size)
    emb = emb.reshape(len(class_names), len(templates), -1).mean(1)
    return emb / np.maximum(np.linalg.norm(emb, axis=-1, keepdims=True), 1e-12)


def zero_shot_logits(model: nn.Module, params: Any, images: np.ndarray, class_embeds: np.ndarray,
                     *, batch_size: int = 256) -> np.ndarray:
    """``(N, C)`` class logits ``exp(logit_scale) * image_embeds @ class_embeds.T``."""
    img = encode_images(model, params, images, batch_size=batch_size)
    scale = float(np.exp(np.asarray(nn.meta.unbox(params)["logit_scale"])))
    return scale * img @ np.asarray(class_embeds).T
