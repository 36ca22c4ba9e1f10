"""A vocabulary-level speech synthesiser for the built-in dataset.

Each word is rendered as a deterministic pattern of one to three "syllables",
each a pair of formant-like tones with a pitch harmonic under a Hann envelope.
The pattern is a pure function of the word (SHA-256 of its text), so every
occurrence of a word sounds alike and different words sound different; a
per-utterance seed adds small jitter (frequency, duration, amplitude, noise)
so models must generalise rather than memorise samples. This makes audio-text
alignment and speech-to-text learnable with tiny models, at 16 kHz.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib

import numpy as np

__all__ = ["SAMPLE_RATE", "SOURCE", "WordVoice", "synthesize", "word_voice"]

SAMPLE_RATE = 16000
# What the built-in dataset's metadata says its speech is (``jaxmm data info``).
SOURCE = ("word-level formant tones (jaxmm.data.speech): a learnable stand-in, "
          "not intelligible speech")


@dataclasses.dataclass(frozen=True)
class WordVoice:
    """The sound pattern of one word: per syllable (f1, f2, pitch) in Hz and length in s."""

    syllables: tuple[tuple[float, float, float, float], ...]


@functools.lru_cache(maxsize=4096)
def word_voice(word: str) -> WordVoice:
    """Deterministic pattern for ``word`` (a function of its text only)."""
    digest = hashlib.sha256(word.encode("utf-8")).digest()
    vals = np.frombuffer(digest, dtype=np.uint8).astype(np.float64) / 255.0
    n = 1 + int(digest[0]) % 3 if len(word) > 3 else 1
    syllables = []
    for i in range(n):
        v = vals[1 + 4 * i: 5 + 4 * i]
        f1 = 250.0 + 650.0 * v[0]
        f2 = 1000.0 + 1800.0 * v[1]
        pitch = 90.0 + 110.0 * v[2]
        length = 0.055 + 0.05 * v[3]
        syllables.append((f1, f2, pitch, length))
    return WordVoice(tuple(syllables))


def synthesize(
    text: str,
    seed: int = 0,
    *,
    sample_rate: int = SAMPLE_RATE,
    jitter: float = 1.0,
    gap: float = 0.03,
) -> np.ndarray:
    """Speaks ``text`` (whitespace-separated words): float32 waveform in [-1, 1].

    ``seed`` drives the jitter (about +-2% frequency, +-10% duration, amplitude
    and -35 dB noise); ``jitter=0`` gives the clean pattern.
    """
    rng = np.random.default_rng(seed)
    pieces = [np.zeros(int(gap * sample_rate), np.float32)]
    for word in text.split():
        for f1, f2, pitch, length in word_voice(word.lower()).syllables:
            jf = 1.0 + jitter * rng.uniform(-0.02, 0.02, size=3)
            dur = length * (1.0 + jitter * rng.uniform(-0.1, 0.1))
            t = np.arange(int(dur * sample_rate)) / sample_rate
            wave = (
                np.sin(2 * np.pi * f1 * jf[0] * t)
                + 0.6 * np.sin(2 * np.pi * f2 * jf[1] * t)
                + 0.3 * np.sin(2 * np.pi * pitch * jf[2] * t)
            )
            amp = 0.3 * (1.0 + jitter * rng.uniform(-0.15, 0.15))
            pieces.append((amp * np.hanning(len(t)) * wave).astype(np.float32))
        pieces.append(np.zeros(int(gap * sample_rate * (1.0 + jitter * rng.uniform(0, 0.5))),
                               np.float32))
    out = np.concatenate(pieces)
    if jitter:
        out = out + rng.normal(0.0, 0.3 * 10 ** (-35 / 20), out.shape).astype(np.float32)
    return np.clip(out, -1.0, 1.0).astype(np.float32)
