"""How tasks read any modality: from the model's declared inputs.

A model declares the fields it reads (:mod:`jaxmm.models.specs`); the tasks
take from that declaration which batch fields to pass, the shapes of the init
example and the synthetic layout, so a new encoder needs no task change. Raw
``audio`` waveforms (the built-in scenes' ``audio_text`` and
``audio_classification`` batches) become the log-mel ``input_features`` an
audio encoder declares, on device (:func:`audio_to_features`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp

from jaxmm.audio_features import mel_filterbank, spectrogram
from jaxmm.config import ConfigError
from jaxmm.models.specs import MODALITY_FIELDS, InputSpec, spec_modalities

__all__ = ["audio_to_features", "check_modalities", "log_mel", "modality_fields"]

SAMPLE_RATE = 16000
N_FFT, HOP = 400, 160  # 25 ms windows, 10 ms hop at 16 kHz (Whisper's and AST's framing)
_TEXT_EXTRA = ("attention_mask", "token_type_ids")


def modality_fields(specs: Mapping[str, InputSpec], modalities: Sequence[str]) -> tuple[str, ...]:
    """The batch fields a task passes for ``modalities``: the declared ones, the other
    fields of the same modality (raw ``audio`` next to ``input_features``) and, for text,
    the mask and segment ids the model declares."""
    fields: list[str] = []
    for m in modalities:
        fields += [f for f in MODALITY_FIELDS[m] if f in specs]
        fields += [f for f in MODALITY_FIELDS[m] if f not in fields]
        if m == "text":
            fields += [f for f in _TEXT_EXTRA if f in specs]
    return tuple(dict.fromkeys(fields))


def check_modalities(wanted: Sequence[str], specs: Mapping[str, InputSpec] | None,
                     model: Any, option: str) -> tuple[str, ...]:
    """``wanted`` if the model has an encoder for each; else a one-line :class:`ConfigError`
    naming the fix. ``option`` is the config key that named them."""
    unknown = [m for m in wanted if m not in MODALITY_FIELDS]
    if unknown:
        raise ConfigError(
            f"{option}: unknown modality {', '.join(map(repr, unknown))}; use "
            f"{', '.join(MODALITY_FIELDS)}.")
    if specs is None:
        return tuple(wanted)
    have = spec_modalities(specs)
    lacking = [m for m in wanted if m not in have]
    if lacking:
        name = type(model).__name__
        raise ConfigError(
            f"{option} asks for {', '.join(lacking)}, but the model ({name}) has no encoder "
            f"for it: it reads {', '.join(have) or 'nothing declared'}.",
            hint=f"Set {option} to modalities of the model ({', '.join(have)}), or choose a "
            f"model with a {lacking[0]} encoder (e.g. dual_encoder with "
            f"modalities=({lacking[0]!r}, 'text'), multimodal_classifier with "
            f"fusion.modalities including {lacking[0]!r}, ast_classifier, video_classifier).")
    return tuple(wanted)


def log_mel(audio: jax.Array, *, n_mels: int, frames: int) -> jax.Array:
    """``(B, N)`` 16 kHz audio -> ``(B, n_mels, frames)`` log-mel features.

    Whisper's recipe for any mel count: the audio is padded or cut to
    ``frames * 160`` samples, then STFT (n_fft 400, hop 160, Hann, reflect
    padding), power, the last frame dropped, Slaney mel filters up to 8 kHz,
    ``log10(max(x, 1e-10))`` clamped to ``max - 8`` per example, ``(x + 4) / 4``
    (equal to :func:`jaxmm.audio_features.whisper_log_mel` at 80 or 128 mels).
    """
    x = jnp.asarray(audio, jnp.float32)
    target = frames * HOP
    n = x.shape[-1]
    x = x[..., :target] if n >= target else jnp.pad(x, [(0, 0)] * (x.ndim - 1) +
                                                    [(0, target - n)])
    power = spectrogram(x, n_fft=N_FFT, hop_length=HOP, center=True, pad_mode="reflect")
    power = power[..., :frames]
    fb = jnp.asarray(mel_filterbank(SAMPLE_RATE, N_FFT, n_mels, 0.0, 8000.0))
    mel = jnp.einsum("mf,...ft->...mt", fb, power, precision=jax.lax.Precision.HIGHEST)
    logs = jnp.log10(jnp.maximum(mel, 1e-10))
    logs = jnp.maximum(logs, logs.max(axis=(-2, -1), keepdims=True) - 8.0)
    return (logs + 4.0) / 4.0


def audio_to_features(batch: Mapping[str, Any], specs: Mapping[str, InputSpec] | None
                      ) -> dict[str, Any]:
    """``batch`` with ``input_features`` made from raw ``audio`` when the model declares
    fixed-size features and the batch has only the waveform (else unchanged)."""
    batch = dict(batch)
    spec = (specs or {}).get("input_features")
    if spec is None or "audio" not in batch or "input_features" in batch or not spec.fixed:
        return batch
    n_mels, frames = spec.shape
    batch["input_features"] = log_mel(batch["audio"], n_mels=int(n_mels), frames=int(frames))
    return batch
