"""jaxmm.generate on tiny protocol models: KV cache, sampling, stopping, scores, errors.

References are independent of the decoding loop: full (cache-free) forward
passes over each prefix, and NumPy computations of the allowed token sets.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxmm
from jaxmm import generation
from tests.generation.toy_decoders import TRACES, ToyConfig, ToyLM, ToySeq2Seq

CFG = ToyConfig()


def _prompts(lengths, total=None, seed=0):
    """Left-padded random prompts (ids >= 3, pad 0) and their mask."""
    rng = np.random.default_rng(seed)
    total = total or max(lengths)
    ids = np.zeros((len(lengths), total), np.int32)
    mask = np.zeros_like(ids)
    for r, n in enumerate(lengths):
        ids[r, total - n:] = rng.integers(3, CFG.vocab_size, size=n)
        mask[r, total - n:] = 1
    return ids, mask


@jax.jit
def _lm_forward(params, ids, mask):
    pos = jnp.where(mask > 0, jnp.cumsum(mask, 1) - 1, 0)
    return ToyLM(CFG).apply({"params": params}, ids, attention_mask=mask, position_ids=pos).logits


def step_logits(model, params, seq, prompt_mask):
    """``(N, n, V)``: for each new token of ``seq``, the logits that chose it,
    from one cache-free causal forward pass over the whole sequence (position
    ``j`` sees exactly the prefix ``[:j+1]``, as recomputing each step would)."""
    p = prompt_mask.shape[1]
    mask = np.concatenate([prompt_mask, np.ones((len(seq), seq.shape[1] - p), np.int32)], 1)
    return np.asarray(_lm_forward(params, seq, mask))[:, p - 1: -1]


@jax.jit
def _s2s_forward(params, enc_ids, enc_mask, dec_ids):
    model = ToySeq2Seq(CFG)
    enc = model.apply({"params": params}, enc_ids, enc_mask, method="encode").last_hidden_state
    return model.apply({"params": params}, dec_ids, enc, enc_mask, method="decode").logits


def s2s_step_logits(params, enc_ids, enc_mask, dec_ids):
    return np.asarray(_s2s_forward(params, enc_ids, enc_mask, dec_ids))[:, :-1]


GREEDY = dict(max_new_tokens=8, eos_token_id=[], output_scores=True)  # one shared program


# ---------------------------------------------------------------------------
# KV cache vs recomputation
# ---------------------------------------------------------------------------


@pytest.mark.slow
def test_greedy_with_cache_equals_recomputing_prefix(lm):
    model, params = lm
    ids, mask = _prompts([3, 5, 7, 2])
    out = jaxmm.generate(model, params, ids, mask, **GREEDY)
    seq = np.asarray(out.sequences)
    np.testing.assert_array_equal(seq[:, :7], ids)
    ref = step_logits(model, params, seq, mask)
    np.testing.assert_array_equal(ref.argmax(-1), seq[:, 7:])
    np.testing.assert_allclose(np.asarray(out.scores), ref, rtol=1e-4, atol=1e-4)


@pytest.mark.slow
def test_encoder_decoder_greedy_equals_recomputing_prefix(s2s):
    model, params = s2s
    enc_ids, enc_mask = _prompts([4, 6, 3], seed=1)
    enc_mask = enc_mask[:, ::-1].copy()  # right padding for the encoder
    enc_ids = np.where(enc_mask > 0, enc_ids[:, ::-1], 0)
    out = jaxmm.generate(model, params, enc_ids, enc_mask, **GREEDY)
    seq = np.asarray(out.sequences)
    assert (seq[:, 0] == CFG.decoder_start_token_id).all() and seq.shape == (3, 9)
    ref = s2s_step_logits(params, enc_ids, enc_mask, seq)
    np.testing.assert_array_equal(ref.argmax(-1), seq[:, 1:])
    np.testing.assert_allclose(np.asarray(out.scores), ref, rtol=1e-4, atol=1e-4)
    # The same from a precomputed encoder output.
    enc = jax.jit(lambda p, i, m: model.apply({"params": p}, i, m, method="encode"))(
        params, enc_ids, enc_mask)
    again = jaxmm.generate(model, params, encoder_outputs=enc, encoder_attention_mask=enc_mask,
                           **GREEDY)
    np.testing.assert_array_equal(np.asarray(again.sequences), seq)
    # And from encode() keyword arguments (mask inside), unpadded encoder tokens.
    again = jaxmm.generate(model, params, encoder_inputs=dict(input_ids=enc_ids,
                                                              attention_mask=enc_mask), **GREEDY)
    np.testing.assert_array_equal(np.asarray(again.sequences), seq)


def test_right_padded_prompts_are_left_aligned(lm):
    model, params = lm
    ids, mask = _prompts([3, 6])
    right_ids = np.zeros_like(ids)
    right_mask = np.zeros_like(mask)
    for r in range(2):
        n = mask[r].sum()
        right_ids[r, :n] = ids[r, -n:]
        right_mask[r, :n] = 1
    a = jaxmm.generate(model, params, ids, mask, **GREEDY)
    b = jaxmm.generate(model, params, right_ids, right_mask, **GREEDY)
    np.testing.assert_array_equal(np.asarray(a.sequences), np.asarray(b.sequences))


def test_no_retrace_within_a_length_bucket(lm):
    model, params = lm
    jaxmm.generate(model, params, *_prompts([5, 3]), **GREEDY)
    before = TRACES["lm"]
    for lengths in ([7, 2], [8, 1], [6, 6]):  # all in the bucket of 8
        jaxmm.generate(model, params, *_prompts(lengths, seed=len(lengths)), **GREEDY)
    assert TRACES["lm"] == before
    jaxmm.generate(model, params, *_prompts([9, 2]), **GREEDY)  # next bucket: 16
    assert TRACES["lm"] > before
    assert generation.prompt_bucket(5) == 8 and generation.prompt_bucket(129) == 256
    assert generation.prompt_bucket(5, 16) == 16 and generation.prompt_bucket(33, 16) == 48


# ---------------------------------------------------------------------------
# Sampling
# ---------------------------------------------------------------------------


def _allowed(logits, temperature, top_k, top_p):
    """NumPy: tokens that survive temperature -> top-k -> top-p (HF semantics)."""
    x = logits.astype(np.float64) / temperature
    keep = np.ones_like(x, bool)
    if top_k:
        kth = np.sort(x)[::-1][top_k - 1]
        keep &= x >= kth
    if top_p < 1.0:
        y = np.where(keep, x, -np.inf)
        order = np.argsort(y, kind="stable")
        probs = np.exp(y[order] - y.max())
        cum = np.cumsum(probs / probs.sum())
        removed = cum <= 1 - top_p
        removed[-1] = False
        keep[order[removed]] = False
    return keep


SAMPLE = dict(max_new_tokens=8, do_sample=True, temperature=1.5, num_return_sequences=3,
              eos_token_id=[])


@pytest.mark.parametrize("top_k,top_p", [(4, 1.0), (0, 0.6), (6, 0.8)])
def test_sampling_stays_in_top_k_top_p_set(lm, top_k, top_p):
    model, params = lm
    ids, mask = _prompts([4, 6])
    out = jaxmm.generate(model, params, ids, mask, top_k=top_k, top_p=top_p,
                         rng=jax.random.key(7), **SAMPLE)
    seq = np.asarray(out.sequences)
    logits = step_logits(model, params, seq, np.repeat(mask, 3, axis=0))
    sizes = []
    for r in range(len(seq)):
        for t in range(8):
            allowed = _allowed(logits[r, t], 1.5, top_k, top_p)
            sizes.append(allowed.sum())
            assert allowed[seq[r, 6 + t]], (r, t, seq[r, 6 + t], np.flatnonzero(allowed))
    assert max(sizes) < CFG.vocab_size  # the filters actually removed tokens
    assert len({tuple(s) for s in seq}) > 1  # and sampling varied


def test_sampling_is_reproducible_and_top_k_1_is_greedy(lm):
    model, params = lm
    ids, mask = _prompts([4, 6])
    kw = dict(SAMPLE, top_k=4)
    a = jaxmm.generate(model, params, ids, mask, rng=3, **kw).sequences
    b = jaxmm.generate(model, params, ids, mask, rng=3, **kw).sequences
    c = jaxmm.generate(model, params, ids, mask, rng=4, **kw).sequences
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert not np.array_equal(np.asarray(a), np.asarray(c))
    one = jaxmm.generate(model, params, ids, mask, max_new_tokens=8, do_sample=True, top_k=1,
                         eos_token_id=[], rng=5).sequences
    greedy = jaxmm.generate(model, params, ids, mask, **GREEDY).sequences
    np.testing.assert_array_equal(np.asarray(one), np.asarray(greedy))


# ---------------------------------------------------------------------------
# Stopping, padding, several EOS ids, scores
# ---------------------------------------------------------------------------


@pytest.mark.slow
def test_multiple_eos_pad_after_eos_and_early_exit(lm):
    model, params = lm
    ids, mask = _prompts([3, 5, 4])
    free = np.asarray(jaxmm.generate(model, params, ids, mask, **GREEDY).sequences)[:, 5:]
    # EOS ids: row 0's 3rd new token and row 1's 2nd (row 2 stops at whichever comes first).
    eos = [int(free[0, 2]), int(free[1, 1])]
    out = np.asarray(jaxmm.generate(model, params, ids, mask, max_new_tokens=8,
                                    eos_token_id=eos, pad_token_id=60).sequences)
    new = out[:, 5:]
    stops = []
    for r in range(3):
        hit = np.flatnonzero(np.isin(free[r], eos))
        stop = hit[0] + 1 if hit.size else 8
        stops.append(stop)
        np.testing.assert_array_equal(new[r, :stop], free[r, :stop])
        assert (new[r, stop:] == 60).all()
    assert new.shape[1] == max(stops) < 8  # the loop ended once every row was done


def test_min_new_tokens_suppresses_eos(lm):
    model, params = lm
    ids, mask = _prompts([3, 5])
    free = np.asarray(jaxmm.generate(model, params, ids, mask, **GREEDY).sequences)[:, 5:]
    eos = int(free[0, 0])  # row 0 would stop at once
    short = np.asarray(jaxmm.generate(model, params, ids, mask, max_new_tokens=8,
                                      eos_token_id=eos).sequences)[:, 5:]
    assert short[0, 0] == eos and (short[0, 1:] == CFG.pad_token_id).all()
    out = np.asarray(jaxmm.generate(model, params, ids, mask, max_new_tokens=8,
                                    min_new_tokens=4, eos_token_id=eos).sequences)[:, 5:]
    assert (out[:, :4] != eos).all() and out.shape[1] > 1


def test_scores_are_processed_logits(lm):
    model, params = lm
    ids, mask = _prompts([3, 5])
    out = jaxmm.generate(model, params, ids, mask, repetition_penalty=1.5, **GREEDY)
    seq, scores = np.asarray(out.sequences), np.asarray(out.scores)
    assert scores.shape == (2, 8, CFG.vocab_size)
    logits = step_logits(model, params, seq, mask)
    for r in range(2):
        for t in range(8):  # CTRL penalty on every token seen so far (left padding excluded)
            seen = np.unique(seq[r, : 5 + t][np.concatenate([mask[r], np.ones(t, int)]) > 0])
            x = logits[r, t].copy()
            x[seen] = np.where(x[seen] < 0, x[seen] * 1.5, x[seen] / 1.5)
            np.testing.assert_allclose(scores[r, t], x, rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(scores.argmax(-1), seq[:, 5:])


@pytest.mark.slow
def test_beam_search_returns_sorted_hypotheses_with_correct_scores(s2s):
    model, params = s2s
    enc_ids, enc_mask = _prompts([5, 3], seed=2)
    eos = [5, 9]
    out = jaxmm.generate(model, params, enc_ids, enc_mask, max_new_tokens=6, num_beams=4,
                         num_return_sequences=3, length_penalty=0.7, eos_token_id=eos)
    seq, sc = np.asarray(out.sequences), np.asarray(out.sequences_scores)
    assert seq.shape[0] == 6 and sc.shape == (6,)
    for b in range(2):
        assert (np.diff(sc[3 * b: 3 * b + 3]) <= 1e-6).all()  # best first
        assert len({tuple(s) for s in seq[3 * b: 3 * b + 3]}) == 3
    logits = s2s_step_logits(params, np.repeat(enc_ids, 3, 0), np.repeat(enc_mask, 3, 0), seq)
    logp = jax.nn.log_softmax(jnp.asarray(logits, jnp.float32), axis=-1)
    for r in range(6):
        tokens = seq[r, 1:]
        hit = np.flatnonzero(np.isin(tokens, eos))
        n = hit[0] + 1 if hit.size else len(tokens)
        assert (tokens[n:] == CFG.pad_token_id).all()
        total = float(np.sum(np.asarray(logp)[r, np.arange(n), tokens[:n]]))
        # sum of log-probs / (generated length, EOS included) ** length_penalty
        np.testing.assert_allclose(sc[r], total / n ** 0.7, rtol=1e-4, atol=1e-4)


@pytest.mark.slow
def test_beam_search_with_scanned_layers(lm):
    """Scanned stacks keep the cache with a leading layer axis; beams are
    reordered along the batch axis wherever it is."""
    import dataclasses

    import flax.linen as nn

    from jaxmm.layers import stack_layer_params

    model, params = lm
    params = nn.meta.unbox(params)
    scanned = ToyLM(dataclasses.replace(CFG, scan_layers=True))
    stacked = dict(params, decoder=stack_layer_params(params["decoder"], CFG.num_layers))
    ids, mask = _prompts([4, 2])
    kw = dict(max_new_tokens=6, num_beams=3, num_return_sequences=2, repetition_penalty=1.2)
    a = jaxmm.generate(model, params, ids, mask, **kw)
    b = jaxmm.generate(scanned, stacked, ids, mask, **kw)
    np.testing.assert_array_equal(np.asarray(a.sequences), np.asarray(b.sequences))
    np.testing.assert_allclose(np.asarray(a.sequences_scores), np.asarray(b.sequences_scores),
                               rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_beam_sampling_respects_top_k(lm):
    model, params = lm
    ids, mask = _prompts([4, 2])
    out = jaxmm.generate(model, params, ids, mask, max_new_tokens=8, num_beams=3,
                         do_sample=True, top_k=2, rng=1, eos_token_id=[])
    seq = np.asarray(out.sequences)
    assert seq.shape == (2, 12) and np.isfinite(np.asarray(out.sequences_scores)).all()
    # Each beam token is among the top-2 (min_tokens_to_keep=1 without EOS) of its step.
    logits = step_logits(model, params, seq, mask)
    rank = (logits > np.take_along_axis(logits, seq[:, 4:, None], -1)).sum(-1)
    assert (rank < 2).all()


# ---------------------------------------------------------------------------
# Bad inputs
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(num_beams=0), "num_beams must be an int >= 1"),
        (dict(num_beams=2, num_return_sequences=3), "cannot exceed num_beams"),
        (dict(num_return_sequences=2), "Greedy search returns one sequence"),
        (dict(do_sample=True, top_p=0.0, rng=0), r"top_p must be in \(0, 1\]"),
        (dict(do_sample=True, top_p=1.5, rng=0), r"top_p must be in \(0, 1\]"),
        (dict(do_sample=True, temperature=0.0, rng=0), "temperature must be a float > 0"),
        (dict(do_sample=True), "needs rng="),
        (dict(top_k=-1), "top_k must be an int >= 0"),
        (dict(max_new_tokens=0), "max_new_tokens must be an int >= 1"),
        (dict(min_new_tokens=2, eos_token_id=[]), "no eos_token_id is set"),
        (dict(repetition_penalty=0.0), "repetition_penalty must be > 0"),
        (dict(early_stopping="sometimes"), "early_stopping must be True, False or 'never'"),
        (dict(max_new_tokens=61), "more than the model's maximum of 64"),
        (dict(attention_mask=np.zeros((2, 4), np.int32)), r"row\(s\) \[0, 1\] are all padding"),
        (dict(attention_mask=np.ones((2, 3), np.int32)), "attention_mask has shape"),
        (dict(input_ids=np.full((2, 4), 99)), "outside \\[0, vocab_size=61\\)"),
        (dict(input_ids=np.ones((2, 4), np.float32)), "int token ids"),
        (dict(encoder_outputs=np.zeros((2, 3, 32))), "is decoder-only"),
    ],
)
def test_bad_inputs_raise_clear_errors(lm, kwargs, match):
    model, params = lm
    args = dict(input_ids=np.full((2, 4), 5), max_new_tokens=4)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        jaxmm.generate(model, params, **args)


def test_encoder_decoder_input_errors(s2s):
    model, params = s2s
    with pytest.raises(ValueError, match="exactly one of"):
        jaxmm.generate(model, params, max_new_tokens=3)
    with pytest.raises(ValueError, match=r"encoder_attention_mask has shape \(2, 5\)"):
        jaxmm.generate(model, params, encoder_outputs=np.zeros((2, 3, 32), np.float32),
                       encoder_attention_mask=np.ones((2, 5)), max_new_tokens=3)
    with pytest.raises(ValueError, match="decoder_start_token_id"):
        jaxmm.generate(ToySeq2Seq(ToyConfig(decoder_start_token_id=None, bos_token_id=None)),
                       params, np.full((1, 3), 4), max_new_tokens=3)


def test_sampling_knobs_without_do_sample_warn(lm):
    model, params = lm
    with pytest.warns(UserWarning, match="only apply with do_sample=True"):
        jaxmm.generate(model, params, np.full((2, 4), 5), temperature=0.5, **GREEDY)
