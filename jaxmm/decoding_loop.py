"""The compiled generation program: prefill, then a ``lax.while_loop`` of
model step + token selection (greedy, sampling or beam search).

Used by :func:`jaxmm.decoding.generate`, which prepares and checks the inputs.
One program is compiled per (model, :class:`DecodePlan`) and per input shapes;
the float settings (temperature, top_p, penalties, EOS/pad ids) are traced
inputs, so changing them does not recompile.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp

from jaxmm import logits_processors as lp

Array = jax.Array

__all__ = ["DecodePlan", "compiled_decoder"]

_BIG = -1.0e9  # Hugging Face's "dead beam" score offset.


@dataclasses.dataclass(frozen=True)
class DecodePlan:
    """Static settings: each distinct value compiles its own program."""

    encoder_decoder: bool
    max_new_tokens: int
    num_beams: int
    num_return_sequences: int
    do_sample: bool
    top_k: int
    use_top_p: bool
    use_temperature: bool
    use_repetition_penalty: bool
    no_repeat_ngram_size: int
    num_eos: int
    early_stopping: bool | str
    output_scores: bool

    @property
    def rows_per_input(self) -> int:
        return self.num_beams if self.num_beams > 1 else self.num_return_sequences


# ---------------------------------------------------------------------------
# Model calls (the decoding protocol)
# ---------------------------------------------------------------------------


def _call(model, plan: DecodePlan, variables, ids, mask, positions, enc=None, enc_mask=None):
    """One ``decode=True`` call; returns ``(logits, cache)``."""
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


# ---------------------------------------------------------------------------
# Processors (Hugging Face order)
# ---------------------------------------------------------------------------


def _process(plan: DecodePlan, knobs, scores, tokens, presence, length, start, step):
    """Logits processors, then (when sampling) warpers, on ``(N, V)`` scores."""
    v = scores.shape[-1]
    if plan.use_repetition_penalty:
        scores = lp.repetition_penalty(scores, presence, knobs["repetition_penalty"])
    if plan.no_repeat_ngram_size:
        banned = lp.no_repeat_ngram_mask(tokens, length, start, plan.no_repeat_ngram_size, v)
        scores = jnp.where(banned, -jnp.inf, scores)
    if plan.num_eos:
        scores = lp.suppress_tokens(scores, knobs["eos"], step < knobs["min_new_tokens"])
    if plan.do_sample:
        keep = plan.num_eos + 1 if plan.num_beams > 1 else 1
        if plan.use_temperature:
            scores = lp.temperature(scores, knobs["temperature"])
        if plan.top_k:
            scores = lp.top_k_filter(scores, plan.top_k, keep)
        if plan.use_top_p:
            scores = lp.top_p_filter(scores, knobs["top_p"], keep)
    return scores


def _is_eos(plan, knobs, tokens):
    if not plan.num_eos:
        return jnp.zeros(tokens.shape, bool)
    return (tokens[..., None] == knobs["eos"]).any(-1)


def _add_presence(presence, tokens):
    if presence is None:
        return None
    rows = jnp.arange(presence.shape[0])
    return presence.at[rows, jnp.minimum(tokens, presence.shape[1] - 1)].set(True)


# ---------------------------------------------------------------------------
# The compiled program
# ---------------------------------------------------------------------------


@functools.lru_cache(maxsize=64)
def compiled_decoder(model, plan: DecodePlan):
    """``jit``-compiled prefill + decode loop for one (model, settings) pair.

    The returned function takes ``(params, prompt, prompt_mask, start, enc,
    enc_mask, knobs, rng)``: the left-padded prompt ``(B, P)`` and its mask
    (``P >= 2``), ``start`` the first column of the caller's prompt, the
    encoder output ``(B, S, E)`` and mask (``None`` for decoder-only models),
    ``knobs`` the traced settings (``temperature``, ``top_p``,
    ``repetition_penalty``, ``length_penalty``, ``min_new_tokens``, ``eos``
    ``(num_eos,)``, ``pad``) and a PRNG key. It returns a dict with ``tokens``
    ``(rows, P + max_new_tokens)`` (new tokens from column ``P``), ``steps``
    (new tokens to keep) and ``scores``; beam search adds ``sequences_scores``,
    ``lengths`` (each hypothesis' generated length) and ``scored_steps``.
    """

    def run(params, prompt, prompt_mask, start, enc, enc_mask, knobs, rng):
        # The prefill writes all prompt tokens but the last into the cache (its
        # logits are unused, so XLA drops the LM head); every loop iteration then
        # feeds one token (first the prompt's last) and picks the next.
        # The prompt is prefilled once per input, then its cache is copied to
        # each beam / returned sample.
        reps = plan.rows_per_input
        b, p = prompt.shape
        width = p + plan.max_new_tokens  # token buffer: prompt + new tokens
        length = width - 1  # cache slots: the last new token is never fed
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
        n = b * reps
        tokens = jnp.full((n, width), knobs["pad"], jnp.int32).at[:, :p].set(prompt)
        last_position = jnp.sum(prompt_mask, 1) - 1  # position id of the prompt's last token

        def model_step(cache, feed, step):
            """Next-token logits ``(n, V)`` after feeding ``feed`` ``(n, 1)`` at ``step``."""
            pos = (last_position + step)[:, None]
            logits, cache = _call(model, plan, {"params": params, "cache": cache}, feed, mask,
                                  pos, None, enc_mask)
            return logits[:, -1].astype(jnp.float32), cache

        vocab = jax.eval_shape(model_step, cache, tokens[:, :1], 0)[0].shape[-1]
        presence = None
        if plan.use_repetition_penalty:
            # Hugging Face ignores the left padding (mask == 0 before the first 1).
            first = jnp.argmax(prompt_mask != 0, axis=1)
            valid = jnp.arange(p)[None, :] >= first[:, None]
            presence = lp.token_presence(prompt, valid, vocab)
        scores = None
        if plan.output_scores:
            scores = jnp.zeros((n, plan.max_new_tokens, vocab), jnp.float32)

        common = dict(p=p, start=start, knobs=knobs, rng=rng, model_step=model_step)
        state = dict(i=jnp.int32(0), tokens=tokens, cache=cache, presence=presence,
                     scores=scores)
        if plan.num_beams > 1:
            return _beam_search(plan, state, axes, **common)
        return _greedy_or_sample(plan, state, **common)

    return jax.jit(run)


def _loop(state, select, active, feed, model_step):
    """``while active: run the model on the newest token; select the next ones``."""

    def body(s):
        logits, cache = model_step(s["cache"], feed(s), s["i"])
        out = select(dict(s, logits=logits, cache=cache))
        del out["logits"]
        return out

    return jax.lax.while_loop(active, body, state)


def _greedy_or_sample(plan: DecodePlan, state, *, p, start, knobs, rng, model_step):
    n = state["tokens"].shape[0]
    state = dict(state, done=jnp.zeros((n,), bool))

    def choose(s):
        i = s["i"]
        sc = _process(plan, knobs, s["logits"], s["tokens"], s["presence"], p + i, start, i)
        if plan.do_sample:
            token = jax.random.categorical(jax.random.fold_in(rng, i), sc).astype(jnp.int32)
        else:
            token = jnp.argmax(sc, axis=-1).astype(jnp.int32)
        token = jnp.where(s["done"], knobs["pad"], token)
        tokens = jax.lax.dynamic_update_slice_in_dim(s["tokens"], token[:, None], p + i, 1)
        out = dict(s, i=i + 1, tokens=tokens, done=s["done"] | _is_eos(plan, knobs, token),
                   presence=_add_presence(s["presence"], token))
        if plan.output_scores:
            out["scores"] = jax.lax.dynamic_update_slice_in_dim(s["scores"], sc[:, None], i, 1)
        return out

    def active(s):
        return (s["i"] < plan.max_new_tokens) & ~jnp.all(s["done"])

    def feed(s):
        return jax.lax.dynamic_slice_in_dim(s["tokens"], p - 1 + s["i"], 1, 1)

    state = _loop(state, choose, active, feed, model_step)
    return dict(tokens=state["tokens"], steps=state["i"], scores=state["scores"])


def _beam_search(plan: DecodePlan, state, axes, *, p, start, knobs, rng, model_step):
    """Hugging Face's vectorised beam search (transformers 5 ``_beam_search``)."""
    k = plan.num_beams
    n, total = state["tokens"].shape
    b = n // k
    keep = max(2, 1 + plan.num_eos) * k  # candidates kept per step
    length_penalty = knobs["length_penalty"]
    early_true = plan.early_stopping is True
    never = plan.early_stopping == "never"
    state = dict(
        state,
        running=state["tokens"].reshape(b, k, total),
        run_scores=jnp.zeros((b, k), jnp.float32).at[:, 1:].set(_BIG),
        finished=state["tokens"].reshape(b, k, total),
        fin_scores=jnp.full((b, k), _BIG, jnp.float32),
        fin_lengths=jnp.zeros((b, k), jnp.int32),
        is_fin=jnp.zeros((b, k), bool),
        improvable=jnp.ones((b,), bool),
        go=jnp.bool_(True),
    )
    del state["tokens"]

    def gather(x, idx):  # x (b, m, ...), idx (b, j) -> (b, j, ...)
        return jnp.take_along_axis(x, idx.reshape(idx.shape + (1,) * (x.ndim - 2)), axis=1)

    def step(s):
        i = s["i"]
        flat = s["running"].reshape(n, total)
        logp = jax.nn.log_softmax(s["logits"], axis=-1)
        logp = _process(plan, knobs, logp, flat, s["presence"], p + i, start, i)
        vocab = logp.shape[-1]
        acc = (logp.reshape(b, k, vocab) + s["run_scores"][:, :, None]).reshape(b, k * vocab)
        if plan.do_sample:  # k-sample without replacement = top-k of Gumbel-perturbed scores
            noise = jax.random.gumbel(jax.random.fold_in(rng, i), acc.shape)
            idx = jax.lax.top_k(acc + noise, keep)[1]
            cand_scores = jnp.take_along_axis(acc, idx, axis=1)
        else:
            cand_scores, idx = jax.lax.top_k(acc, keep)
        src, token = idx // vocab, (idx % vocab).astype(jnp.int32)
        cand = gather(s["running"], src)
        cand = jax.lax.dynamic_update_slice_in_dim(cand, token[:, :, None], p + i, 2)
        hits = _is_eos(plan, knobs, token) | (i + 1 >= plan.max_new_tokens)

        # Running beams for the next step: the best k candidates that did not stop.
        run_cand = cand_scores + hits.astype(jnp.float32) * _BIG
        top = jax.lax.top_k(run_cand, k)[1]
        running, run_scores, run_src = gather(cand, top), gather(run_cand, top), gather(src, top)

        # Finished hypotheses: only the top-k candidates may finish.
        just_done = hits & (jnp.arange(keep) < k)[None, :]
        length = (i + 1).astype(jnp.float32)
        fin = cand_scores / length ** length_penalty
        full = jnp.all(s["is_fin"], axis=1, keepdims=True) & early_true
        fin = fin + full.astype(jnp.float32) * _BIG
        fin = fin + (~s["improvable"])[:, None].astype(jnp.float32) * _BIG
        fin = fin + (~just_done).astype(jnp.float32) * _BIG
        merged_scores = jnp.concatenate([s["fin_scores"], fin], 1)
        best = jax.lax.top_k(merged_scores, k)[1]
        finished = gather(jnp.concatenate([s["finished"], cand], 1), best)
        fin_scores = gather(merged_scores, best)
        fin_lengths = gather(jnp.concatenate(
            [s["fin_lengths"], jnp.broadcast_to(i + 1, (b, keep))], 1), best)
        is_fin = gather(jnp.concatenate([s["is_fin"], just_done], 1), best)

        # Reorder the cache (and penalty state) to follow the surviving beams.
        flat_src = (jnp.arange(b)[:, None] * k + run_src).reshape(n)
        cache = _reorder(s["cache"], axes, flat_src)
        presence = s["presence"]
        if presence is not None:
            presence = _add_presence(presence[flat_src], running[:, :, p + i].reshape(n))

        # Can any running beam still beat the worst finished one?
        best_len = jnp.where(never & (length_penalty > 0), plan.max_new_tokens, i + 1)
        best_possible = run_scores[:, :1] / best_len.astype(jnp.float32) ** length_penalty
        worst = jnp.where(is_fin, jnp.min(fin_scores, axis=1, keepdims=True), _BIG)
        improvable = s["improvable"] & jnp.any(best_possible > worst, axis=1)
        go = jnp.any(improvable) & ~(jnp.all(is_fin) & early_true) & ~jnp.all(hits)
        out = dict(s, i=i + 1, running=running, run_scores=run_scores, finished=finished,
                   fin_scores=fin_scores, fin_lengths=fin_lengths, is_fin=is_fin,
                   improvable=improvable, go=go, cache=cache, presence=presence)
        if plan.output_scores:
            out["scores"] = jax.lax.dynamic_update_slice_in_dim(s["scores"], logp[:, None], i, 1)
        return out

    def feed(s):
        return jax.lax.dynamic_slice_in_dim(s["running"], p - 1 + s["i"], 1, 2).reshape(n, 1)

    state = _loop(state, step, lambda s: s["go"], feed, model_step)
    r = plan.num_return_sequences
    lengths = state["fin_lengths"][:, :r].reshape(-1)
    return dict(tokens=state["finished"][:, :r].reshape(b * r, total), steps=jnp.max(lengths),
                scores=state["scores"], scored_steps=state["i"],
                sequences_scores=state["fin_scores"][:, :r].reshape(-1),
                lengths=lengths)

