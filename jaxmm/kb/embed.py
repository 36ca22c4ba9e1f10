"""Dense text embeddings from a jaxmm text encoder.

:class:`TextEmbedder` loads any model folder :func:`jaxmm.convert.folders.load_model`
reads (a Hugging Face BERT folder such as all-MiniLM-L6-v2, a jaxmm model folder
or a params export) whose output has ``last_hidden_state``, with the tokenizer
of the same folder, and embeds texts as sentence-transformers does: the mean of
the last hidden states over the real tokens, then L2-normalised, so the inner
product of two embeddings is their cosine similarity.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxmm.errors import InputError
from jaxmm.models.dual_encoder import masked_mean

__all__ = ["TextEmbedder", "mean_pool"]


def mean_pool(hidden: jax.Array, mask: jax.Array, normalize: bool = True) -> jax.Array:
    """``(B, T, D)`` hidden states and a ``(B, T)`` 1/0 mask -> ``(B, D)`` mean over
    the masked-in tokens (L2-normalised when ``normalize``)."""
    pooled = masked_mean(hidden, mask)
    if normalize:
        pooled = pooled / jnp.maximum(jnp.linalg.norm(pooled, axis=-1, keepdims=True), 1e-12)
    return pooled


class TextEmbedder:
    """Embeds texts with the encoder in ``path`` (and its tokenizer, or ``tokenizer``).

    ``max_length`` truncates each text (tokens, special tokens included);
    batches are padded to a multiple of 32 tokens and to ``batch_size`` rows, so
    that at most ``max_length / 32`` shapes are ever compiled.
    """

    def __init__(self, path: str | os.PathLike, *, tokenizer: str | os.PathLike | None = None,
                 max_length: int = 256, batch_size: int = 32):
        from jaxmm.convert.folders import load_model
        from jaxmm.data.tokenizers import load as load_tokenizer

        self.path = os.fspath(path)
        self.tokenizer_path = os.fspath(tokenizer or path)
        self.tokenizer = load_tokenizer(self.tokenizer_path)
        self.model, self.params = load_model(self.path)
        self.max_length = max_length
        self.batch_size = batch_size

        def embed(params, input_ids, attention_mask, token_type_ids):
            kwargs = {"input_ids": input_ids, "attention_mask": attention_mask}
            if token_type_ids is not None:
                kwargs["token_type_ids"] = token_type_ids
            out = self.model.apply({"params": params}, **kwargs)
            hidden = getattr(out, "last_hidden_state", None)
            if hidden is None:
                raise InputError(f"The model in {self.path!r} ({type(self.model).__name__}) "
                                 "returns no last_hidden_state, so it is not a text encoder.",
                                 hint="Use a BERT-style encoder folder (e.g. all-MiniLM-L6-v2).")
            return mean_pool(hidden.astype(jnp.float32), attention_mask)

        self._embed = jax.jit(embed)
        self.dim = int(self.encode(["probe"]).shape[1])

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """``(len(texts), dim)`` float32 unit vectors."""
        texts = list(texts)
        out = []
        for i in range(0, len(texts), self.batch_size):
            rows = texts[i:i + self.batch_size]
            batch = self.tokenizer.encode(rows, max_length=self.max_length, pad_to_multiple_of=32)
            n = len(rows)
            pad = self.batch_size - n
            arrays = {k: np.pad(v, ((0, pad), (0, 0))) for k, v in batch.items()}
            if pad:
                arrays["attention_mask"][n:, 0] = 1  # keep padding rows finite
            vec = self._embed(self.params, arrays["input_ids"], arrays["attention_mask"],
                              arrays.get("token_type_ids"))
            out.append(np.asarray(vec[:n], np.float32))
        return np.concatenate(out) if out else np.zeros((0, getattr(self, "dim", 0)), np.float32)
