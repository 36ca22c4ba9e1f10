"""The compiled generation program: prefill, then a ``lax.while_loop`` of
model step + token selection (greedy, sampling or beam search).

Used by :func:`jaxmm.generate`, which prepares and checks the inputs. One
program is compiled per (model, :class:`~jaxmm.generation.config.DecodePlan`)
and per input shapes; the :class:`~jaxmm.generation.config.TracedSettings`
(temperature, top_p, penalties, EOS/pad ids) are traced inputs, so changing
them does not recompile.

The loop carries a typed state: :class:`SamplingState` for greedy search and
sampling, :class:`BeamState` for beam search. Shapes below use ``B`` inputs,
``N`` decoded rows (``B * num_return_sequences`` samples or ``B * K`` beams),
``K = num_beams``, ``P`` the padded prompt width, ``T = P + max_new_tokens``
the token buffer width and ``V`` the vocabulary size.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import flax.struct
import jax
import jax.numpy as jnp

from jaxmm import quantize
from jaxmm.generation import processors
from jaxmm.generation.config import DecodePlan, TracedSettings

Array = jax.Array

__all__ = ["BeamState", "LoopResult", "SamplingState", "compiled_decoder"]

_BIG = -1.0e9  # Hugging Face's "dead beam" score offset.


@flax.struct.dataclass
class SamplingState:
    """Loop state of greedy search and sampling.

    Attributes:
      step: ``()`` int32, new tokens chosen so far.
      tokens: ``(N, T)`` int32, the left-padded prompt in ``[:, :P]``, then the
        new tokens (``pad`` after a row's EOS and in columns not reached yet).
      cache: the model's KV cache (a pytree; each leaf has an ``N`` axis).
      done: ``(N,)`` bool, which rows have produced an EOS id.
      presence: ``(N, V)`` bool, ids seen in each row (repetition penalty), or ``None``.
      scores: ``(N, max_new_tokens, V)`` float32, the processed scores of every
        step (``output_scores``), or ``None``.
    """

    step: Array
    tokens: Array
    cache: Any
    done: Array
    presence: Array | None
    scores: Array | None


@flax.struct.dataclass
class BeamState:
    """Loop state of beam search (Hugging Face's vectorised bookkeeping).

    Attributes:
      step: ``()`` int32, new tokens chosen so far.
      running: ``(B, K, T)`` int32, the running beams (prompt, then new tokens).
      running_scores: ``(B, K)`` float32, their summed log-probabilities
        (``-1e9`` added to beams that must not be extended).
      finished: ``(B, K, T)`` int32, the best finished hypotheses, best first.
      finished_scores: ``(B, K)`` float32, their length-penalised scores
        (``-1e9`` for empty slots).
      finished_lengths: ``(B, K)`` int32, their generated lengths (EOS counted).
      is_finished: ``(B, K)`` bool, which ``finished`` slots hold a hypothesis.
      improvable: ``(B,)`` bool, whether a running beam of the input can still
        beat its worst finished hypothesis.
      active: ``()`` bool, whether the loop continues.
      cache: the model's KV cache, rows ordered as ``running`` flattened to ``N = B * K``.
      presence: ``(N, V)`` bool, ids seen in each running beam, or ``None``.
      scores: ``(N, max_new_tokens, V)`` float32, the processed log-probabilities
        of the running beams at every step (``output_scores``), or ``None``.
    """

    step: Array
    running: Array
    running_scores: Array
    finished: Array
    finished_scores: Array
    finished_lengths: Array
    is_finished: Array
    improvable: Array
    active: Array
    cache: Any
    presence: Array | None
    scores: Array | None


@flax.struct.dataclass
class LoopResult:
    """What the compiled program returns (``R`` returned rows: ``B *
    num_return_sequences``).

    Attributes:
      tokens: ``(R, T)`` int32, the token buffer; new tokens from column ``P``.
      steps: ``()`` int32, the number of new-token columns to keep.
      scores: ``(R or N, max_new_tokens, V)`` float32 or ``None`` (``output_scores``).
      scored_steps: ``()`` int32, the filled steps of ``scores`` when they
        differ from ``steps`` (beam search), else ``None``.
      sequences_scores: ``(R,)`` float32, beam search only: the hypotheses' scores.
      lengths: ``(R,)`` int32, beam search only: the hypotheses' generated lengths.
    """

    tokens: Array
    steps: Array
    scores: Array | None
    scored_steps: Array | None = None
    sequences_scores: Array | None = None
    lengths: Array | None = None


@dataclasses.dataclass(frozen=True, eq=False)
class _Run:
    """What every step of one traced run shares (trace-time constants).

    ``model_step(cache, feed, step)`` returns next-token logits ``(N, V)``
    float32 and the new cache after feeding ``feed`` ``(N, 1)``; ``prompt_width``
    is ``P``; ``start`` the first column of the caller's prompt.
    """

    plan: DecodePlan
    settings: TracedSettings
    rng: Array
    prompt_width: int
    start: Array
    model_step: Callable[[Any, Array, Array], tuple[Array, Any]]

    def process(self, scores: Array, tokens: Array, presence: Array | None, step: Array):
        return processors.process_scores(self.plan, self.settings, scores, tokens, presence,
                                         self.prompt_width + step, self.start, step)


# ---------------------------------------------------------------------------
# Model calls (the decoding protocol) and the KV cache
# ---------------------------------------------------------------------------


def _call(model, plan: DecodePlan, variables, ids, mask, positions, enc=None, enc_mask=None):
    """One ``decode=True`` call; returns ``(logits, cache)``. int8 params
    (:mod:`jaxmm.quantize`) are dequantized here, inside the compiled program."""
    variables = {**variables, "params": quantize.dequantize(variables["params"])}
    if plan.encoder_decoder:
        out, new_vars = model.apply(
            variables, ids, encoder_hidden_states=enc, encoder_attention_mask=enc_mask,
            decoder_attention_mask=mask, decoder_position_ids=positions, decode=True,
            mutable=["cache"], method="decode",
        )
    else:
        out, new_vars = model.apply(
            variables, ids, attention_mask=mask, position_ids=positions, decode=True,
            mutable=["cache"],
        )
    return out.logits, new_vars["cache"]


def _cache_shapes(model, plan, params, rows: int, length: int, enc):
    """Shapes of the KV cache for ``rows`` sequences of ``length`` slots."""
    ids = jax.ShapeDtypeStruct((rows, length), jnp.int32)
    enc_s = None
    if enc is not None:
        enc_s = jax.ShapeDtypeStruct((rows,) + enc.shape[1:], enc.dtype)
    enc_mask = None if enc is None else jax.ShapeDtypeStruct((rows, enc.shape[1]), jnp.int32)
    p = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), params)

    def init(p, ids, enc, enc_mask):
        return _call(model, plan, {"params": p}, ids, jnp.ones_like(ids), jnp.zeros_like(ids),
                     enc, enc_mask)[1]

    return jax.eval_shape(init, p, ids, enc_s, enc_mask)


def _batch_axes(shapes_a, shapes_b):
    """Per cache leaf, the axis that grows with the number of rows (-1: none)."""

    def axis(a, b):
        diff = [i for i, (x, y) in enumerate(zip(a.shape, b.shape)) if x != y]
        return diff[0] if diff else -1

    return jax.tree.map(axis, shapes_a, shapes_b)


def _reorder(cache, axes, index: Array):
    """Gathers cache rows ``index`` (beam reordering). Cross-attention keys and
    values are skipped: the beams of one input share them."""

    def take(path, x, ax):
        name = str(getattr(path[-1], "key", path[-1]))
        return x if ax < 0 or name.startswith("cross_") else jnp.take(x, index, axis=ax)

    return jax.tree_util.tree_map_with_path(take, cache, axes)


class _Prefilled(NamedTuple):
    """The prompt after prefill, repeated to ``N`` rows (``reps`` per input).

    ``cache``: KV cache holding all prompt tokens but the last; ``axes``: per
    cache leaf, its row axis (``None`` when ``reps == 1``); ``prompt``/
    ``prompt_mask`` ``(N, P)``; ``mask`` ``(N, T - 1)`` over the cache slots;
    ``enc_mask`` ``(N, S)`` or ``None``.
    """

    cache: Any
    axes: Any
    prompt: Array
    prompt_mask: Array
    mask: Array
    enc_mask: Array | None


def _prefill(model, plan: DecodePlan, params, prompt, prompt_mask, enc, enc_mask) -> _Prefilled:
    """Writes all prompt tokens but the last into a fresh cache (their logits are
    unused, so XLA drops the LM head); every loop iteration then feeds one token
    (first the prompt's last) and picks the next. The prompt is prefilled once
    per input, then its cache is copied to each beam / returned sample."""
    reps = plan.rows_per_input
    b, p = prompt.shape
    length = p + plan.max_new_tokens - 1  # cache slots: the last new token is never fed
    shapes = _cache_shapes(model, plan, params, b, length, enc)
    cache = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)
    mask = jnp.concatenate([prompt_mask, jnp.ones((b, length - p), jnp.int32)], 1)
    positions = jnp.where(prompt_mask > 0, jnp.cumsum(prompt_mask, 1) - 1, 0)
    _, cache = _call(model, plan, {"params": params, "cache": cache}, prompt[:, :-1], mask,
                     positions[:, :-1], enc, enc_mask)
    axes = None
    if reps > 1:
        axes = _batch_axes(shapes, _cache_shapes(model, plan, params, b + 1, length, enc))
        cache = jax.tree.map(lambda x, ax: x if ax < 0 else jnp.repeat(x, reps, axis=ax),
                             cache, axes)
        prompt, prompt_mask, mask = (
            jnp.repeat(x, reps, axis=0) for x in (prompt, prompt_mask, mask))
        if enc_mask is not None:
            enc_mask = jnp.repeat(enc_mask, reps, axis=0)
    return _Prefilled(cache, axes, prompt, prompt_mask, mask, enc_mask)


# ---------------------------------------------------------------------------
# The compiled program
# ---------------------------------------------------------------------------


@functools.lru_cache(maxsize=64)
def compiled_decoder(model, plan: DecodePlan) -> Callable[..., LoopResult]:
    """``jit``-compiled prefill + decode loop for one (model, plan) pair.

    The returned function takes ``(params, prompt, prompt_mask, start, enc,
    enc_mask, settings, rng)``: the left-padded prompt ``(B, P)`` and its mask
    (``P >= 2``), ``start`` the first column of the caller's prompt, the
    encoder output ``(B, S, E)`` and mask (``None`` for decoder-only models),
    the :class:`~jaxmm.generation.config.TracedSettings` and a PRNG key. It
    returns a :class:`LoopResult`.
    """

    def run(params, prompt, prompt_mask, start, enc, enc_mask, settings, rng) -> LoopResult:
        p = prompt.shape[1]
        rows = _prefill(model, plan, params, prompt, prompt_mask, enc, enc_mask)
        n = rows.prompt.shape[0]
        tokens = jnp.full((n, p + plan.max_new_tokens), settings.pad, jnp.int32)
        tokens = tokens.at[:, :p].set(rows.prompt)
        last_position = jnp.sum(rows.prompt_mask, 1) - 1  # position of the prompt's last token

        def model_step(cache, feed, step):
            """Next-token logits ``(N, V)`` after feeding ``feed`` ``(N, 1)`` at ``step``."""
            pos = (last_position + step)[:, None]
            logits, cache = _call(model, plan, {"params": params, "cache": cache}, feed,
                                  rows.mask, pos, None, rows.enc_mask)
            return logits[:, -1].astype(jnp.float32), cache

        vocab = jax.eval_shape(model_step, rows.cache, tokens[:, :1], 0)[0].shape[-1]
        presence = None
        if plan.use_repetition_penalty:
            # Hugging Face ignores the left padding (mask == 0 before the first 1).
            first = jnp.argmax(rows.prompt_mask != 0, axis=1)
            valid = jnp.arange(p)[None, :] >= first[:, None]
            presence = processors.token_presence(rows.prompt, valid, vocab)
        scores = None
        if plan.output_scores:
            scores = jnp.zeros((n, plan.max_new_tokens, vocab), jnp.float32)
        ctx = _Run(plan, settings, rng, p, start, model_step)
        if plan.num_beams > 1:
            return _beam_search(ctx, tokens, rows.cache, rows.axes, presence, scores)
        state = SamplingState(step=jnp.int32(0), tokens=tokens, cache=rows.cache,
                              done=jnp.zeros((n,), bool), presence=presence, scores=scores)
        return _greedy_or_sample(ctx, state)

    return jax.jit(run)


def _loop(ctx: _Run, state, select, active: Callable, feed: Callable):
    """``while active: run the model on the newest token; select the next ones``.

    ``select(state_with_new_cache, logits)`` returns the next state.
    """

    def body(s):
        logits, cache = ctx.model_step(s.cache, feed(s), s.step)
        return select(s.replace(cache=cache), logits)

    return jax.lax.while_loop(active, body, state)


def _record_scores(scores: Array | None, step_scores: Array, step: Array) -> Array | None:
    """Writes ``step_scores`` ``(N, V)`` at ``scores[:, step]`` (``None`` stays ``None``)."""
    if scores is None:
        return None
    return jax.lax.dynamic_update_slice_in_dim(scores, step_scores[:, None], step, 1)


# ---------------------------------------------------------------------------
# Greedy search and sampling
# ---------------------------------------------------------------------------


def _greedy_or_sample(ctx: _Run, state: SamplingState) -> LoopResult:
    plan, settings, p = ctx.plan, ctx.settings, ctx.prompt_width

    def choose(s: SamplingState, logits: Array) -> SamplingState:
        i = s.step
        sc = ctx.process(logits, s.tokens, s.presence, i)
        if plan.do_sample:
            token = jax.random.categorical(jax.random.fold_in(ctx.rng, i), sc).astype(jnp.int32)
        else:
            token = jnp.argmax(sc, axis=-1).astype(jnp.int32)
        token = jnp.where(s.done, settings.pad, token)
        tokens = jax.lax.dynamic_update_slice_in_dim(s.tokens, token[:, None], p + i, 1)
        return s.replace(step=i + 1, tokens=tokens,
                         done=s.done | processors.is_eos(plan, settings, token),
                         presence=processors.add_to_presence(s.presence, token),
                         scores=_record_scores(s.scores, sc, i))

    def active(s: SamplingState) -> Array:
        return (s.step < plan.max_new_tokens) & ~jnp.all(s.done)

    def feed(s: SamplingState) -> Array:
        return jax.lax.dynamic_slice_in_dim(s.tokens, p - 1 + s.step, 1, 1)

    state = _loop(ctx, state, choose, active, feed)
    return LoopResult(tokens=state.tokens, steps=state.step, scores=state.scores)


# ---------------------------------------------------------------------------
# Beam search (transformers 5 ``_beam_search``, vectorised), in named steps
# ---------------------------------------------------------------------------


def _gather(x: Array, idx: Array) -> Array:
    """``x`` ``(B, M, ...)`` indexed along axis 1 by ``idx`` ``(B, J)`` -> ``(B, J, ...)``."""
    return jnp.take_along_axis(x, idx.reshape(idx.shape + (1,) * (x.ndim - 2)), axis=1)


@flax.struct.dataclass
class _Candidates:
    """The ``C = max(2, 1 + num_eos) * K`` best extensions of one beam step.

    ``logp``: ``(N, V)`` processed log-probabilities of the running beams;
    ``scores``: ``(B, C)`` their summed log-probabilities, best first;
    ``source``: ``(B, C)`` the beam each extends; ``sequences``: ``(B, C, T)``;
    ``hits``: ``(B, C)`` whether each ends (EOS or the length limit).
    """

    logp: Array
    scores: Array
    source: Array
    sequences: Array
    hits: Array


def _beam_candidates(ctx: _Run, s: BeamState, logits: Array) -> _Candidates:
    """Scores every extension of every running beam; keeps the best ``C``."""
    plan, p, i = ctx.plan, ctx.prompt_width, s.step
    b, k, total = s.running.shape
    keep = max(2, 1 + plan.num_eos) * k
    logp = jax.nn.log_softmax(logits, axis=-1)
    logp = ctx.process(logp, s.running.reshape(b * k, total), s.presence, i)
    vocab = logp.shape[-1]
    acc = (logp.reshape(b, k, vocab) + s.running_scores[:, :, None]).reshape(b, k * vocab)
    if plan.do_sample:  # k-sample without replacement = top-k of Gumbel-perturbed scores
        noise = jax.random.gumbel(jax.random.fold_in(ctx.rng, i), acc.shape)
        idx = jax.lax.top_k(acc + noise, keep)[1]
        scores = jnp.take_along_axis(acc, idx, axis=1)
    else:
        scores, idx = jax.lax.top_k(acc, keep)
    source, token = idx // vocab, (idx % vocab).astype(jnp.int32)
    sequences = _gather(s.running, source)
    sequences = jax.lax.dynamic_update_slice_in_dim(sequences, token[:, :, None], p + i, 2)
    hits = processors.is_eos(plan, ctx.settings, token) | (i + 1 >= plan.max_new_tokens)
    return _Candidates(logp, scores, source, sequences, hits)


def _next_running(s: BeamState, cand: _Candidates) -> tuple[Array, Array, Array]:
    """The best ``K`` candidates that did not stop: ``(running (B, K, T),
    running_scores (B, K), source (B, K))``."""
    k = s.running.shape[1]
    scores = cand.scores + cand.hits.astype(jnp.float32) * _BIG
    top = jax.lax.top_k(scores, k)[1]
    return _gather(cand.sequences, top), _gather(scores, top), _gather(cand.source, top)


def _merge_finished(ctx: _Run, s: BeamState, cand: _Candidates) -> BeamState:
    """Adds the candidates that end among the top ``K`` to the finished
    hypotheses, keeping the ``K`` best (length-penalised) per input."""
    b, k = s.finished_scores.shape
    keep = cand.scores.shape[1]
    length_penalty = ctx.settings.length_penalty
    early_true = ctx.plan.early_stopping is True
    just_done = cand.hits & (jnp.arange(keep) < k)[None, :]
    length = (s.step + 1).astype(jnp.float32)
    fin = cand.scores / length ** length_penalty
    full = jnp.all(s.is_finished, axis=1, keepdims=True) & early_true
    fin = fin + full.astype(jnp.float32) * _BIG
    fin = fin + (~s.improvable)[:, None].astype(jnp.float32) * _BIG
    fin = fin + (~just_done).astype(jnp.float32) * _BIG
    merged_scores = jnp.concatenate([s.finished_scores, fin], 1)
    best = jax.lax.top_k(merged_scores, k)[1]
    lengths = jnp.concatenate([s.finished_lengths, jnp.broadcast_to(s.step + 1, (b, keep))], 1)
    return s.replace(
        finished=_gather(jnp.concatenate([s.finished, cand.sequences], 1), best),
        finished_scores=_gather(merged_scores, best),
        finished_lengths=_gather(lengths, best),
        is_finished=_gather(jnp.concatenate([s.is_finished, just_done], 1), best),
    )


def _still_searching(ctx: _Run, s: BeamState, hits: Array) -> tuple[Array, Array]:
    """``(improvable (B,), active ())``: can any running beam still beat the
    worst finished hypothesis, and does the loop go on."""
    plan, length_penalty = ctx.plan, ctx.settings.length_penalty
    early_true, never = plan.early_stopping is True, plan.early_stopping == "never"
    best_len = jnp.where(never & (length_penalty > 0), plan.max_new_tokens, s.step + 1)
    best_possible = s.running_scores[:, :1] / best_len.astype(jnp.float32) ** length_penalty
    worst = jnp.where(s.is_finished, jnp.min(s.finished_scores, axis=1, keepdims=True), _BIG)
    improvable = s.improvable & jnp.any(best_possible > worst, axis=1)
    active = jnp.any(improvable) & ~(jnp.all(s.is_finished) & early_true) & ~jnp.all(hits)
    return improvable, active


def _beam_step(ctx: _Run, axes, s: BeamState, logits: Array) -> BeamState:
    """One beam-search step: candidates, running beams, finished hypotheses,
    cache reordering, stopping test."""
    b, k, _ = s.running.shape
    i, p = s.step, ctx.prompt_width
    cand = _beam_candidates(ctx, s, logits)
    running, running_scores, source = _next_running(s, cand)
    s = _merge_finished(ctx, s, cand)
    # Reorder the cache (and penalty state) to follow the surviving beams.
    flat_source = (jnp.arange(b)[:, None] * k + source).reshape(b * k)
    presence = s.presence
    if presence is not None:
        presence = processors.add_to_presence(presence[flat_source],
                                               running[:, :, p + i].reshape(b * k))
    s = s.replace(running=running, running_scores=running_scores,
                  cache=_reorder(s.cache, axes, flat_source), presence=presence,
                  scores=_record_scores(s.scores, cand.logp, i))
    improvable, active = _still_searching(ctx, s, cand.hits)
    return s.replace(step=i + 1, improvable=improvable, active=active)


def _beam_search(ctx: _Run, tokens: Array, cache, axes, presence, scores) -> LoopResult:
    """Hugging Face's vectorised beam search (transformers 5 ``_beam_search``)."""
    plan, p = ctx.plan, ctx.prompt_width
    k = plan.num_beams
    n, total = tokens.shape
    b = n // k
    beams = tokens.reshape(b, k, total)
    state = BeamState(
        step=jnp.int32(0), running=beams,
        running_scores=jnp.zeros((b, k), jnp.float32).at[:, 1:].set(_BIG),
        finished=beams, finished_scores=jnp.full((b, k), _BIG, jnp.float32),
        finished_lengths=jnp.zeros((b, k), jnp.int32), is_finished=jnp.zeros((b, k), bool),
        improvable=jnp.ones((b,), bool), active=jnp.bool_(True), cache=cache,
        presence=presence, scores=scores,
    )

    def feed(s: BeamState) -> Array:
        return jax.lax.dynamic_slice_in_dim(s.running, p - 1 + s.step, 1, 2).reshape(n, 1)

    state = _loop(ctx, state, functools.partial(_beam_step, ctx, axes),
                  lambda s: s.active, feed)
    r = plan.num_return_sequences
    lengths = state.finished_lengths[:, :r].reshape(-1)
    return LoopResult(tokens=state.finished[:, :r].reshape(b * r, total),
                      steps=jnp.max(lengths), scores=state.scores, scored_steps=state.step,
                      sequences_scores=state.finished_scores[:, :r].reshape(-1),
                      lengths=lengths)
