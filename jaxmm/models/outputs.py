"""Model output containers, with Hugging Face field names.

They are ``flax.struct`` dataclasses (pytrees), so they pass through ``jax.jit``.
Families add their own where these do not fit (e.g. ``CLIPOutput`` in clip.py).

The decoding protocol (what ``jaxmm.generate`` relies on)
---------------------------------------------------------
Decoder-only LMs (GPT-2, Llama-style)::

    out = model.apply({"params": p, "cache": c}, input_ids,
                      attention_mask=mask, position_ids=pos, decode=True,
                      mutable=["cache"])          # -> (CausalLMOutput, {"cache": c'})

Encoder-decoder models (T5, Transformer, Whisper, captioners) expose two
methods, called with ``model.apply(..., method="encode" / "decode")``::

    enc = model.encode(<encoder inputs>, attention_mask=...)   # -> EncoderOutput
    out = model.decode(decoder_input_ids, encoder_hidden_states=enc.last_hidden_state,
                       encoder_attention_mask=enc_mask, decoder_attention_mask=mask,
                       decoder_position_ids=pos, decode=True)  # -> CausalLMOutput

Rules for ``decode=True``:

* The KV cache (collection ``"cache"``) is created by calling the model (or
  ``decode``) with ``decode=True`` on inputs whose length is the cache length
  ``L`` (use ``jax.eval_shape`` and zeros to avoid computing anything).
* Each later call appends its ``T`` tokens at the cache index.
  ``attention_mask`` / ``decoder_attention_mask`` then has shape ``(B, L)`` and
  covers the whole cache (1 for real tokens written so far or to be written,
  0 for left padding).
* Cross-attention keys/values are computed and cached on the call that passes
  ``encoder_hidden_states``; later calls pass ``encoder_hidden_states=None``.
* ``position_ids`` are explicit when given (left-padded prompts); otherwise
  the model uses the cache index.
* Model configs carry ``vocab_size``, ``max_position_embeddings`` (or the
  family's length limit, ``None`` if unbounded) and the special ids
  ``bos_token_id``, ``eos_token_id``, ``pad_token_id`` and, for
  encoder-decoders, ``decoder_start_token_id`` (any may be ``None``).
"""

from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp

from jaxmm.losses import IGNORE_INDEX

Array = jax.Array

__all__ = [
    "BaseModelOutput",
    "CausalLMOutput",
    "EncoderOutput",
    "MaskedLMOutput",
    "QuestionAnsweringOutput",
    "Seq2SeqLMOutput",
    "Seq2SeqModelOutput",
    "Seq2SeqStates",
    "SequenceClassifierOutput",
    "TokenClassifierOutput",
    "shift_tokens_right",
]


def shift_tokens_right(labels: Array, *, decoder_start_token_id: int | None,
                       pad_token_id: int | None) -> Array:
    """Teacher-forcing decoder inputs from labels, as Hugging Face does:
    ``(..., T)`` labels ``[y_0, ..., y_{T-1}]`` -> ``[start, y_0, ..., y_{T-2}]``,
    with ignored positions (``-100``) replaced by ``pad_token_id``."""
    if decoder_start_token_id is None or pad_token_id is None:
        raise ValueError(
            "Deriving decoder_input_ids from labels needs decoder_start_token_id and "
            "pad_token_id in the config; set them or pass decoder_input_ids."
        )
    labels = jnp.asarray(labels)
    start = jnp.full(labels.shape[:-1] + (1,), decoder_start_token_id, labels.dtype)
    shifted = jnp.concatenate([start, labels[..., :-1]], axis=-1)
    return jnp.where(shifted == IGNORE_INDEX, pad_token_id, shifted)


@flax.struct.dataclass
class BaseModelOutput:
    last_hidden_state: Array
    pooler_output: Array | None = None
    hidden_states: tuple[Array, ...] | None = None
    attentions: tuple[Array, ...] | None = None
    cross_attentions: tuple[Array, ...] | None = None


EncoderOutput = BaseModelOutput


@flax.struct.dataclass
class CausalLMOutput:
    logits: Array
    hidden_states: tuple[Array, ...] | None = None
    attentions: tuple[Array, ...] | None = None
    cross_attentions: tuple[Array, ...] | None = None
    last_hidden_state: Array | None = None


@flax.struct.dataclass(kw_only=True)
class Seq2SeqStates:
    """What every encoder-decoder output carries besides its head: the encoder's
    last states ``(B, S, D)`` and, when asked, every layer's states and attention
    weights of the encoder, the decoder and the decoder's cross-attention."""

    encoder_last_hidden_state: Array | None = None
    decoder_hidden_states: tuple[Array, ...] | None = None
    decoder_attentions: tuple[Array, ...] | None = None
    cross_attentions: tuple[Array, ...] | None = None
    encoder_hidden_states: tuple[Array, ...] | None = None
    encoder_attentions: tuple[Array, ...] | None = None

    @staticmethod
    def fields_from(enc: Any, dec: Any) -> dict[str, Any]:
        """These fields from an encoder output (``last_hidden_state`` and, if it has
        them, ``hidden_states``/``attentions``) and a decoder output."""
        return dict(
            encoder_last_hidden_state=enc.last_hidden_state,
            decoder_hidden_states=dec.hidden_states, decoder_attentions=dec.attentions,
            cross_attentions=dec.cross_attentions,
            encoder_hidden_states=getattr(enc, "hidden_states", None),
            encoder_attentions=getattr(enc, "attentions", None))


@flax.struct.dataclass(kw_only=True)
class Seq2SeqLMOutput(Seq2SeqStates):
    """Encoder-decoder outputs with an LM head: ``logits`` ``(B, T, vocab)``."""

    logits: Array

    @classmethod
    def from_parts(cls, enc: Any, dec: Any) -> Seq2SeqLMOutput:
        return cls(logits=dec.logits, **cls.fields_from(enc, dec))


@flax.struct.dataclass(kw_only=True)
class Seq2SeqModelOutput(Seq2SeqStates):
    """Encoder-decoder outputs without an LM head (``last_hidden_state`` is the decoder's)."""

    last_hidden_state: Array

    @classmethod
    def from_parts(cls, enc: Any, dec: Any) -> Seq2SeqModelOutput:
        return cls(last_hidden_state=dec.last_hidden_state, **cls.fields_from(enc, dec))


@flax.struct.dataclass
class MaskedLMOutput:
    logits: Array
    hidden_states: tuple[Array, ...] | None = None
    attentions: tuple[Array, ...] | None = None


@flax.struct.dataclass
class SequenceClassifierOutput:
    logits: Array
    hidden_states: tuple[Array, ...] | None = None
    attentions: tuple[Array, ...] | None = None
    extra: Any = None


@flax.struct.dataclass
class TokenClassifierOutput:
    logits: Array
    hidden_states: tuple[Array, ...] | None = None
    attentions: tuple[Array, ...] | None = None


@flax.struct.dataclass
class QuestionAnsweringOutput:
    start_logits: Array
    end_logits: Array
    hidden_states: tuple[Array, ...] | None = None
    attentions: tuple[Array, ...] | None = None
