"""Audio front end vs librosa and transformers' WhisperFeatureExtractor.

Tolerances (float32 JAX vs float32/float64 references; measured errors in
brackets): power/mel spectra 1e-5 of the spectrum's peak [3e-7]; dB / MFCC values
atol 5e-4 dB [3e-5]; Whisper log-mel features atol 5e-5 [5e-6].
"""

import jax
import librosa
import numpy as np
import pytest
import transformers

from jaxmm import audio_features as audio


def _signal(seconds=1.0, sr=16000, seed=0):
    t = np.arange(int(seconds * sr)) / sr
    rng = np.random.default_rng(seed)
    chirp = np.sin(2 * np.pi * (200 + 1500 * t) * t) * np.exp(-t)
    return (0.5 * chirp + 0.05 * rng.normal(size=t.shape)).astype(np.float32)


def _close_to_peak(got, want, rtol=1e-5):
    got, want = np.asarray(got), np.asarray(want)
    np.testing.assert_allclose(got, want, atol=rtol * np.abs(want).max())


@pytest.mark.parametrize("kw", [
    dict(n_fft=512, hop_length=128),
    dict(n_fft=400, hop_length=160, win_length=300, pad_mode="reflect"),
    dict(n_fft=256, hop_length=100, center=False),
])
def test_stft_matches_librosa(kw):
    y = _signal(0.5)
    want = librosa.stft(y, **kw)
    got = audio.stft(y, **kw)
    assert got.shape == want.shape
    _close_to_peak(np.abs(got) ** 2, np.abs(want) ** 2)


@pytest.mark.parametrize("scale,norm,fmax", [("slaney", "slaney", None), ("htk", None, 6000.0)])
def test_mel_filterbank_and_melspectrogram_match_librosa(scale, norm, fmax):
    sr = 22050
    fb = audio.mel_filterbank(sr, 1024, 40, 20.0, fmax, scale, norm)
    want_fb = librosa.filters.mel(sr=sr, n_fft=1024, n_mels=40, fmin=20.0, fmax=fmax,
                                  htk=scale == "htk", norm=norm)
    np.testing.assert_allclose(fb, want_fb, rtol=1e-5, atol=1e-7)
    y = _signal(0.8, sr)
    kw = dict(n_fft=1024, hop_length=256, n_mels=40, fmin=20.0, fmax=fmax)
    want = librosa.feature.melspectrogram(y=y, sr=sr, htk=scale == "htk", norm=norm, **kw)
    got = audio.melspectrogram(y, sample_rate=sr, mel_scale=scale, norm=norm, **kw)
    _close_to_peak(got, want)
    np.testing.assert_allclose(audio.power_to_db(got), librosa.power_to_db(want), atol=5e-4)


def test_mfcc_matches_librosa_and_batches_are_independent():
    sr = 16000
    y = np.stack([_signal(0.6, sr, 0), 0.01 * _signal(0.6, sr, 1)])
    f = jax.jit(lambda y: audio.mfcc(y, sample_rate=sr, n_mfcc=13, n_mels=40, n_fft=512,
                                     hop_length=160, lifter=22))
    got = np.asarray(f(y))
    for i in range(2):  # librosa one example at a time (its top_db uses a global max)
        want = librosa.feature.mfcc(y=y[i], sr=sr, n_mfcc=13, n_mels=40, n_fft=512,
                                    hop_length=160, lifter=22)
        np.testing.assert_allclose(got[i], want, atol=5e-4)


@pytest.mark.parametrize("n_mels", [80, 128])
def test_whisper_log_mel_matches_feature_extractor(n_mels):
    fe = transformers.WhisperFeatureExtractor(feature_size=n_mels)
    batch = [_signal(1.3, seed=0), _signal(0.7, seed=1) * 0.2]
    ref = fe(batch, sampling_rate=16000, return_tensors="np", return_attention_mask=True)
    padded = np.zeros((2, 16000 * 2), np.float32)
    for i, b in enumerate(batch):
        padded[i, : len(b)] = b
    feats = jax.jit(lambda a: audio.whisper_log_mel(a, sample_rate=16000, n_mels=n_mels))(padded)
    assert feats.shape == (2, n_mels, 3000)
    np.testing.assert_allclose(feats, ref["input_features"], atol=5e-5)
    _, mask = audio.whisper_log_mel(batch[0], sample_rate=16000, n_mels=n_mels,
                                    return_attention_mask=True)
    np.testing.assert_array_equal(mask, ref["attention_mask"][0])


def test_wrong_sample_rate_raises_with_resampling_advice():
    with pytest.raises(ValueError, match=r"16000 Hz.*44100.*resample"):
        audio.whisper_log_mel(np.zeros(44100, np.float32), sample_rate=44100)
    with pytest.raises(ValueError, match="80 .* or 128"):
        audio.whisper_log_mel(np.zeros(16000, np.float32), sample_rate=16000, n_mels=64)


def test_resample_preserves_a_tone():
    sr, target = 44100, 16000
    t = np.arange(sr) / sr
    y = np.sin(2 * np.pi * 440 * t).astype(np.float32)
    out = audio.resample(y, sr, target)
    assert out.shape == (target,)
    t2 = np.arange(target) / target
    np.testing.assert_allclose(out[500:-500], np.sin(2 * np.pi * 440 * t2)[500:-500], atol=1e-3)
