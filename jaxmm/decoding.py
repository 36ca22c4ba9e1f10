"""Text generation: greedy, sampling and beam search in one compiled loop.

:func:`generate` follows Hugging Face ``generate`` for the same settings (the
same processors in the same order, the same beam-search bookkeeping), so the
same weights give the same tokens. It works for any model that implements the
decoding protocol in :mod:`jaxmm.models.outputs`: decoder-only LMs, and
encoder-decoders (text, image or speech encoders), whose encoder runs once.

How it runs: the prompt is left-padded up to a length *bucket* (powers of two,
then multiples of 128) and masked, so prompts of different lengths reuse one
compiled program. Prefill and the whole token loop (a ``lax.while_loop`` over
a fixed-size KV cache, which stops early once every sequence is done) run in a
single ``jax.jit`` function (:mod:`jaxmm.decoding_loop`), cached per (model,
static settings). This module prepares and checks the inputs.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from jaxmm.decoding_loop import DecodePlan, compiled_decoder
from jaxmm.models.outputs import BaseModelOutput

Array = jax.Array

__all__ = ["GenerateOutput", "generate", "is_encoder_decoder", "prompt_bucket"]


@flax.struct.dataclass
class GenerateOutput:
    """What :func:`generate` returns (Hugging Face field names).

    sequences: ``(B * num_return_sequences, P + n)`` int32: the prompt (for
      encoder-decoders the decoder prompt, usually ``decoder_start_token_id``)
      then ``n <= max_new_tokens`` new tokens, ``pad_token_id`` after EOS.
    scores: ``(rows, n, V)`` float32 when ``output_scores``: the processed
      next-token scores of every step (logits after processors and warpers;
      for beam search the processed log-probabilities of the running beams,
      ``rows = B * num_beams``).
    sequences_scores: ``(B * num_return_sequences,)`` beam search only: each
      hypothesis' ``sum_logprobs / generated_length ** length_penalty``.
    """

    sequences: Array
    scores: Array | None = None
    sequences_scores: Array | None = None


def is_encoder_decoder(model: Any) -> bool:
    """Whether ``model`` exposes the ``encode``/``decode`` methods of the protocol."""
    return callable(getattr(model, "encode", None)) and callable(getattr(model, "decode", None))


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


# ---------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------


def generate(
    model: Any,
    params: Any,
    input_ids: Any = None,
    attention_mask: Any = None,
    *,
    max_new_tokens: int,
    min_new_tokens: int = 0,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_k: int = 50,
    top_p: float = 1.0,
    num_beams: int = 1,
    length_penalty: float = 1.0,
    early_stopping: bool | str = False,
    num_return_sequences: int = 1,
    repetition_penalty: float = 1.0,
    no_repeat_ngram_size: int = 0,
    eos_token_id: int | Sequence[int] | None = None,
    pad_token_id: int | None = None,
    bos_token_id: int | None = None,
    decoder_start_token_id: int | None = None,
    decoder_input_ids: Any = None,
    decoder_attention_mask: Any = None,
    encoder_inputs: Mapping[str, Any] | None = None,
    encoder_outputs: Any = None,
    encoder_attention_mask: Any = None,
    rng: Any = None,
    output_scores: bool = False,
    bucket_multiple: int | None = None,
) -> GenerateOutput:
    """Generates tokens with greedy search, sampling or beam search.

    Args:
      model: a Flax module implementing the decoding protocol
        (:mod:`jaxmm.models.outputs`), e.g. from ``jaxmm.convert.from_hf``.
      params: its parameters (``variables["params"]`` or ``{"params": ...}``).
      input_ids: ``(B, P)`` int token ids. Decoder-only: the prompt, left-padded
        (right-padded rows are moved to the left; outputs are then left-padded).
        Encoder-decoder: the encoder's tokens (T5-style text-to-text).
      attention_mask: ``(B, P)`` 1/0 for ``input_ids``. If omitted it is
        inferred from ``pad_token_id`` when that differs from EOS, as in
        Hugging Face; otherwise all ones.
      max_new_tokens / min_new_tokens: bounds on the number of new tokens
        (``min_new_tokens`` suppresses EOS until reached).
      do_sample, temperature, top_k, top_p: multinomial sampling with the
        Hugging Face warpers, in that order, and Hugging Face's defaults
        (``top_k=50``; ``top_k=0`` / ``top_p=1`` turn a filter off).
        ``rng`` (a ``jax.random`` key or an int seed) is required.
      num_beams, length_penalty, early_stopping, num_return_sequences: beam
        search as in Hugging Face; finished hypotheses score
        ``sum_logprobs / generated_length ** length_penalty`` (EOS counted);
        ``early_stopping`` is ``True``, ``False`` or ``"never"``. With
        ``do_sample`` it becomes beam sampling.
      repetition_penalty: CTRL penalty (> 1 discourages repeats, prompt included).
      no_repeat_ngram_size: forbid repeating any n-gram of this size.
      eos_token_id, pad_token_id, bos_token_id, decoder_start_token_id:
        default to the model config's; ``pad_token_id`` falls back to the
        first EOS id. Several EOS ids may be given.
      decoder_input_ids / decoder_attention_mask: encoder-decoder decoder
        prompt (``decoder_start_token_id`` is prepended when missing).
      encoder_inputs: encoder-decoder inputs other than token ids, passed as
        keyword arguments to ``model.encode`` (e.g. ``{"image": x}``).
      encoder_outputs / encoder_attention_mask: a precomputed encoder output
        (``EncoderOutput`` or ``(B, S, E)`` array); the encoder is not run.
      output_scores: also return the processed scores of every step.
      bucket_multiple: pad prompt lengths to multiples of this instead of the
        default buckets (powers of two up to 128, then multiples of 128).

    Returns:
      :class:`GenerateOutput`; ``sequences`` is ``(B * num_return_sequences,
      P + n)`` with ``n <= max_new_tokens`` (generation stops once every
      sequence has finished).
    """
    cfg = getattr(model, "config", None)
    if isinstance(params, Mapping) and set(params) == {"params"}:
        params = params["params"]
    encdec = is_encoder_decoder(model)
    vocab = getattr(cfg, "vocab_size", None)
    eos = _eos_ids(eos_token_id, cfg)
    pad = _pick(pad_token_id, cfg, "pad_token_id")
    pad = eos[0] if pad is None and eos else pad
    _check_settings(max_new_tokens, min_new_tokens, do_sample, temperature, top_k, top_p,
                    num_beams, num_return_sequences, length_penalty, early_stopping,
                    repetition_penalty, no_repeat_ngram_size, eos, bucket_multiple)

    enc = enc_mask = None
    if encdec:
        enc, enc_mask, batch = _encode(model, params, input_ids, attention_mask, encoder_inputs,
                                       encoder_outputs, encoder_attention_mask, pad, vocab,
                                       bucket_multiple)
        start_id = _pick(decoder_start_token_id, cfg, "decoder_start_token_id")
        start_id = _pick(bos_token_id, cfg, "bos_token_id") if start_id is None else start_id
        if start_id is None:
            raise ValueError("Encoder-decoder generation needs decoder_start_token_id (or "
                             "bos_token_id); pass it or set it in the model config.")
        prompt, mask = _decoder_prompt(decoder_input_ids, decoder_attention_mask, start_id, batch)
    else:
        if encoder_outputs is not None or encoder_inputs is not None:
            raise ValueError(f"{type(model).__name__} is decoder-only (no encode/decode methods); "
                             "encoder_outputs / encoder_inputs do not apply.")
        prompt, mask = _decoder_only_prompt(input_ids, attention_mask, pad, eos, bos_token_id, cfg)
    _check_tokens(prompt, mask, vocab, "decoder_input_ids" if encdec else "input_ids")
    _check_length(prompt, mask, max_new_tokens, cfg)

    plan = DecodePlan(
        encoder_decoder=encdec, max_new_tokens=int(max_new_tokens), num_beams=int(num_beams),
        num_return_sequences=int(num_return_sequences), do_sample=bool(do_sample),
        top_k=int(top_k) if do_sample else 0, use_top_p=bool(do_sample and top_p < 1.0),
        use_temperature=bool(do_sample and temperature != 1.0),
        use_repetition_penalty=repetition_penalty != 1.0,
        no_repeat_ngram_size=int(no_repeat_ngram_size), num_eos=len(eos),
        early_stopping=early_stopping, output_scores=bool(output_scores),
    )
    if do_sample:
        if rng is None:
            raise ValueError("do_sample=True needs rng= (a jax.random key or an int seed).")
        rng = jax.random.key(int(rng)) if isinstance(rng, (int, np.integer)) else rng
    else:
        rng = jax.random.key(0)
    knobs = dict(
        temperature=jnp.float32(temperature), top_p=jnp.float32(top_p),
        repetition_penalty=jnp.float32(repetition_penalty),
        length_penalty=jnp.float32(length_penalty), min_new_tokens=jnp.int32(min_new_tokens),
        eos=jnp.asarray(eos, jnp.int32).reshape(-1), pad=jnp.int32(0 if pad is None else pad),
    )
    fill = 0 if pad is None else pad
    padded, padded_mask, start = _bucket_prompt(prompt, mask, fill, max_new_tokens, cfg,
                                                bucket_multiple)
    out = compiled_decoder(model, plan)(params, padded, padded_mask, jnp.int32(start), enc,
                                        enc_mask, knobs, rng)

    # The prompt as given (left-aligned) followed by the new tokens.
    steps = int(out["steps"])
    bucket = padded.shape[1]
    new = np.asarray(out["tokens"][:, bucket: bucket + steps])
    if plan.num_beams > 1:
        # Past each hypothesis' own end (EOS), fill with padding.
        new = np.where(np.arange(steps)[None, :] < np.asarray(out["lengths"])[:, None], new, fill)
    rows = new.shape[0] // prompt.shape[0]
    sequences = jnp.asarray(np.concatenate([np.repeat(prompt, rows, axis=0), new], axis=1))
    scores = out["scores"][:, :int(out.get("scored_steps", steps))] if output_scores else None
    return GenerateOutput(sequences, scores, out.get("sequences_scores"))


def _bucket_prompt(prompt: np.ndarray, mask: np.ndarray, fill: int, max_new: int, cfg,
                   multiple: int | None):
    """Left-pads the prompt to its length bucket; returns ``(ids, mask, start)``,
    ``start`` being the column where the caller's prompt begins.

    The bucket holds at least 2 columns (one is prefilled, one fed by the
    loop). The cache holds ``bucket + max_new - 1`` slots; models with a
    position table may refuse a cache longer than the table, so the bucket
    shrinks (and columns that are padding in every row are dropped) when needed.
    """
    limit = getattr(cfg, "max_position_embeddings", None)
    if limit is not None and prompt.shape[1] + max_new - 1 > limit:
        first = int(np.argmax(mask.any(0)))
        prompt, mask = prompt[:, first:], mask[:, first:]
    plen = prompt.shape[1]
    bucket = max(2, prompt_bucket(plen, multiple))
    if limit is not None:
        bucket = max(plen, 2, min(bucket, limit - max_new + 1))
    ids = np.full((prompt.shape[0], bucket), fill, np.int32)
    ids[:, bucket - plen:] = prompt
    out_mask = np.zeros(ids.shape, np.int32)
    out_mask[:, bucket - plen:] = mask
    return ids, out_mask, bucket - plen


# ---------------------------------------------------------------------------
# Input preparation and validation
# ---------------------------------------------------------------------------


def _pick(value, cfg, name):
    return value if value is not None else getattr(cfg, name, None)


def _eos_ids(eos_token_id, cfg) -> tuple[int, ...]:
    eos = _pick(eos_token_id, cfg, "eos_token_id")
    if eos is None:
        return ()
    ids = (eos,) if isinstance(eos, (int, np.integer)) else tuple(eos)
    if any(not isinstance(e, (int, np.integer)) or e < 0 for e in ids):
        raise ValueError(f"eos_token_id must be a non-negative int or a list of them; got {eos!r}.")
    return tuple(int(e) for e in ids)


def _check_settings(max_new, min_new, do_sample, temperature, top_k, top_p, num_beams,
                    num_return, length_penalty, early_stopping, rep, ngram, eos, multiple):
    def bad(msg):
        raise ValueError(msg)

    def is_int(x):
        return isinstance(x, (int, np.integer)) and not isinstance(x, bool)

    if not is_int(max_new) or max_new < 1:
        bad(f"max_new_tokens must be an int >= 1; got {max_new!r}.")
    if not is_int(min_new) or min_new < 0:
        bad(f"min_new_tokens must be an int >= 0; got {min_new!r}.")
    if min_new > 0 and not eos:
        bad("min_new_tokens > 0 works by suppressing EOS, but no eos_token_id is set; pass "
            "eos_token_id= (or set it in the model config).")
    if not is_int(num_beams) or num_beams < 1:
        bad(f"num_beams must be an int >= 1; got {num_beams!r}. Use 1 for greedy/sampling.")
    if not is_int(num_return) or num_return < 1:
        bad(f"num_return_sequences must be an int >= 1; got {num_return!r}.")
    if num_beams > 1 and num_return > num_beams:
        bad(f"num_return_sequences ({num_return}) cannot exceed num_beams ({num_beams}); "
            "raise num_beams or lower num_return_sequences.")
    if num_beams == 1 and not do_sample and num_return > 1:
        bad("Greedy search returns one sequence per input; num_return_sequences > 1 needs "
            "do_sample=True or num_beams >= num_return_sequences.")
    if not (isinstance(temperature, (int, float)) and temperature > 0):
        bad(f"temperature must be a float > 0; got {temperature!r} (for greedy decoding use "
            "do_sample=False).")
    if not is_int(top_k) or top_k < 0:
        bad(f"top_k must be an int >= 0 (0 disables it); got {top_k!r}.")
    if not (isinstance(top_p, (int, float)) and 0.0 < top_p <= 1.0):
        bad(f"top_p must be in (0, 1] (1 disables it); got {top_p!r}.")
    if not (isinstance(rep, (int, float)) and rep > 0):
        bad(f"repetition_penalty must be > 0 (1.0 disables it); got {rep!r}.")
    if not is_int(ngram) or ngram < 0:
        bad(f"no_repeat_ngram_size must be an int >= 0 (0 disables it); got {ngram!r}.")
    if not isinstance(length_penalty, (int, float)):
        bad(f"length_penalty must be a float; got {length_penalty!r}.")
    if not (early_stopping is True or early_stopping is False or early_stopping == "never"):
        bad(f"early_stopping must be True, False or 'never'; got {early_stopping!r}.")
    if multiple is not None and (not is_int(multiple) or multiple < 1):
        bad(f"bucket_multiple must be an int >= 1 or None; got {multiple!r}.")
    if not do_sample and (temperature != 1.0 or top_k not in (0, 50) or top_p < 1.0):
        warnings.warn("temperature/top_k/top_p only apply with do_sample=True; they are ignored "
                      "for greedy and beam search.", UserWarning, stacklevel=3)


def _as_ids(x, name: str) -> np.ndarray:
    arr = np.asarray(x)
    if arr.ndim == 1:
        arr = arr[None]
    if arr.ndim != 2 or arr.size == 0 or not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{name} must be a non-empty (batch, length) array of int token ids; "
                         f"got shape {arr.shape} and dtype {arr.dtype}.")
    return arr.astype(np.int32)


def _as_mask(mask, ids: np.ndarray, name: str) -> np.ndarray:
    mask = np.asarray(mask)
    if mask.ndim == 1:
        mask = mask[None]
    if mask.shape != ids.shape:
        raise ValueError(f"{name} has shape {mask.shape} but the token ids have shape "
                         f"{ids.shape}; they must match.")
    mask = (mask != 0).astype(np.int32)
    empty = np.flatnonzero(mask.sum(1) == 0)
    if empty.size:
        raise ValueError(f"{name} row(s) {empty.tolist()} are all padding; every prompt needs at "
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


def _decoder_only_prompt(input_ids, attention_mask, pad, eos, bos, cfg):
    if input_ids is None:
        bos = _pick(bos, cfg, "bos_token_id")
        if bos is None:
            raise ValueError("Pass input_ids (the prompt), or set bos_token_id to start from "
                             "an empty prompt.")
        input_ids = [[bos]]
    ids = _as_ids(input_ids, "input_ids")
    if attention_mask is None:
        # Hugging Face: infer padding from pad_token_id when it is not also EOS.
        if pad is not None and pad not in eos and (ids == pad).any():
            attention_mask = (ids != pad).astype(np.int32)
        else:
            attention_mask = np.ones_like(ids)
    mask = _as_mask(attention_mask, ids, "attention_mask")
    return _left_align(ids, mask, 0 if pad is None else pad)


def _decoder_prompt(decoder_input_ids, decoder_attention_mask, start_id, batch):
    if decoder_input_ids is None:
        return np.full((batch, 1), start_id, np.int32), np.ones((batch, 1), np.int32)
    ids = _as_ids(decoder_input_ids, "decoder_input_ids")
    if ids.shape[0] != batch:
        raise ValueError(f"decoder_input_ids has batch {ids.shape[0]} but the encoder inputs "
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
        raise ValueError(f"{name} contains ids outside [0, vocab_size={vocab}): "
                         f"min {real.min()}, max {real.max()}. Was it made with another tokenizer?")


def _check_length(ids: np.ndarray, mask: np.ndarray, max_new: int, cfg) -> None:
    limit = getattr(cfg, "max_position_embeddings", None)
    longest = int(mask.sum(1).max())
    if limit is not None and longest + max_new > limit:
        raise ValueError(
            f"The longest prompt has {longest} tokens; with max_new_tokens={max_new} that is "
            f"{longest + max_new} positions, more than the model's maximum of {limit} "
            f"(max_position_embeddings). Shorten the prompt to at most {limit - max_new} "
            "tokens or lower max_new_tokens.")


@functools.lru_cache(maxsize=16)
def _encoder_fn(model):
    return jax.jit(lambda params, kwargs: model.apply({"params": params}, **kwargs,
                                                      method="encode"))


def _encode(model, params, input_ids, attention_mask, encoder_inputs, encoder_outputs,
            encoder_attention_mask, pad, vocab, multiple):
    """Runs the encoder once; returns bucket-padded ``(hidden, mask, batch)``."""
    given = [x is not None for x in (input_ids, encoder_inputs, encoder_outputs)]
    if sum(given) != 1:
        raise ValueError(f"{type(model).__name__} is an encoder-decoder: pass exactly one of "
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
    hidden = jnp.asarray(hidden)
    if hidden.ndim != 3:
        raise ValueError(f"Encoder output must be (batch, length, width); got {hidden.shape}.")
    b, s = hidden.shape[:2]
    mask = np.ones((b, s), np.int32) if mask is None else np.asarray(mask).astype(np.int32)
    if mask.shape != (b, s):
        raise ValueError(f"encoder_attention_mask has shape {mask.shape}; expected (batch, "
                         f"encoder length) = {(b, s)}.")
    target = prompt_bucket(s, multiple)
    if target != s:
        hidden = jnp.pad(hidden, ((0, 0), (0, target - s), (0, 0)))
        mask = np.pad(mask, ((0, 0), (0, target - s)))
    return hidden, jnp.asarray(mask), b
