"""Audio front end in JAX: STFT, (mel) spectrograms, log-mel, MFCC, Whisper log-mel.

Every function is jit-friendly (all sizes static) and batch-polymorphic:
a waveform is ``(..., N)`` and spectrograms are ``(..., freq, frames)``, the
layout of librosa and of Whisper's ``input_features`` ``(B, n_mels, frames)``.

Reference behaviour (checked in ``tests/models/test_audio_features.py``):

* :func:`stft`, :func:`melspectrogram`, :func:`power_to_db`, :func:`mfcc` equal
  ``librosa.stft`` / ``librosa.feature.melspectrogram`` / ``librosa.power_to_db``
  / ``librosa.feature.mfcc`` for the same arguments (same defaults: periodic
  Hann window, ``center=True``, ``pad_mode="constant"``, Slaney mel scale and
  norm, power 2, ``top_db=80``). One deliberate difference: on a *batch*,
  ``power_to_db``'s ``top_db`` clamp uses each example's own maximum (librosa
  uses the maximum of the whole array), so examples stay independent.
* :func:`whisper_log_mel` equals ``transformers.WhisperFeatureExtractor``
  (n_fft 400, hop 160, reflect padding, 80 or 128 mels, log10, clamp to
  max - 8, ``(x + 4) / 4``, padded/truncated to 30 s).

Functions that depend on the sample rate take ``sample_rate``; models name
the rate they expect, and :func:`check_sample_rate` raises a clear error
(with resampling instructions) on a mismatch. :func:`resample` converts
rates on the host with a polyphase filter.
"""

from __future__ import annotations

import functools
import math
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array

__all__ = [
    "WHISPER_HOP_LENGTH",
    "WHISPER_N_FFT",
    "log_mel",
    "WHISPER_SAMPLE_RATE",
    "check_sample_rate",
    "dct_matrix",
    "frame",
    "hz_to_mel",
    "mel_filterbank",
    "mel_to_hz",
    "melspectrogram",
    "mfcc",
    "power_to_db",
    "resample",
    "spectrogram",
    "stft",
    "whisper_log_mel",
    "window",
]

WHISPER_SAMPLE_RATE = 16000
WHISPER_N_FFT = 400
WHISPER_HOP_LENGTH = 160

MelScale = Literal["slaney", "htk"]


# ---------------------------------------------------------------------------
# Sample rates
# ---------------------------------------------------------------------------


def check_sample_rate(sample_rate: int, expected: int, what: str = "This model") -> None:
    """Raises a ``ValueError`` naming the fix when ``sample_rate != expected``."""
    if int(sample_rate) != int(expected):
        g = math.gcd(int(sample_rate), int(expected))
        up, down = int(expected) // g, int(sample_rate) // g
        raise ValueError(
            f"{what} expects audio sampled at {expected} Hz, but got sample_rate="
            f"{sample_rate}. Resample the waveform first, e.g. "
            f"jaxmm.audio_features.resample(audio, {sample_rate}, {expected}) (= scipy.signal."
            f"resample_poly(audio, {up}, {down}, axis=-1)) or librosa.resample(audio, "
            f"orig_sr={sample_rate}, target_sr={expected})."
        )


def resample(audio: np.ndarray, orig_sr: int, target_sr: int) -> np.ndarray:
    """Resamples ``(..., N)`` audio on the host with a polyphase low-pass filter."""
    from scipy.signal import resample_poly

    if orig_sr <= 0 or target_sr <= 0:
        raise ValueError(f"Sample rates must be positive; got {orig_sr} -> {target_sr}.")
    if orig_sr == target_sr:
        return np.asarray(audio, np.float32)
    g = math.gcd(int(orig_sr), int(target_sr))
    return resample_poly(np.asarray(audio, np.float64), target_sr // g, orig_sr // g,
                         axis=-1).astype(np.float32)


# ---------------------------------------------------------------------------
# Framing and STFT
# ---------------------------------------------------------------------------


@functools.lru_cache(maxsize=32)
def window(kind: str, length: int, n_fft: int | None = None) -> np.ndarray:
    """Periodic (``fftbins``) window of ``length`` zero-padded (centred) to ``n_fft``.

    ``kind``: ``hann``, ``hamming`` or ``ones``/``boxcar``. Matches
    ``librosa.filters.get_window(kind, length, fftbins=True)``.
    """
    n = np.arange(length, dtype=np.float64)
    if kind in ("hann", "hanning"):
        w = 0.5 - 0.5 * np.cos(2 * np.pi * n / length)
    elif kind == "hamming":
        w = 0.54 - 0.46 * np.cos(2 * np.pi * n / length)
    elif kind in ("ones", "boxcar", "rectangular"):
        w = np.ones(length)
    else:
        raise ValueError(f"Unknown window {kind!r}; use 'hann', 'hamming' or 'boxcar'.")
    n_fft = length if n_fft is None else n_fft
    if length > n_fft:
        raise ValueError(f"win_length ({length}) must be <= n_fft ({n_fft}).")
    left = (n_fft - length) // 2
    return np.pad(w, (left, n_fft - length - left)).astype(np.float32)


def frame(x: Array, frame_length: int, hop_length: int) -> Array:
    """``(..., N)`` -> ``(..., frames, frame_length)`` with ``frames = 1 + (N - L) // hop``."""
    n = x.shape[-1]
    if n < frame_length:
        raise ValueError(
            f"Signal of {n} samples is shorter than one frame ({frame_length}); pad it or use "
            "center=True."
        )
    count = 1 + (n - frame_length) // hop_length
    idx = np.arange(count)[:, None] * hop_length + np.arange(frame_length)[None, :]
    return x[..., idx]


def stft(
    waveform: Array, *, n_fft: int = 2048, hop_length: int | None = None,
    win_length: int | None = None, window_kind: str = "hann", center: bool = True,
    pad_mode: Literal["constant", "reflect"] = "constant",
) -> Array:
    """Short-time Fourier transform, ``(..., N)`` -> complex ``(..., 1 + n_fft // 2, frames)``.

    Same conventions as ``librosa.stft``: ``hop_length`` defaults to
    ``win_length // 4``, ``win_length`` to ``n_fft``; with ``center`` the
    signal is padded by ``n_fft // 2`` on both sides (zeros, or a reflection
    with ``pad_mode="reflect"`` as Whisper/torch.stft do).
    """
    x = jnp.asarray(waveform, jnp.float32)
    win_length = n_fft if win_length is None else win_length
    hop_length = win_length // 4 if hop_length is None else hop_length
    if hop_length < 1:
        raise ValueError(f"hop_length must be >= 1; got {hop_length}.")
    if center:
        pad = [(0, 0)] * (x.ndim - 1) + [(n_fft // 2, n_fft // 2)]
        if pad_mode == "reflect" and x.shape[-1] <= n_fft // 2:
            raise ValueError(
                f"Reflect padding needs more than n_fft // 2 = {n_fft // 2} samples; got "
                f"{x.shape[-1]}."
            )
        if pad_mode not in ("constant", "reflect"):
            raise ValueError(f"pad_mode must be 'constant' or 'reflect'; got {pad_mode!r}.")
        x = jnp.pad(x, pad, mode=pad_mode)
    frames = frame(x, n_fft, hop_length) * jnp.asarray(window(window_kind, win_length, n_fft))
    spec = jnp.fft.rfft(frames, n=n_fft, axis=-1)  # (..., frames, freq)
    return jnp.swapaxes(spec, -1, -2)


def spectrogram(waveform: Array, *, power: float = 2.0, **stft_kwargs) -> Array:
    """``|stft|^power`` (``power=1`` magnitude, ``2`` power), ``(..., freq, frames)``."""
    mag = jnp.abs(stft(waveform, **stft_kwargs))
    return mag * mag if power == 2.0 else mag**power


# ---------------------------------------------------------------------------
# Mel scale
# ---------------------------------------------------------------------------

_F_SP = 200.0 / 3  # Slaney: linear part, Hz per mel
_MIN_LOG_HZ = 1000.0
_MIN_LOG_MEL = _MIN_LOG_HZ / _F_SP
_LOGSTEP = math.log(6.4) / 27.0


def hz_to_mel(freq: np.ndarray | float, scale: MelScale = "slaney") -> np.ndarray:
    """Hz -> mel (``slaney``: linear below 1 kHz, log above; ``htk``: 2595 log10(1+f/700))."""
    f = np.asarray(freq, np.float64)
    if scale == "htk":
        return 2595.0 * np.log10(1.0 + f / 700.0)
    if scale != "slaney":
        raise ValueError(f"Unknown mel scale {scale!r}; use 'slaney' or 'htk'.")
    mel = f / _F_SP
    log_part = _MIN_LOG_MEL + np.log(np.maximum(f, _MIN_LOG_HZ) / _MIN_LOG_HZ) / _LOGSTEP
    return np.where(f >= _MIN_LOG_HZ, log_part, mel)


def mel_to_hz(mel: np.ndarray | float, scale: MelScale = "slaney") -> np.ndarray:
    """Inverse of :func:`hz_to_mel`."""
    m = np.asarray(mel, np.float64)
    if scale == "htk":
        return 700.0 * (10.0 ** (m / 2595.0) - 1.0)
    if scale != "slaney":
        raise ValueError(f"Unknown mel scale {scale!r}; use 'slaney' or 'htk'.")
    return np.where(m >= _MIN_LOG_MEL, _MIN_LOG_HZ * np.exp(_LOGSTEP * (m - _MIN_LOG_MEL)),
                    _F_SP * m)


@functools.lru_cache(maxsize=32)
def mel_filterbank(
    sample_rate: int, n_fft: int, n_mels: int = 128, fmin: float = 0.0,
    fmax: float | None = None, scale: MelScale = "slaney", norm: str | None = "slaney",
) -> np.ndarray:
    """Triangular mel filters ``(n_mels, 1 + n_fft // 2)`` (``librosa.filters.mel``).

    ``norm="slaney"`` scales each filter to unit area (``2 / bandwidth``);
    ``None`` leaves peaks at 1.
    """
    fmax = sample_rate / 2.0 if fmax is None else fmax
    if not 0 <= fmin < fmax <= sample_rate / 2.0:
        raise ValueError(
            f"Need 0 <= fmin < fmax <= sample_rate / 2 = {sample_rate / 2}; got fmin={fmin}, "
            f"fmax={fmax}."
        )
    if norm not in ("slaney", None):
        raise ValueError(f"Unknown mel norm {norm!r}; use 'slaney' or None.")
    fft_freqs = np.linspace(0, sample_rate / 2.0, 1 + n_fft // 2)
    mel_f = mel_to_hz(np.linspace(hz_to_mel(fmin, scale), hz_to_mel(fmax, scale), n_mels + 2),
                      scale)
    fdiff = np.diff(mel_f)
    ramps = mel_f[:, None] - fft_freqs[None, :]
    lower = -ramps[:-2] / fdiff[:-1, None]
    upper = ramps[2:] / fdiff[1:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper))
    if norm == "slaney":
        weights *= (2.0 / (mel_f[2:] - mel_f[:-2]))[:, None]
    return weights.astype(np.float32)


def melspectrogram(
    waveform: Array, *, sample_rate: int, n_fft: int = 2048, hop_length: int = 512,
    win_length: int | None = None, window_kind: str = "hann", center: bool = True,
    pad_mode: Literal["constant", "reflect"] = "constant", power: float = 2.0,
    n_mels: int = 128, fmin: float = 0.0, fmax: float | None = None,
    mel_scale: MelScale = "slaney", norm: str | None = "slaney",
) -> Array:
    """Mel spectrogram ``(..., n_mels, frames)``; defaults of ``librosa.feature.melspectrogram``."""
    spec = spectrogram(waveform, power=power, n_fft=n_fft, hop_length=hop_length,
                       win_length=win_length, window_kind=window_kind, center=center,
                       pad_mode=pad_mode)
    fb = jnp.asarray(mel_filterbank(sample_rate, n_fft, n_mels, fmin, fmax, mel_scale, norm))
    return jnp.einsum("mf,...ft->...mt", fb, spec, precision=jax.lax.Precision.HIGHEST)


def power_to_db(spec: Array, *, ref: float = 1.0, amin: float = 1e-10,
                top_db: float | None = 80.0) -> Array:
    """``10 log10(max(amin, S) / ref)``, floored at ``max - top_db`` per example.

    The maximum is taken over the last two axes (one spectrogram).
    """
    db = 10.0 * jnp.log10(jnp.maximum(amin, spec)) - 10.0 * math.log10(max(amin, ref))
    if top_db is not None:
        db = jnp.maximum(db, db.max(axis=(-2, -1), keepdims=True) - top_db)
    return db


@functools.lru_cache(maxsize=32)
def dct_matrix(n_out: int, n_in: int) -> np.ndarray:
    """Orthonormal DCT-II matrix ``(n_out, n_in)`` (``scipy.fft.dct(type=2, norm="ortho")``)."""
    k = np.arange(n_out)[:, None]
    n = np.arange(n_in)[None, :]
    d = np.cos(np.pi * k * (2 * n + 1) / (2 * n_in)) * np.sqrt(2.0 / n_in)
    d[0] /= np.sqrt(2.0)
    return d.astype(np.float32)


def mfcc(waveform: Array, *, sample_rate: int, n_mfcc: int = 20, lifter: float = 0.0,
         top_db: float | None = 80.0, **mel_kwargs) -> Array:
    """MFCCs ``(..., n_mfcc, frames)``: DCT-II (ortho) of the dB mel spectrogram.

    Equals ``librosa.feature.mfcc(y=..., sr=sample_rate, n_mfcc=...)`` with the
    same mel arguments (``n_mels`` defaults to 128).
    """
    db = power_to_db(melspectrogram(waveform, sample_rate=sample_rate, **mel_kwargs),
                     top_db=top_db)
    n_mels = db.shape[-2]
    if n_mfcc > n_mels:
        raise ValueError(f"n_mfcc ({n_mfcc}) cannot exceed n_mels ({n_mels}).")
    out = jnp.einsum("km,...mt->...kt", jnp.asarray(dct_matrix(n_mfcc, n_mels)), db,
                     precision=jax.lax.Precision.HIGHEST)
    if lifter > 0:
        lift = 1 + (lifter / 2) * np.sin(np.pi * np.arange(1, n_mfcc + 1) / lifter)
        out = out * jnp.asarray(lift, jnp.float32)[:, None]
    return out


# ---------------------------------------------------------------------------
# Whisper
# ---------------------------------------------------------------------------


def whisper_log_mel(
    audio: Array, *, sample_rate: int, n_mels: int = 80, chunk_seconds: float | None = 30.0,
    return_attention_mask: bool = False,
) -> Array | tuple[Array, Array]:
    """Whisper's log-mel features (``WhisperFeatureExtractor``), ``(..., n_mels, frames)``.

    Audio ``(..., N)`` at 16 kHz is zero-padded or truncated to
    ``chunk_seconds`` (30 s -> 3000 frames; ``None`` keeps its length), then:
    STFT (n_fft 400, hop 160, periodic Hann, reflect padding), power, the last
    frame dropped, Slaney mel filters up to 8 kHz, ``log10(max(x, 1e-10))``,
    clamp to ``max - 8`` per example, ``(x + 4) / 4``.

    With ``return_attention_mask`` also returns a ``(..., frames)`` int32 mask
    marking frames of real (unpadded) audio, as the HF extractor does.
    """
    check_sample_rate(sample_rate, WHISPER_SAMPLE_RATE, "Whisper features")
    if n_mels not in (80, 128):
        raise ValueError(f"Whisper uses 80 (v1-v2) or 128 (v3) mel bins; got n_mels={n_mels}.")
    x = jnp.asarray(audio, jnp.float32)
    n = x.shape[-1]
    if chunk_seconds is not None:
        target = int(round(chunk_seconds * WHISPER_SAMPLE_RATE))
        x = x[..., :target] if n >= target else jnp.pad(
            x, [(0, 0)] * (x.ndim - 1) + [(0, target - n)])
    feats = _whisper_features(x, n_mels, x.shape[-1] // WHISPER_HOP_LENGTH)
    if not return_attention_mask:
        return feats
    frames = feats.shape[-1]
    real = min(n, x.shape[-1])
    mask = (np.arange(frames) * WHISPER_HOP_LENGTH < real).astype(np.int32)
    return feats, jnp.broadcast_to(jnp.asarray(mask), feats.shape[:-2] + (frames,))


def log_mel(audio: Array, *, n_mels: int, frames: int) -> Array:
    """``(B, N)`` 16 kHz audio -> ``(B, n_mels, frames)`` log-mel features.

    Whisper's recipe for any mel count: the audio is padded or cut to
    ``frames * 160`` samples, then STFT (n_fft 400, hop 160, Hann, reflect
    padding), power, the last frame dropped, Slaney mel filters up to 8 kHz,
    ``log10(max(x, 1e-10))`` clamped to ``max - 8`` per example, ``(x + 4) / 4``
    (equal to :func:`jaxmm.audio_features.whisper_log_mel` at 80 or 128 mels).
    """
    x = jnp.asarray(audio, jnp.float32)
    target = frames * WHISPER_HOP_LENGTH
    n = x.shape[-1]
    x = x[..., :target] if n >= target else jnp.pad(x, [(0, 0)] * (x.ndim - 1) +
                                                    [(0, target - n)])
    return _whisper_features(x, n_mels, frames)


def _whisper_features(x: Array, n_mels: int, frames: int) -> Array:
    """The first ``frames`` frames of Whisper's log-mel recipe on 16 kHz audio ``x``."""
    power = spectrogram(x, n_fft=WHISPER_N_FFT, hop_length=WHISPER_HOP_LENGTH,
                        center=True, pad_mode="reflect")[..., :frames]
    fb = jnp.asarray(mel_filterbank(WHISPER_SAMPLE_RATE, WHISPER_N_FFT, n_mels, 0.0, 8000.0))
    mel = jnp.einsum("mf,...ft->...mt", fb, power, precision=jax.lax.Precision.HIGHEST)
    logs = jnp.log10(jnp.maximum(mel, 1e-10))
    logs = jnp.maximum(logs, logs.max(axis=(-2, -1), keepdims=True) - 8.0)
    return (logs + 4.0) / 4.0
