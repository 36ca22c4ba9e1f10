"""Whisper: parity with Hugging Face (encoder, decoder logits, padded batches), KV-cache
decoding, tied output projection, and input errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers

from jaxmm.convert import from_hf
from jaxmm.models import build
from jaxmm.models.whisper import WhisperConfig, WhisperModel, whisper_sinusoids

HF_KW = dict(vocab_size=96, num_mel_bins=8, d_model=32, encoder_layers=2, decoder_layers=2,
             encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=64,
             decoder_ffn_dim=64, max_source_positions=16, max_target_positions=24,
             pad_token_id=0, bos_token_id=1, eos_token_id=2, decoder_start_token_id=3,
             dropout=0.0, attention_dropout=0.0, activation_dropout=0.0)


@pytest.fixture(scope="module")
def hf_whisper(tmp_path_factory):
    torch.manual_seed(0)
    model = transformers.WhisperForConditionalGeneration(
        transformers.WhisperConfig(**HF_KW)).eval()
    with torch.no_grad():  # move every weight off its initial value (biases, norms)
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    path = str(tmp_path_factory.mktemp("whisper"))
    model.save_pretrained(path)
    return model, path


def _features(rng, b=2):
    return rng.normal(size=(b, 8, 32)).astype(np.float32)


def test_sinusoids_match_hf():
    from transformers.models.whisper.modeling_whisper import sinusoids

    # HF computes the angles in float32, jaxmm in float64 (the table is stored as a weight
    # in checkpoints, so this only matters for freshly initialised models).
    np.testing.assert_allclose(whisper_sinusoids(50, 16), sinusoids(50, 16).numpy(), atol=1e-5)


@pytest.mark.slow
def test_encoder_and_decoder_logits_match_hf(hf_whisper, rng):
    hf, path = hf_whisper
    model, params, cfg = from_hf(path)
    assert cfg.num_frames == 32 and cfg.max_position_embeddings == 24
    feats = _features(rng)
    ids = rng.integers(4, 96, size=(2, 7)).astype(np.int32)
    with torch.no_grad():
        ref = hf(input_features=torch.from_numpy(feats), decoder_input_ids=torch.from_numpy(ids))
    out = jax.jit(lambda p, f, i: model.apply({"params": p}, f, i))(params, feats, ids)
    np.testing.assert_allclose(out.encoder_last_hidden_state,
                               ref.encoder_last_hidden_state.numpy(), atol=1e-4)
    np.testing.assert_allclose(out.logits, ref.logits.numpy(), atol=1e-4)
    # decode() given encoder outputs equals the full forward.
    enc = model.apply({"params": params}, feats, method="encode").last_hidden_state
    dec = model.apply({"params": params}, ids, enc, method="decode")
    np.testing.assert_allclose(dec.logits, out.logits, atol=1e-5)
    # The output projection is the token embedding (tied).
    np.testing.assert_allclose(
        dec.logits, np.einsum("btd,vd->btv", dec.last_hidden_state,
                              params["decoder"]["embed_tokens"]["embedding"]), atol=1e-4)


@pytest.mark.slow
def test_padded_decoder_batches_match_hf(hf_whisper, rng):
    hf, path = hf_whisper
    model, params, _ = from_hf(path, scan_layers=True)
    feats = _features(rng)
    ids = rng.integers(4, 96, size=(2, 6)).astype(np.int32)
    # Row 0 right-padded; row 1 left-padded with explicit positions.
    mask = np.array([[1, 1, 1, 1, 0, 0], [0, 0, 1, 1, 1, 1]], np.int32)
    pos = np.array([[0, 1, 2, 3, 4, 5], [0, 0, 0, 1, 2, 3]], np.int32)
    with torch.no_grad():
        ref = hf(input_features=torch.from_numpy(feats), decoder_input_ids=torch.from_numpy(ids),
                 decoder_attention_mask=torch.from_numpy(mask),
                 decoder_position_ids=torch.from_numpy(pos).long()).logits.numpy()
    got = model.apply({"params": params}, feats, ids, mask, decoder_position_ids=pos).logits
    real = mask.astype(bool)
    np.testing.assert_allclose(np.asarray(got)[real], ref[real], atol=1e-4)


@pytest.mark.slow
def test_kv_cache_incremental_decoding_equals_full_forward(hf_whisper, rng):
    _, path = hf_whisper
    model, params, _ = from_hf(path)
    feats = _features(rng)
    enc = model.apply({"params": params}, feats, method="encode").last_hidden_state
    length = 8
    ids = rng.integers(4, 96, size=(2, length)).astype(np.int32)
    mask = np.ones((2, length), np.int32)
    mask[1, :2] = 0  # left padding in row 1
    pos = np.maximum(np.cumsum(mask, 1) - 1, 0).astype(np.int32)
    full = model.apply({"params": params}, ids, enc, None, mask, pos, method="decode").logits

    shapes = jax.eval_shape(lambda: model.apply(
        {"params": params}, ids, enc, decode=True, method="decode", mutable=["cache"])[1])
    cache = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)["cache"]
    step = jax.jit(lambda c, i, e, p: model.apply(
        {"params": params, "cache": c}, i, e, None, mask, p, decode=True, method="decode",
        mutable=["cache"]))
    out, mut = step(cache, ids[:, :3], enc, pos[:, :3])  # prefill, caches cross K/V
    logits = [out.logits]
    for t in range(3, length):
        out, mut = step(mut["cache"], ids[:, t:t + 1], None, pos[:, t:t + 1])
        logits.append(out.logits)
    got = np.concatenate(logits, 1)
    real = mask.astype(bool)
    np.testing.assert_allclose(got[real], np.asarray(full)[real], atol=1e-5)
    # Without explicit positions the cache index supplies them (no padding case).
    full0 = model.apply({"params": params}, ids[:1], enc[:1], method="decode").logits
    shapes = jax.eval_shape(lambda: model.apply(
        {"params": params}, ids[:1], enc[:1], decode=True, method="decode",
        mutable=["cache"])[1])
    cache = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)["cache"]
    step0 = jax.jit(lambda c, i, e: model.apply(
        {"params": params, "cache": c}, i, e, decode=True, method="decode", mutable=["cache"]))
    steps = []
    for t in range(length):
        out, mut = step0(cache, ids[:1, t:t + 1], enc[:1] if t == 0 else None)
        cache = mut["cache"]
        steps.append(out.logits)
    np.testing.assert_allclose(np.concatenate(steps, 1), full0, atol=1e-5)


def test_whisper_model_without_head_and_registry(rng):
    cfg = WhisperConfig.from_size("tiny")
    model = WhisperModel(cfg)
    feats = rng.normal(size=(1, 80, 64)).astype(np.float32)
    ids = np.array([[3, 5, 6]], np.int32)
    variables = jax.jit(model.init)(jax.random.key(0), feats, ids)
    out = jax.jit(model.apply)(variables, feats, ids)
    assert out.last_hidden_state.shape == (1, 3, 64)
    assert out.encoder_last_hidden_state.shape == (1, 32, 64)
    # Same parameters as the LM model: the head is the tied embedding.
    lm = build("whisper", cfg)
    assert (jax.tree.structure(jax.eval_shape(lm.init, jax.random.key(0), feats, ids))
            == jax.tree.structure(variables))
    assert WhisperConfig.from_size("whisper-large-v3").num_mel_bins == 128


def test_bad_inputs_raise_clear_errors(rng):
    model = build("whisper", "tiny")
    feats = rng.normal(size=(1, 80, 64)).astype(np.float32)
    ids = np.array([[3, 5]], np.int32)
    params = jax.jit(model.init)(jax.random.key(0), feats, ids)["params"]
    with pytest.raises(ValueError, match="expects 64 log-mel frames.*Pad or truncate"):
        model.apply({"params": params}, feats[:, :, :50], ids)
    with pytest.raises(ValueError, match="80 mel bins.*whisper_log_mel"):
        model.apply({"params": params}, feats[:, :40], ids)
    with pytest.raises(ValueError, match="exceeds max_target_positions=32"):
        model.apply({"params": params}, np.zeros((1, 40), np.int32), np.zeros((1, 32, 64)),
                    method="decode")


def test_jaxmm_generate_greedy_equals_hf_greedy_loop(hf_whisper, rng):
    """The decoding protocol end to end: jaxmm.generate (KV cache) vs HF full forwards."""
    import jaxmm

    hf, path = hf_whisper
    model, params, _ = from_hf(path)
    feats = _features(rng)
    out = jaxmm.generate(model, params, encoder_inputs={"input_features": feats},
                         max_new_tokens=6, eos_token_id=None)
    ids = torch.full((2, 1), 3)  # decoder_start_token_id
    with torch.no_grad():
        for _ in range(6):
            logits = hf(input_features=torch.from_numpy(feats), decoder_input_ids=ids).logits
            ids = torch.cat([ids, logits[:, -1].argmax(-1, keepdim=True)], 1)
    np.testing.assert_array_equal(np.asarray(out.sequences), ids.numpy())
