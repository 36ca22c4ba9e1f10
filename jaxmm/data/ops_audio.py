"""Audio ops (TF, one example at a time): waveforms at 16 kHz, float32 in [-1, 1].

Signal processing is not re-implemented here: ``resample`` and ``log_mel`` are
thin ops over the project's audio front end (:mod:`jaxmm.audio_features`), so the math
lives in one place. Models can equally take ``audio`` and compute
``input_features`` on device with :func:`jaxmm.audio_features.whisper_log_mel`, which is
usually faster than running it per example on the host.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

import numpy as np
import tensorflow as tf

from jaxmm.config import ConfigError
from jaxmm.data.preprocess import register, require

# The project's log-mel front end (module:function). A replacement must accept
# ``(waveform float32 (N,), sample_rate=..., **kwargs)`` and return ``(n_mels, frames)``.
DEFAULT_LOG_MEL = "jaxmm.audio_features:whisper_log_mel"


@register("decode_audio")
def decode_audio(key: str = "audio", rate_key: str | None = None):
    """Decodes WAV bytes to float32 mono in [-1, 1] (``tf.audio.decode_wav``).

    Already decoded waveforms (tfds ``Audio`` features) pass through. With
    ``rate_key`` the file's sample rate is written there (resample with
    ``resample`` when it is not 16 kHz).
    """

    def op(ex, seed):
        x = require(ex, key, "decode_audio")
        out = dict(ex)
        if x.dtype == tf.string:
            wave, rate = tf.audio.decode_wav(x)
            out[key] = tf.reduce_mean(wave, axis=-1)
            if rate_key:
                out[rate_key] = rate
        return out

    return op


@register("audio_to_float")
def audio_to_float(key: str = "audio"):
    """Integer PCM (int16/int32/int64 holding int16 values) -> float32 in [-1, 1]."""

    def op(ex, seed):
        x = require(ex, key, "audio_to_float")
        if x.dtype.is_floating:
            return {**ex, key: tf.cast(x, tf.float32)}
        return {**ex, key: tf.cast(x, tf.float32) / 32768.0}

    return op


@register("resample")
def resample(rate_in: int, rate_out: int = 16000, key: str = "audio"):
    """Polyphase resampling from ``rate_in`` to ``rate_out``
    (:func:`jaxmm.audio_features.resample`)."""
    from jaxmm.audio_features import resample as resample_fn

    def run(x):
        return resample_fn(x, rate_in, rate_out)

    def op(ex, seed):
        x = tf.cast(require(ex, key, "resample"), tf.float32)
        if rate_in == rate_out:
            return {**ex, key: x}
        out = tf.numpy_function(run, [x], tf.float32, stateful=False)
        out.set_shape([None])
        return {**ex, key: out}

    return op


@register("crop_or_pad")
def crop_or_pad(length: int, key: str = "audio", random: bool = True,
                mask_key: str | None = None):
    """Crops (randomly, or from the start) or zero-pads a 1-D signal to ``length``.

    With ``mask_key`` also writes an int32 ``(length,)`` mask of real samples.
    """

    def op(ex, seed):
        x = require(ex, key, "crop_or_pad")
        n = tf.shape(x)[0]
        if random:
            start = tf.random.stateless_uniform([], seed, 0, tf.maximum(n - length, 0) + 1,
                                                dtype=tf.int32)
        else:
            start = 0
        x = x[start:start + length]
        kept = tf.shape(x)[0]
        out = tf.pad(x, [[0, length - kept]])
        out.set_shape([length])
        result = {**ex, key: out}
        if mask_key:
            result[mask_key] = tf.cast(tf.range(length) < kept, tf.int32)
        return result

    return op


def _resolve(fn: str | Callable) -> Callable:
    if callable(fn):
        return fn
    module, _, name = fn.partition(":")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError):
        raise ConfigError(
            f"log_mel: cannot import {fn!r}. Name the project's log-mel front end "
            "(module:function) with fn=..., or feed 'audio' to a model that computes "
            "its features on device."
        ) from None


@register("log_mel")
def log_mel(fn: str | Callable = DEFAULT_LOG_MEL, key: str = "audio",
            out_key: str = "input_features", sample_rate: int = 16000, **kwargs: Any):
    """``input_features = fn(audio, sample_rate=..., **kwargs)`` via ``tf.numpy_function``.

    ``fn`` returns float32 ``(n_mels, frames)`` (Whisper layout).
    """
    func = _resolve(fn)
    probe = np.asarray(func(np.zeros(sample_rate, np.float32), sample_rate=sample_rate, **kwargs))
    if probe.ndim != 2:
        raise ConfigError(f"log_mel: {fn!r} must return (n_mels, frames); got {probe.shape}.")
    n_mels = probe.shape[0]

    def run(x):
        return np.asarray(func(x, sample_rate=sample_rate, **kwargs), np.float32)

    def op(ex, seed):
        x = tf.cast(require(ex, key, "log_mel"), tf.float32)
        out = tf.numpy_function(run, [x], tf.float32, stateful=False)
        out.set_shape([n_mels, None])
        return {**ex, out_key: out}

    return op
