"""AST-style audio encoder: shapes, frame masking, sample-rate and shape errors."""

import jax
import numpy as np
import pytest

from jaxmm import audio_features as audio
from jaxmm.models import build


@pytest.fixture(scope="module")
def ast_model():
    model = build("ast_classifier", "tiny", pool_type="mean")
    feats = np.zeros((1, 16, 64), np.float32)
    params = jax.jit(model.init)(jax.random.key(0), feats)["params"]
    return model, params


def test_ast_on_real_log_mel_features_and_frame_mask(ast_model, rng):
    model, params = ast_model
    wave = rng.normal(size=(2, 16000 * 64 // 100)).astype(np.float32) * 0.1
    feats = audio.melspectrogram(wave, sample_rate=16000, n_fft=400, hop_length=160, n_mels=16)
    feats = np.asarray(audio.power_to_db(feats))[..., :64]
    assert feats.shape == (2, 16, 64)
    apply = jax.jit(lambda f, m: model.apply({"params": params}, f, m, sample_rate=16000,
                                             output_hidden_states=True))
    mask = np.ones((2, 64), np.int32)
    mask[1, 40:] = 0  # example 1 has 40 real frames: time patches 0..4 of 8
    out = apply(feats, mask)
    assert out.logits.shape == (2, 10)
    assert out.hidden_states[-1].shape == (2, 1 + 2 * 8, 64)
    # Content of the padded frames cannot reach the masked example's outputs.
    noisy = feats.copy()
    noisy[1, :, 40:] = 100.0
    other = apply(noisy, mask)
    np.testing.assert_allclose(other.logits[1], out.logits[1], atol=1e-5)
    real = np.tile(np.arange(8) < 5, 2)  # (mel row, time) patches with real frames
    np.testing.assert_allclose(other.hidden_states[-1][1, 1:][real],
                               out.hidden_states[-1][1, 1:][real], atol=1e-5)


def test_ast_errors(ast_model):
    model, params = ast_model
    feats = np.zeros((1, 16, 64), np.float32)
    with pytest.raises(ValueError, match="16000 Hz.*44100.*resample"):
        model.apply({"params": params}, feats, sample_rate=44100)
    with pytest.raises(ValueError, match="16 mel bins, 64 frames.*Pad or crop"):
        model.apply({"params": params}, feats[:, :, :48])
    with pytest.raises(ValueError, match=r"attention_mask must be \(batch, 64\)"):
        model.apply({"params": params}, feats, np.ones((1, 60), np.int32))
