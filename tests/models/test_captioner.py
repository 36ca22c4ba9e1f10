"""Captioner: teacher forcing with HF label shifting, the decoding protocol
(cache == full recompute, jaxmm.generate == a manual greedy loop), cross-attention
maps, other encoders with a projection, and clear errors."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxmm import generate
from jaxmm.models import build
from jaxmm.models.captioner import CaptionerConfig
from jaxmm.models.outputs import shift_tokens_right
from jaxmm.viz import cross_attention_maps
from tests.mm_params import random_params

DECODER = dict(vocab_size=40, max_position_embeddings=24, num_layers=2, d_model=32, num_heads=4,
               mlp_dim=64, bos_token_id=1, eos_token_id=2, pad_token_id=0)


@pytest.fixture(scope="module")
def setup():
    cfg = CaptionerConfig(encoder="vit", encoder_config={"size": "tiny", "num_layers": 1,
                                                         "d_model": 48, "mlp_dim": 96},
                          decoder=DECODER)
    model = build("captioner", cfg)
    rng = np.random.default_rng(0)
    image = rng.normal(size=(2, 32, 32, 3)).astype(np.float32)
    ids = rng.integers(3, 40, size=(2, 6)).astype(np.int32)
    # Large random weights, so greedy decoding produces varied tokens.
    params = random_params(model, image, ids, std=0.3)
    return model, params, image, rng


def test_config_defaults_and_projection(setup):
    model, params, *_ = setup
    cfg = model.config
    assert cfg.decoder.add_cross_attention and cfg.uses_projection  # 48 -> 32
    assert cfg.decoder_start_token_id == 1 and cfg.pad_token_id == 0
    assert cfg.vocab_size == 40 and cfg.image_size == 32
    assert params["enc_to_dec_proj"]["kernel"].shape == (48, 32)


def test_labels_are_shifted_like_hugging_face(setup):
    model, params, image, _ = setup
    labels = np.array([[5, 6, 7, 2, -100, -100], [8, 9, 10, 11, 12, 2]], np.int32)
    ref = np.array([[1, 5, 6, 7, 2, 0], [1, 8, 9, 10, 11, 12]], np.int32)
    shifted = shift_tokens_right(labels, pad_token_id=0, decoder_start_token_id=1)
    np.testing.assert_array_equal(np.asarray(shifted), ref)

    @jax.jit
    def run(p):
        a = model.apply({"params": p}, image, labels=labels)
        b = model.apply({"params": p}, image, ref)
        return a.logits, b.logits

    a, b = run(params)
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert a.shape == (2, 6, 40)


def test_cached_decoding_matches_full_forward_and_cross_attention(setup):
    model, params, image, rng = setup
    ids = rng.integers(3, 40, size=(2, 5)).astype(np.int32)
    mask = np.ones((2, 5), np.int32)

    @jax.jit
    def run(p):
        enc = model.apply({"params": p}, image, method="encode").last_hidden_state
        full = model.apply({"params": p}, image, ids, mask, output_attentions=True)
        # Cache of 5 slots; prefill 2 tokens, then one at a time.
        cache = jax.eval_shape(lambda: model.apply(
            {"params": p}, jnp.zeros((2, 5), jnp.int32), enc, decode=True,
            mutable=["cache"], method="decode"))[1]["cache"]
        cache = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), cache)
        steps, henc = [], enc
        for start, stop in [(0, 2), (2, 3), (3, 4), (4, 5)]:
            out, v = model.apply({"params": p, "cache": cache}, ids[:, start:stop], henc,
                                 decoder_attention_mask=mask, decode=True, mutable=["cache"],
                                 method="decode")
            cache, henc = v["cache"], None
            steps.append(out.logits)
        return full, jnp.concatenate(steps, 1)

    full, incremental = run(params)
    np.testing.assert_allclose(np.asarray(incremental), np.asarray(full.logits), atol=1e-4)
    xa = np.asarray(full.cross_attentions[-1])
    assert len(full.cross_attentions) == 2 and xa.shape == (2, 4, 5, 17)  # 16 patches + CLS
    np.testing.assert_allclose(xa.sum(-1), 1.0, atol=1e-5)


@pytest.mark.slow
def test_generate_greedy_equals_manual_loop_and_attention_maps(setup):
    model, params, image, _ = setup
    out = generate(model, params, encoder_inputs={"image": image}, max_new_tokens=5)
    seq = np.asarray(out.sequences)
    assert seq.shape[0] == 2 and seq[0, 0] == 1
    # Reference: recompute the full forward pass for every new token (no cache).
    # Fixed length (causal: position t only sees tokens <= t), so one compilation.
    fwd = jax.jit(lambda p, ids: model.apply({"params": p}, image, ids).logits)
    ref = np.zeros((2, seq.shape[1]), np.int32)
    ref[:, 0] = 1
    for t in range(seq.shape[1] - 1):
        ref[:, t + 1] = np.asarray(fwd(params, ref))[:, t].argmax(-1)
    done = np.cumsum(ref == 2, axis=1) > 0
    after_eos = np.concatenate([np.zeros((2, 1), bool), done[:, :-1]], 1)
    np.testing.assert_array_equal(seq, np.where(after_eos, 0, ref))
    assert len(set(seq[:, 1:].ravel().tolist())) > 1  # the check is not vacuous

    maps = cross_attention_maps(model, params, image, seq)
    assert maps.shape == (2, seq.shape[1] - 1, 4, 4)
    np.testing.assert_allclose(maps.sum((-1, -2)), 1.0, atol=1e-5)


def test_other_encoder_and_bad_inputs(setup):
    model, params, image, rng = setup
    cfg = CaptionerConfig(encoder="clip_vision", encoder_config="tiny", decoder=DECODER,
                          encoder_projection=True)
    other = build("captioner", cfg)
    ids = rng.integers(3, 40, size=(2, 4)).astype(np.int32)
    shapes = jax.eval_shape(lambda: other.init_with_output(jax.random.key(0), image, ids))
    out, variables = shapes[0], nn.unbox(shapes[1])
    assert out.logits.shape == (2, 4, 40)
    assert variables["params"]["enc_to_dec_proj"]["kernel"].shape == (32, 32)

    trace = lambda *a, **k: jax.eval_shape(  # noqa: E731 - errors are raised while tracing
        lambda p: model.apply({"params": p}, *a, **k), params)
    with pytest.raises(ValueError, match="does not match the model's 32x32"):
        trace(np.zeros((2, 64, 64, 3), np.float32), ids)
    with pytest.raises(ValueError, match="expects 3 channels"):
        trace(np.zeros((2, 32, 32, 4), np.float32), ids)
    with pytest.raises(ValueError, match="decoder_input_ids.*or labels"):
        trace(image)
    with pytest.raises(ValueError, match="exceeds the learned position table"):
        trace(image, np.ones((2, 30), np.int32))
