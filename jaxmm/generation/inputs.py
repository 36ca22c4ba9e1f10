"""Input preparation for :func:`jaxmm.generate`: checks, left alignment,
prompt buckets and the encoder run.

Prompts are left-padded up to a length *bucket* (powers of two up to 128,
then multiples of 128) and masked, so prompts of different lengths reuse one
compiled program. Right-padded prompts are moved to the left first. For
encoder-decoders the encoder runs once here (its own small ``jit``), and its
output is padded to a bucket too.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxmm import quantize
from jaxmm.errors import InputError
from jaxmm.generation.config import SpecialTokens
from jaxmm.models.outputs import BaseModelOutput

Array = jax.Array

__all__ = ["BucketedPrompt", "Prompt", "bucket_prompt", "prepare_prompt", "prompt_bucket"]


def prompt_bucket(length: int, multiple: int | None = None) -> int:
    """Padded length for a prompt of ``length`` tokens.

    ``multiple=None``: the next power of two up to 128, then the next multiple
    of 128; otherwise the next multiple of ``multiple``.
    """
    if multiple is not None:
        return max(multiple, -(-length // multiple) * multiple)
    if length <= 128:
        return 1 << max(0, (length - 1).bit_length())
    return -(-length // 128) * 128


@dataclasses.dataclass(frozen=True)
class Prompt:
    """The checked inputs of one ``generate`` call.

    Attributes:
      ids: ``(B, P)`` int32, the decoder prompt, left-aligned (left padding).
        Encoder-decoders: the decoder start token, then any given decoder prompt.
      mask: ``(B, P)`` int32 1/0 for ``ids``.
      encoder_hidden: ``(B, S, E)`` the encoder output (``S`` padded to a
        bucket), or ``None`` for decoder-only models.
      encoder_mask: ``(B, S)`` int32 for ``encoder_hidden``, or ``None``.
    """

    ids: np.ndarray
    mask: np.ndarray
    encoder_hidden: Array | None = None
    encoder_mask: Array | None = None


@dataclasses.dataclass(frozen=True)
class BucketedPrompt:
    """``ids``/``mask`` ``(B, W)`` int32: the prompt left-padded to its bucket
    ``W``; ``start``: the column where the caller's prompt begins."""

    ids: np.ndarray
    mask: np.ndarray
    start: int


def prepare_prompt(model: Any, params: Any, tokens: SpecialTokens, max_new_tokens: int,
                   bucket_multiple: int | None, *, encoder_decoder: bool,
                   input_ids: Any = None, attention_mask: Any = None,
                   decoder_input_ids: Any = None, decoder_attention_mask: Any = None,
                   encoder_inputs: Mapping[str, Any] | None = None,
                   encoder_outputs: Any = None, encoder_attention_mask: Any = None) -> Prompt:
    """Checks the inputs of ``generate`` and builds the :class:`Prompt` (running
    the encoder of an encoder-decoder). Raises ``ValueError`` naming the problem."""
    cfg = getattr(model, "config", None)
    vocab = getattr(cfg, "vocab_size", None)
    enc = enc_mask = None
    if encoder_decoder:
        enc, enc_mask, batch = _encode(model, params, input_ids, attention_mask, encoder_inputs,
                                       encoder_outputs, encoder_attention_mask, tokens.pad,
                                       vocab, bucket_multiple)
        if tokens.decoder_start is None:
            raise InputError("Encoder-decoder generation needs decoder_start_token_id (or "
                             "bos_token_id); pass it or set it in the model config.")
        ids, mask = _decoder_prompt(decoder_input_ids, decoder_attention_mask,
                                    tokens.decoder_start, batch)
    else:
        if encoder_outputs is not None or encoder_inputs is not None:
            raise InputError(f"{type(model).__name__} is decoder-only (no encode/decode methods); "
                             "encoder_outputs / encoder_inputs do not apply.")
        ids, mask = _decoder_only_prompt(input_ids, attention_mask, tokens)
    _check_tokens(ids, mask, vocab, "decoder_input_ids" if encoder_decoder else "input_ids")
    _check_length(mask, max_new_tokens, cfg)
    return Prompt(ids, mask, enc, enc_mask)


def bucket_prompt(prompt: Prompt, fill: int, max_new_tokens: int, model_config: Any,
                  multiple: int | None) -> BucketedPrompt:
    """Left-pads the prompt to its length bucket.

    The bucket holds at least 2 columns (one is prefilled, one fed by the
    loop). The cache holds ``bucket + max_new_tokens - 1`` slots; models with a
    position table may refuse a cache longer than the table, so the bucket
    shrinks (and columns that are padding in every row are dropped) when needed.
    """
    ids, mask = prompt.ids, prompt.mask
    limit = getattr(model_config, "max_position_embeddings", None)
    if limit is not None and ids.shape[1] + max_new_tokens - 1 > limit:
        first = int(np.argmax(mask.any(0)))
        ids, mask = ids[:, first:], mask[:, first:]
    plen = ids.shape[1]
    bucket = max(2, prompt_bucket(plen, multiple))
    if limit is not None:
        bucket = max(plen, 2, min(bucket, limit - max_new_tokens + 1))
    out_ids = np.full((ids.shape[0], bucket), fill, np.int32)
    out_ids[:, bucket - plen:] = ids
    out_mask = np.zeros(out_ids.shape, np.int32)
    out_mask[:, bucket - plen:] = mask
    return BucketedPrompt(out_ids, out_mask, bucket - plen)


# ---------------------------------------------------------------------------
# Token ids and masks
# ---------------------------------------------------------------------------


def _as_ids(x, name: str) -> np.ndarray:
    arr = np.asarray(x)
    if arr.ndim == 1:
        arr = arr[None]
    if arr.ndim != 2 or arr.size == 0 or not np.issubdtype(arr.dtype, np.integer):
        raise InputError(f"{name} must be a non-empty (batch, length) array of int token ids; "
                         f"got shape {arr.shape} and dtype {arr.dtype}.")
    return arr.astype(np.int32)


def _as_mask(mask, ids: np.ndarray, name: str) -> np.ndarray:
    mask = np.asarray(mask)
    if mask.ndim == 1:
        mask = mask[None]
    if mask.shape != ids.shape:
        raise InputError(f"{name} has shape {mask.shape} but the token ids have shape "
                         f"{ids.shape}; they must match.")
    mask = (mask != 0).astype(np.int32)
    empty = np.flatnonzero(mask.sum(1) == 0)
    if empty.size:
        raise InputError(f"{name} row(s) {empty.tolist()} are all padding; every prompt needs at "
                         "least one token.")
    return mask


def _left_align(ids: np.ndarray, mask: np.ndarray, fill: int):
    """Moves the real tokens of right-padded rows to the end (left padding)."""
    if not (mask[:, -1] == 0).any():
        return ids, mask
    out_ids, out_mask = np.full_like(ids, fill), np.zeros_like(mask)
    for r in range(ids.shape[0]):
        keep = ids[r][mask[r] > 0]
        out_ids[r, ids.shape[1] - keep.size:] = keep
        out_mask[r, ids.shape[1] - keep.size:] = 1
    return out_ids, out_mask


def _decoder_only_prompt(input_ids, attention_mask, tokens: SpecialTokens):
    if input_ids is None:
        if tokens.bos is None:
            raise InputError("Pass input_ids (the prompt), or set bos_token_id to start from "
                             "an empty prompt.")
        input_ids = [[tokens.bos]]
    ids = _as_ids(input_ids, "input_ids")
    pad = tokens.pad
    if attention_mask is None:
        # Hugging Face: infer padding from pad_token_id when it is not also EOS.
        if pad is not None and pad not in tokens.eos and (ids == pad).any():
            attention_mask = (ids != pad).astype(np.int32)
        else:
            attention_mask = np.ones_like(ids)
    mask = _as_mask(attention_mask, ids, "attention_mask")
    return _left_align(ids, mask, tokens.fill)


def _decoder_prompt(decoder_input_ids, decoder_attention_mask, start_id: int, batch: int):
    if decoder_input_ids is None:
        return np.full((batch, 1), start_id, np.int32), np.ones((batch, 1), np.int32)
    ids = _as_ids(decoder_input_ids, "decoder_input_ids")
    if ids.shape[0] != batch:
        raise InputError(f"decoder_input_ids has batch {ids.shape[0]} but the encoder inputs "
                         f"have batch {batch}.")
    mask = np.ones_like(ids) if decoder_attention_mask is None else decoder_attention_mask
    mask = _as_mask(mask, ids, "decoder_attention_mask")
    if (ids[:, 0] != start_id).all():  # as Hugging Face: prepend the start token
        ids = np.concatenate([np.full((batch, 1), start_id, np.int32), ids], 1)
        mask = np.concatenate([np.ones((batch, 1), np.int32), mask], 1)
    return ids, mask


def _check_tokens(ids: np.ndarray, mask: np.ndarray, vocab, name: str) -> None:
    real = ids[mask > 0]
    if real.min() < 0 or (vocab is not None and real.max() >= vocab):
        raise InputError(f"{name} contains ids outside [0, vocab_size={vocab}): "
                         f"min {real.min()}, max {real.max()}. Was it made with another tokenizer?")


def _check_length(mask: np.ndarray, max_new: int, cfg) -> None:
    limit = getattr(cfg, "max_position_embeddings", None)
    longest = int(mask.sum(1).max())
    if limit is not None and longest + max_new > limit:
        room, spare = limit - max_new, limit - longest  # prompt tokens / new tokens that fit
        if room >= 1 and spare >= 1:
            fix = (f"Shorten the prompt to at most {room} tokens, or lower max_new_tokens to "
                   f"at most {spare}.")
        elif room >= 1:
            fix = f"Shorten the prompt to at most {room} tokens."
        elif spare >= 1:
            fix = f"Lower max_new_tokens to at most {spare}."
        else:
            fix = (f"Shorten the prompt and lower max_new_tokens so that together they are at "
                   f"most {limit}.")
        raise InputError(
            f"The longest prompt has {longest} tokens; with max_new_tokens={max_new} that is "
            f"{longest + max_new} positions, more than the model's maximum of {limit} "
            "(max_position_embeddings).", hint=fix)


# ---------------------------------------------------------------------------
# The encoder of an encoder-decoder
# ---------------------------------------------------------------------------


@functools.lru_cache(maxsize=16)
def _encoder_fn(model):
    return jax.jit(lambda params, kwargs: model.apply({"params": quantize.dequantize(params)},
                                                      **kwargs, method="encode"))


def _encode(model, params, input_ids, attention_mask, encoder_inputs, encoder_outputs,
            encoder_attention_mask, pad, vocab, multiple):
    """Runs the encoder once; returns bucket-padded ``(hidden, mask, batch)``."""
    given = [x is not None for x in (input_ids, encoder_inputs, encoder_outputs)]
    if sum(given) != 1:
        raise InputError(f"{type(model).__name__} is an encoder-decoder: pass exactly one of "
                         "input_ids (encoder tokens), encoder_inputs (dict of encode() "
                         "arguments) or encoder_outputs.")
    mask = encoder_attention_mask if encoder_outputs is not None else attention_mask
    if encoder_outputs is not None:
        hidden = encoder_outputs
        if isinstance(hidden, BaseModelOutput):
            hidden = hidden.last_hidden_state
    elif input_ids is not None:
        ids = _as_ids(input_ids, "input_ids")
        mask = _as_mask(np.ones_like(ids) if mask is None else mask, ids, "attention_mask")
        _check_tokens(ids, mask, vocab, "input_ids")
        # Right-pad the encoder tokens to a bucket (masked), so lengths share programs.
        s = prompt_bucket(ids.shape[1], multiple)
        ids = np.pad(ids, ((0, 0), (0, s - ids.shape[1])), constant_values=pad or 0)
        mask = np.pad(mask, ((0, 0), (0, s - mask.shape[1])))
        hidden = _encoder_fn(model)(params, dict(input_ids=ids, attention_mask=mask))
        hidden = hidden.last_hidden_state
    else:
        kwargs = dict(encoder_inputs)
        if mask is not None:
            kwargs["attention_mask"] = mask
        mask = kwargs.get("attention_mask")
        hidden = _encoder_fn(model)(params, kwargs).last_hidden_state
        if mask is not None and np.shape(mask) != tuple(hidden.shape[:2]):
            # A mask over the raw input (audio frames, pixels) does not cover the
            # encoder's output positions; cross-attention then sees all of them.
            mask = None
    return _pad_encoder_output(jnp.asarray(hidden), mask, multiple)


def _pad_encoder_output(hidden: Array, mask, multiple: int | None):
    """Checks ``hidden`` ``(B, S, E)`` and its mask; pads both to the bucket of ``S``."""
    if hidden.ndim != 3:
        raise InputError(f"Encoder output must be (batch, length, width); got {hidden.shape}.")
    b, s = hidden.shape[:2]
    mask = np.ones((b, s), np.int32) if mask is None else np.asarray(mask).astype(np.int32)
    if mask.shape != (b, s):
        raise InputError(f"encoder_attention_mask has shape {mask.shape}; expected (batch, "
                         f"encoder length) = {(b, s)}.")
    target = prompt_bucket(s, multiple)
    if target != s:
        hidden = jnp.pad(hidden, ((0, 0), (0, target - s), (0, 0)))
        mask = np.pad(mask, ((0, 0), (0, target - s)))
    return hidden, jnp.asarray(mask), b
