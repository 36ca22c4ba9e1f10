"""Logits processors and warpers for generation, as pure ``jnp`` functions.

Each one takes next-token ``scores`` ``(N, V)`` (float32, one row per
sequence) and returns new scores; removed tokens get ``-inf``. They mirror the
Hugging Face processors of the same names, applied in the same order by
:func:`process_scores` (the step used by the compiled loop of
:func:`jaxmm.generate`):

1. :func:`repetition_penalty` (CTRL)          4. :func:`temperature`  (sampling only)
2. :func:`no_repeat_ngram_mask`               5. :func:`top_k_filter` (sampling only)
3. :func:`suppress_tokens` (min_new_tokens)   6. :func:`top_p_filter` (sampling only)

All shapes are static, so they run inside ``jax.jit`` / ``lax.while_loop``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxmm.generation.config import DecodePlan, TracedSettings

Array = jax.Array

__all__ = [
    "add_to_presence",
    "is_eos",
    "no_repeat_ngram_mask",
    "process_scores",
    "repetition_penalty",
    "suppress_tokens",
    "temperature",
    "token_presence",
    "top_k_filter",
    "top_p_filter",
]

NEG_INF = -jnp.inf


def token_presence(tokens: Array, valid: Array, vocab_size: int) -> Array:
    """``(N, V)`` boolean: which token ids occur in ``tokens`` ``(N, T)`` where ``valid``.

    Ids ``>= vocab_size`` (possible when the embedding table is larger than the
    output layer) are ignored, as in Hugging Face.
    """
    n = tokens.shape[0]
    ids = jnp.where(valid, tokens, vocab_size)
    out = jnp.zeros((n, vocab_size + 1), bool)
    out = out.at[jnp.arange(n)[:, None], jnp.minimum(ids, vocab_size)].set(True)
    return out[:, :vocab_size]


def repetition_penalty(scores: Array, presence: Array, penalty: Array | float) -> Array:
    """CTRL repetition penalty: scores of tokens seen so far (``presence``
    ``(N, V)``) are divided by ``penalty`` if positive, multiplied if negative."""
    penalised = jnp.where(scores < 0, scores * penalty, scores / penalty)
    return jnp.where(presence, penalised, scores)


def no_repeat_ngram_mask(
    tokens: Array, length: Array | int, start: Array | int, ngram_size: int, vocab_size: int
) -> Array:
    """``(N, V)`` mask of tokens that would repeat an n-gram already in the sequence.

    ``tokens`` ``(N, T)`` holds each sequence in ``[start, length)`` (the rest
    is ignored). A token ``w`` is banned when the last ``ngram_size - 1`` tokens
    followed by ``w`` already occur as an n-gram inside ``[start, length)``.
    """
    n = ngram_size
    num_rows, total = tokens.shape
    windows = total - n + 1
    if windows < 1:
        return jnp.zeros((num_rows, vocab_size), bool)
    length = jnp.asarray(length, jnp.int32)
    match = jnp.ones((num_rows, windows), bool)
    if n > 1:
        prefix = jax.lax.dynamic_slice_in_dim(tokens, jnp.maximum(length - (n - 1), 0), n - 1, 1)
        for k in range(n - 1):
            match = match & (tokens[:, k : k + windows] == prefix[:, k : k + 1])
    j = jnp.arange(windows)[None, :]
    # Window j covers tokens j .. j+n-1; all of them must already be in the sequence.
    match = match & (j >= start) & (j + n <= length)
    nxt = jnp.where(match, jnp.minimum(tokens[:, n - 1 : n - 1 + windows], vocab_size), vocab_size)
    banned = jnp.zeros((num_rows, vocab_size + 1), bool)
    banned = banned.at[jnp.arange(num_rows)[:, None], nxt].set(True)
    return banned[:, :vocab_size]


def suppress_tokens(scores: Array, token_ids: Array, active: Array | bool = True) -> Array:
    """Sets the scores of ``token_ids`` (1-D) to ``-inf`` where ``active``
    (scalar or ``(N,)``); used for ``min_new_tokens`` (suppressing EOS)."""
    hit = (jnp.arange(scores.shape[-1])[:, None] == jnp.asarray(token_ids)[None, :]).any(-1)
    active = jnp.asarray(active)
    if active.ndim == 1:
        active = active[:, None]
    return jnp.where(hit[None, :] & active, NEG_INF, scores)


def temperature(scores: Array, value: Array | float) -> Array:
    """``scores / value``."""
    return scores / value


def top_k_filter(scores: Array, k: int, min_tokens_to_keep: int = 1) -> Array:
    """Keeps tokens whose score is at least the ``k``-th largest (ties kept)."""
    k = min(max(int(k), min_tokens_to_keep), scores.shape[-1])
    kth = jax.lax.top_k(scores, k)[0][..., -1:]
    return jnp.where(scores < kth, NEG_INF, scores)


def top_p_filter(scores: Array, top_p: Array | float, min_tokens_to_keep: int = 1) -> Array:
    """Nucleus filtering: keeps the smallest set of most likely tokens whose
    probability sums to at least ``top_p`` (and at least ``min_tokens_to_keep``).

    As in Hugging Face: sort ascending, remove tokens whose cumulative
    probability is ``<= 1 - top_p``.
    """
    n, v = scores.shape
    order = jnp.argsort(scores, axis=-1)
    sorted_scores = jnp.take_along_axis(scores, order, axis=-1)
    cumulative = jnp.cumsum(jax.nn.softmax(sorted_scores, axis=-1), axis=-1)
    remove_sorted = cumulative <= 1 - top_p
    remove_sorted = remove_sorted & (jnp.arange(v) < v - min_tokens_to_keep)[None, :]
    remove = jnp.zeros((n, v), bool).at[jnp.arange(n)[:, None], order].set(remove_sorted)
    return jnp.where(remove, NEG_INF, scores)


# ---------------------------------------------------------------------------
# The processors of one decoding step, in Hugging Face order
# ---------------------------------------------------------------------------


def process_scores(plan: DecodePlan, settings: TracedSettings, scores: Array, tokens: Array,
                   presence: Array | None, length: Array, start: Array, step: Array) -> Array:
    """Logits processors, then (when sampling) warpers, on ``(N, V)`` scores.

    ``tokens`` ``(N, T)`` holds each sequence in ``[start, length)``;
    ``presence`` ``(N, V)`` marks the ids seen so far (``None`` unless
    ``plan.use_repetition_penalty``); ``step`` counts the new tokens so far.
    Which processors run is static (``plan``); their values are traced
    (``settings``).
    """
    v = scores.shape[-1]
    if plan.use_repetition_penalty:
        scores = repetition_penalty(scores, presence, settings.repetition_penalty)
    if plan.no_repeat_ngram_size:
        banned = no_repeat_ngram_mask(tokens, length, start, plan.no_repeat_ngram_size, v)
        scores = jnp.where(banned, NEG_INF, scores)
    if plan.num_eos:
        scores = suppress_tokens(scores, settings.eos, step < settings.min_new_tokens)
    if plan.do_sample:
        # Beam sampling keeps enough tokens that every beam can continue past EOS.
        keep = plan.num_eos + 1 if plan.num_beams > 1 else 1
        if plan.use_temperature:
            scores = temperature(scores, settings.temperature)
        if plan.top_k:
            scores = top_k_filter(scores, plan.top_k, keep)
        if plan.use_top_p:
            scores = top_p_filter(scores, settings.top_p, keep)
    return scores


def is_eos(plan: DecodePlan, settings: TracedSettings, tokens: Array) -> Array:
    """Boolean array of ``tokens``' shape: which are one of the EOS ids."""
    if not plan.num_eos:
        return jnp.zeros(tokens.shape, bool)
    return (tokens[..., None] == settings.eos).any(-1)


def add_to_presence(presence: Array | None, tokens: Array) -> Array | None:
    """Marks ``tokens`` ``(N,)`` in ``presence`` ``(N, V)`` (``None`` stays ``None``)."""
    if presence is None:
        return None
    rows = jnp.arange(presence.shape[0])
    return presence.at[rows, jnp.minimum(tokens, presence.shape[1] - 1)].set(True)
