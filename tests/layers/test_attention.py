"""Scaled dot-product attention against a NumPy reference, for every mask kind."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxmm.layers import (
    causal_mask,
    combine_masks,
    dot_product_attention,
    key_padding_mask,
    padding_mask,
    prefix_lm_mask,
)


def np_attention(q, k, v, mask=None, bias=None, scale=None):
    """softmax(Q K^T * scale + bias) V with K/V heads repeated for GQA/MQA."""
    b, t, h, d = q.shape
    groups = h // k.shape[2]
    k = np.repeat(k, groups, axis=2)
    v = np.repeat(v, groups, axis=2)
    scale = 1 / np.sqrt(d) if scale is None else scale
    logits = np.einsum("bthd,bshd->bhts", q, k) * scale
    if bias is not None:
        logits = logits + bias
    if mask is not None:
        logits = np.where(mask, logits, -np.inf)
    logits = logits - logits.max(-1, keepdims=True)
    w = np.exp(logits)
    w = w / w.sum(-1, keepdims=True)
    return np.einsum("bhts,bshd->bthd", w, v), w


B, T, D = 2, 6, 8
LENGTHS = np.array([6, 4])  # second example has 2 padding tokens at the end
PREFIX = np.array([3, 2])


def _masks():
    valid = (np.arange(T)[None] < LENGTHS[:, None]).astype(np.int32)
    pad = np.asarray(key_padding_mask(valid))
    causal = np.asarray(causal_mask(T))
    prefix = np.asarray(prefix_lm_mask(PREFIX, T))
    return {
        "none": None,
        "padding": pad,
        "causal": causal,
        "prefix_lm": prefix,
        "padding+causal": np.asarray(combine_masks(pad, causal)),
        "padding+prefix_lm": np.asarray(combine_masks(pad, prefix)),
    }


@pytest.mark.parametrize(
    "mask_kind,heads,with_bias,impl",
    list(itertools.product(
        ["none", "padding", "causal", "prefix_lm", "padding+causal", "padding+prefix_lm"],
        [(4, 4), (4, 2), (4, 1)],  # MHA, GQA, MQA
        [False, True],
        ["plain", "xla", "auto"],
    )),
)
def test_attention_matches_numpy(rng, mask_kind, heads, with_bias, impl):
    h, kvh = heads
    q = rng.normal(size=(B, T, h, D)).astype(np.float32)
    k = rng.normal(size=(B, T, kvh, D)).astype(np.float32)
    v = rng.normal(size=(B, T, kvh, D)).astype(np.float32)
    bias = rng.normal(size=(1, h, T, T)).astype(np.float32) if with_bias else None
    mask = _masks()[mask_kind]
    want, want_w = np_attention(q, k, v, mask, bias)
    got = dot_product_attention(q, k, v, mask=None if mask is None else jnp.asarray(mask),
                                bias=bias, implementation=impl)
    np.testing.assert_allclose(np.asarray(got), want, atol=2e-5, rtol=1e-5)
    if impl == "plain":
        _, w = dot_product_attention(q, k, v, mask=None if mask is None else jnp.asarray(mask),
                                     bias=bias, implementation="plain", return_weights=True)
        np.testing.assert_allclose(np.asarray(w), want_w, atol=2e-6)


def test_mask_semantics():
    causal = np.asarray(causal_mask(3, 5))
    # Queries are the last 3 of 5 positions: query 0 sits at position 2.
    np.testing.assert_array_equal(causal[0, 0], np.array([
        [1, 1, 1, 0, 0], [1, 1, 1, 1, 0], [1, 1, 1, 1, 1]], bool))
    prefix = np.asarray(prefix_lm_mask(np.array([2]), 4))[0, 0]
    np.testing.assert_array_equal(prefix, np.array([
        [1, 1, 0, 0], [1, 1, 0, 0], [1, 1, 1, 0], [1, 1, 1, 1]], bool))
    pm = np.asarray(padding_mask(np.array([[1, 1, 0]]), np.array([[1, 0, 1, 1]])))
    assert pm.shape == (1, 1, 3, 4)
    np.testing.assert_array_equal(pm[0, 0, 2], np.zeros(4, bool))
    np.testing.assert_array_equal(pm[0, 0, 0], np.array([1, 0, 1, 1], bool))


def test_plain_and_library_paths_agree(rng):
    q = rng.normal(size=(2, 5, 4, 8)).astype(np.float32)
    k = rng.normal(size=(2, 7, 2, 8)).astype(np.float32)
    v = rng.normal(size=(2, 7, 2, 8)).astype(np.float32)
    mask = jnp.asarray(rng.random((2, 1, 5, 7)) > 0.3)
    bias = rng.normal(size=(2, 4, 5, 7)).astype(np.float32)
    a = dot_product_attention(q, k, v, mask=mask, bias=bias, implementation="plain")
    b = dot_product_attention(q, k, v, mask=mask, bias=bias, implementation="xla")
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-6)


def test_fully_masked_row_is_finite(rng):
    q = rng.normal(size=(1, 2, 2, 4)).astype(np.float32)
    mask = jnp.zeros((1, 1, 2, 2), bool)
    for impl in ("plain", "auto"):
        out = dot_product_attention(q, q, q, mask=mask, implementation=impl)
        assert np.all(np.isfinite(np.asarray(out)))


def test_dropout_changes_weights_and_is_unbiased(rng):
    q = rng.normal(size=(1, 4, 2, 8)).astype(np.float32)
    det = dot_product_attention(q, q, q, implementation="plain")
    sample = jax.vmap(
        lambda key: dot_product_attention(q, q, q, dropout_rate=0.5, dropout_rng=key,
                                          deterministic=False)
    )
    outs = np.asarray(sample(jax.random.split(jax.random.key(0), 4000)))
    assert not np.allclose(outs[0], np.asarray(det))
    # Inverted dropout keeps the expectation: the sample mean approaches the output.
    np.testing.assert_allclose(outs.mean(0), np.asarray(det), atol=0.1, rtol=0.05)


def test_bf16_inputs_give_bf16_outputs(rng):
    q = jnp.asarray(rng.normal(size=(1, 4, 2, 8)), jnp.bfloat16)
    out = dot_product_attention(q, q, q, mask=causal_mask(4))
    assert out.dtype == jnp.bfloat16
    want, _ = np_attention(*(np.asarray(q, np.float32),) * 3, mask=np.asarray(causal_mask(4)))
    np.testing.assert_allclose(np.asarray(out, np.float32), want, atol=5e-2)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(mask=jnp.ones((2, 1, 5, 3), bool)), "query_len size is 5"),
        (dict(mask=jnp.ones((2, 6), bool)), "must have 4 dimensions"),
        (dict(mask=jnp.ones((2, 1, 6, 6), jnp.int32)), "must be boolean"),
        (dict(bias=jnp.ones((3, 1, 6, 6))), "batch size is 3"),
    ],
)
def test_bad_masks_are_reported(rng, kwargs, match):
    q = rng.normal(size=(2, 6, 4, 8)).astype(np.float32)
    with pytest.raises(ValueError, match=match):
        dot_product_attention(q, q, q, **kwargs)


def test_mismatched_heads_are_reported(rng):
    q = rng.normal(size=(2, 6, 4, 8)).astype(np.float32)
    kv = rng.normal(size=(2, 6, 3, 8)).astype(np.float32)
    with pytest.raises(ValueError, match="multiple of the number of key/value heads"):
        dot_product_attention(q, kv, kv)
