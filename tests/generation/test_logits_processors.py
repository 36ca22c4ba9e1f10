"""The logits processors against Hugging Face's processor classes on the same scores."""

import jax.numpy as jnp
import numpy as np
import pytest

from jaxmm.generation import GenerationConfig, processors

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

N, T, V = 4, 9, 17


@pytest.fixture
def batch():
    rng = np.random.default_rng(0)
    scores = rng.normal(0.0, 2.0, size=(N, V)).astype(np.float32)
    tokens = rng.integers(0, 5, size=(N, T)).astype(np.int32)  # few ids: many repeats
    return scores, tokens


def _hf(processor, tokens, scores):
    return processor(torch.tensor(tokens, dtype=torch.long), torch.tensor(scores)).numpy()


def _assert_same(ours, theirs):
    ours = np.asarray(ours)
    np.testing.assert_array_equal(np.isneginf(ours), np.isneginf(theirs))
    finite = np.isfinite(theirs)
    np.testing.assert_allclose(ours[finite], theirs[finite], rtol=1e-6, atol=1e-6)


def test_repetition_penalty(batch):
    scores, tokens = batch
    presence = processors.token_presence(jnp.asarray(tokens), jnp.ones((N, T), bool), V)
    ours = processors.repetition_penalty(jnp.asarray(scores), presence, 1.7)
    theirs = _hf(transformers.RepetitionPenaltyLogitsProcessor(1.7), tokens, scores)
    _assert_same(ours, theirs)
    assert not np.allclose(theirs, scores)


@pytest.mark.parametrize("size", [1, 2, 3])
def test_no_repeat_ngram(batch, size):
    scores, tokens = batch
    banned = processors.no_repeat_ngram_mask(jnp.asarray(tokens), T, 0, size, V)
    ours = jnp.where(banned, -jnp.inf, jnp.asarray(scores))
    theirs = _hf(transformers.NoRepeatNGramLogitsProcessor(size), tokens, scores)
    _assert_same(ours, theirs)
    assert np.isneginf(theirs).any()


@pytest.mark.parametrize("new_tokens", [1, 3])
def test_min_new_tokens_suppresses_eos(batch, new_tokens):
    scores, tokens = batch
    eos, prompt = [2, 5], T - new_tokens
    ours = processors.suppress_tokens(jnp.asarray(scores), jnp.asarray(eos),
                                      new_tokens < 2)
    hf = transformers.MinNewTokensLengthLogitsProcessor(prompt, 2, eos)
    _assert_same(ours, _hf(hf, tokens, scores))


@pytest.mark.parametrize("keep", [1, 3])
def test_warpers(batch, keep):
    scores, tokens = batch
    x = jnp.asarray(scores)
    _assert_same(processors.temperature(x, 0.6),
                 _hf(transformers.TemperatureLogitsWarper(0.6), tokens, scores))
    _assert_same(processors.top_k_filter(x, 4, keep),
                 _hf(transformers.TopKLogitsWarper(4, min_tokens_to_keep=keep), tokens, scores))
    for top_p in (0.3, 0.8):
        theirs = _hf(transformers.TopPLogitsWarper(top_p, min_tokens_to_keep=keep), tokens,
                     scores)
        _assert_same(processors.top_p_filter(x, top_p, keep), theirs)
        assert np.isneginf(theirs).any()


def test_process_scores_applies_the_processors_in_hugging_face_order(batch):
    scores, tokens = batch
    config = GenerationConfig(max_new_tokens=4, do_sample=True, temperature=0.7, top_k=6,
                              top_p=0.8, repetition_penalty=1.3, no_repeat_ngram_size=2,
                              min_new_tokens=2, eos_token_id=(2,))
    special = config.special_tokens(None)
    plan = config.plan(encoder_decoder=False, num_eos=len(special.eos))
    presence = processors.token_presence(jnp.asarray(tokens), jnp.ones((N, T), bool), V)
    ours = processors.process_scores(plan, config.traced(special), jnp.asarray(scores),
                                     jnp.asarray(tokens), presence, T, 0, step=1)
    hf = transformers.LogitsProcessorList([
        transformers.RepetitionPenaltyLogitsProcessor(1.3),
        transformers.NoRepeatNGramLogitsProcessor(2),
        transformers.MinNewTokensLengthLogitsProcessor(T - 1, 2, [2]),
        transformers.TemperatureLogitsWarper(0.7),
        transformers.TopKLogitsWarper(6),
        transformers.TopPLogitsWarper(0.8),
    ])
    _assert_same(ours, _hf(hf, tokens, scores))
