"""Positional encodings against their formulas (and Hugging Face's T5 buckets)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxmm.layers import (
    DecodePositions,
    LearnedPositionEmbedding,
    RelativePositionBias,
    RopeScaling,
    alibi_bias,
    alibi_slopes,
    apply_rotary_embedding,
    relative_position_bucket,
    sinusoidal_embedding,
    sinusoidal_positions,
)


def test_sinusoidal_matches_formula():
    length, dim = 50, 16
    table = np.asarray(sinusoidal_positions(length, dim))
    for pos in range(length):
        for i in range(dim // 2):
            angle = pos / 10000 ** (2 * i / dim)
            assert table[pos, 2 * i] == pytest.approx(math.sin(angle), abs=1e-6)
            assert table[pos, 2 * i + 1] == pytest.approx(math.cos(angle), abs=1e-6)
    concat = np.asarray(sinusoidal_positions(length, dim, layout="concat"))
    np.testing.assert_allclose(concat[:, : dim // 2], table[:, 0::2], atol=1e-7)
    np.testing.assert_allclose(concat[:, dim // 2:], table[:, 1::2], atol=1e-7)


def test_learned_positions_are_a_table_lookup():
    mod = LearnedPositionEmbedding(num_positions=10, features=4)
    pos = jnp.array([[0, 3, 9]])
    params = mod.init(jax.random.key(0), pos)
    table = np.asarray(params["params"]["embedding"].unbox())
    np.testing.assert_array_equal(np.asarray(mod.apply(params, pos))[0], table[[0, 3, 9]])
    with pytest.raises(ValueError, match="outside the learned position table of size 10"):
        mod.apply(params, jnp.array([[0, 10]]))


@pytest.mark.parametrize("bidirectional", [True, False])
def test_t5_buckets_match_transformers(bidirectional):
    torch = pytest.importorskip("torch")
    from transformers.models.t5.modeling_t5 import T5Attention

    rel = np.arange(-300, 300)
    want = T5Attention._relative_position_bucket(
        torch.tensor(rel), bidirectional=bidirectional, num_buckets=32, max_distance=128
    ).numpy()
    got = np.asarray(relative_position_bucket(jnp.asarray(rel), bidirectional=bidirectional,
                                              num_buckets=32, max_distance=128))
    np.testing.assert_array_equal(got, want)


def test_relative_bias_layout_and_decode_offset():
    mod = RelativePositionBias(num_heads=3, num_buckets=8, max_distance=16)
    params = mod.init(jax.random.key(0), 5, 5)
    table = np.asarray(params["params"]["embedding"].unbox())
    bias = np.asarray(mod.apply(params, 5, 5))
    assert bias.shape == (1, 3, 5, 5)
    buckets = np.asarray(relative_position_bucket(
        jnp.arange(5)[None, :] - jnp.arange(5)[:, None], num_buckets=8, max_distance=16))
    np.testing.assert_allclose(bias[0], np.transpose(table[buckets], (2, 0, 1)))
    # A single query at position 3 sees the same row as the full computation.
    np.testing.assert_allclose(np.asarray(mod.apply(params, 1, 5, offset=3))[0, :, 0],
                               bias[0, :, 3])


def _np_rope(x, pos, theta, interleaved):
    d = x.shape[-1]
    freqs = theta ** (-np.arange(0, d, 2) / d)
    rot = np.exp(1j * pos[..., None] * freqs)[:, :, None, :]  # (B, T, 1, D/2)
    if interleaved:
        z = x[..., 0::2] + 1j * x[..., 1::2]
        z = z * rot
        out = np.empty_like(x)
        out[..., 0::2], out[..., 1::2] = z.real, z.imag
        return out
    z = (x[..., : d // 2] + 1j * x[..., d // 2:]) * rot
    return np.concatenate([z.real, z.imag], -1)


@pytest.mark.parametrize("interleaved", [False, True])
def test_rotary_matches_complex_rotation(rng, interleaved):
    x = rng.normal(size=(2, 7, 3, 8)).astype(np.float32)
    pos = np.stack([np.arange(7), np.arange(7) + 5])
    got = np.asarray(apply_rotary_embedding(jnp.asarray(x), jnp.asarray(pos), theta=100.0,
                                            interleaved=interleaved))
    np.testing.assert_allclose(got, _np_rope(x, pos, 100.0, interleaved), atol=1e-5)
    # Rotations keep norms, and q.k depends only on the relative offset.
    np.testing.assert_allclose(np.linalg.norm(got, axis=-1), np.linalg.norm(x, axis=-1),
                               rtol=1e-5)


def test_partial_rotary_leaves_the_rest(rng):
    x = rng.normal(size=(1, 4, 2, 8)).astype(np.float32)
    pos = np.arange(4)[None]
    got = np.asarray(apply_rotary_embedding(jnp.asarray(x), pos, rotary_dim=4))
    np.testing.assert_array_equal(got[..., 4:], x[..., 4:])
    np.testing.assert_allclose(got[..., :4], _np_rope(x[..., :4], pos, 10000.0, False),
                               atol=1e-5)


def test_alibi_slopes_follow_the_paper():
    np.testing.assert_allclose(alibi_slopes(8), [2.0 ** -(i + 1) for i in range(8)])
    # Non power of two: 4 slopes of the 4-head schedule + odd ones of the 8-head one.
    np.testing.assert_allclose(alibi_slopes(6), [2**-2, 2**-4, 2**-6, 2**-8, 2**-1, 2**-3])
    bias = np.asarray(alibi_bias(8, 3, 5))
    slopes = alibi_slopes(8)
    for h in range(8):
        for i in range(3):
            for j in range(5):
                assert bias[0, h, i, j] == pytest.approx(-slopes[h] * ((i + 2) - j))


@pytest.mark.parametrize("layout", ["interleaved", "concat"])
def test_sinusoidal_embedding_of_position_ids_matches_table(layout):
    table = np.asarray(sinusoidal_positions(40, 12, layout=layout))
    pos = np.array([[0, 5, 39], [7, 7, 1]])
    got = np.asarray(jax.jit(lambda p: sinusoidal_embedding(p, 12, layout=layout))(pos))
    np.testing.assert_allclose(got, table[pos], atol=1e-5)


def test_decode_positions_track_the_cache_index():
    mod = DecodePositions()
    # Outside decode mode: arange or explicit ids, nothing stored.
    pos, index, length = mod.apply({}, 2, 3)
    np.testing.assert_array_equal(np.asarray(pos), [[0, 1, 2]] * 2)
    assert int(index) == 0 and length is None
    # Cache creation with the cache length 6, then a prefill of 2 and steps of 1.
    _, cache = mod.apply({}, 2, 6, None, True, mutable=["cache"])
    assert int(cache["cache"]["index"]) == 0
    (pos, index, length), cache = mod.apply(cache, 2, 2, None, True, mutable=["cache"])
    np.testing.assert_array_equal(np.asarray(pos), [[0, 1]] * 2)
    assert (int(index), length) == (0, 6)
    explicit = np.array([[0, 0], [4, 5]])
    (pos, index, _), cache = mod.apply(cache, 2, 2, explicit, True, mutable=["cache"])
    np.testing.assert_array_equal(np.asarray(pos), explicit)
    assert int(index) == 2 and int(cache["cache"]["index"]) == 4
    np.testing.assert_array_equal(np.asarray(cache["cache"]["slot_positions"])[:, :4],
                                  [[0, 1, 0, 0], [0, 1, 4, 5]])
    with pytest.raises(ValueError, match="position_ids must have shape"):
        mod.apply({}, 2, 3, np.zeros((2, 4), np.int32))
    with pytest.raises(ValueError, match="created for batch 2"):
        mod.apply(cache, 3, 1, None, True, mutable=["cache"])


def test_linear_rope_scaling_interpolates_positions(rng):
    x = rng.normal(size=(1, 4, 2, 8)).astype(np.float32)
    pos = np.array([[0, 4, 8, 12]])
    scaled = apply_rotary_embedding(x, pos, theta=100.0, scaling=RopeScaling("linear", 4.0))
    np.testing.assert_allclose(np.asarray(scaled),
                               np.asarray(apply_rotary_embedding(x, pos / 4, theta=100.0)),
                               atol=1e-5)
    from jaxmm.config import ConfigError

    with pytest.raises(ConfigError, match="rope_type='yarn'"):
        RopeScaling("yarn")
    with pytest.raises(ConfigError, match="high_freq_factor must exceed"):
        RopeScaling("llama3", 8.0, low_freq_factor=4.0, high_freq_factor=1.0)
