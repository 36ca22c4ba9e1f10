"""Generation settings: one frozen :class:`GenerationConfig`, and what derives from it.

Every knob of :func:`jaxmm.generate` lives in :class:`GenerationConfig`, with
Hugging Face's names, defaults and meaning. It is validated once, when built.
The compiled loop needs the settings split in two, and both halves derive from
the config (never assembled by hand):

* :class:`DecodePlan` (:meth:`GenerationConfig.plan`): what must be static
  under ``jax.jit`` (lengths, beam count, which processors run). Each distinct
  plan compiles its own program; equal configs give equal plans.
* :class:`TracedSettings` (:meth:`GenerationConfig.traced`): float and id
  settings passed as arrays, so changing them (a temperature, a penalty, the
  EOS ids) reuses the compiled program.

The special token ids default to the model config's; :class:`SpecialTokens`
(:meth:`GenerationConfig.special_tokens`) holds them once resolved.
"""

from __future__ import annotations

import dataclasses
import warnings
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from jaxmm.config import ConfigError
from jaxmm.models.config_fields import DecoderStartFields, SpecialTokenFields

Array = jax.Array

__all__ = ["DecodePlan", "GenerationConfig", "SpecialTokens", "TracedSettings"]


def _is_int(x: Any) -> bool:
    return isinstance(x, (int, np.integer)) and not isinstance(x, bool)


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(x, bool)


def _eos_tuple(value: Any) -> tuple[int, ...]:
    """``eos_token_id`` as a tuple of ids (``None``: empty); raises on bad values."""
    if value is None:
        return ()
    ids = (value,) if isinstance(value, (int, np.integer)) else tuple(value)
    if any(not _is_int(e) or e < 0 for e in ids):
        raise ConfigError(f"eos_token_id must be a non-negative int or a list of them; "
                          f"got {value!r}.")
    return tuple(int(e) for e in ids)


@dataclasses.dataclass(frozen=True)
class DecodePlan:
    """The static part of a :class:`GenerationConfig` (plus whether the model is
    an encoder-decoder): each distinct value compiles its own program.

    ``top_k`` is 0 and the ``use_*`` flags are off for processors that would not
    change the scores (greedy search ignores the sampling warpers).
    """

    encoder_decoder: bool
    max_new_tokens: int
    num_beams: int
    num_return_sequences: int
    do_sample: bool
    top_k: int
    use_top_p: bool
    use_temperature: bool
    use_repetition_penalty: bool
    no_repeat_ngram_size: int
    num_eos: int
    early_stopping: bool | str
    output_scores: bool

    @property
    def rows_per_input(self) -> int:
        """Sequences decoded per input: the beams, or the returned samples."""
        return self.num_beams if self.num_beams > 1 else self.num_return_sequences


@flax.struct.dataclass
class TracedSettings:
    """The traced part of a :class:`GenerationConfig`: changing these reuses the program.

    Attributes:
      temperature: ``()`` float32, the sampling temperature.
      top_p: ``()`` float32, the nucleus mass.
      repetition_penalty: ``()`` float32, the CTRL penalty.
      length_penalty: ``()`` float32, beam search's length exponent.
      min_new_tokens: ``()`` int32, EOS is suppressed before this many new tokens.
      eos: ``(num_eos,)`` int32, the EOS ids.
      pad: ``()`` int32, the id written after a sequence has finished.
    """

    temperature: Array
    top_p: Array
    repetition_penalty: Array
    length_penalty: Array
    min_new_tokens: Array
    eos: Array
    pad: Array


@dataclasses.dataclass(frozen=True)
class SpecialTokens:
    """Special ids after filling the unset ones from the model config.

    ``eos`` may be empty (no EOS: every sequence runs ``max_new_tokens``);
    ``pad`` falls back to the first EOS id; ``decoder_start`` falls back to
    ``bos``. Any of ``pad``, ``bos`` and ``decoder_start`` may stay ``None``.
    """

    eos: tuple[int, ...]
    pad: int | None
    bos: int | None
    decoder_start: int | None

    @property
    def fill(self) -> int:
        """The id written in padding positions (``pad``, or 0 when there is none)."""
        return 0 if self.pad is None else self.pad


@dataclasses.dataclass(frozen=True, kw_only=True)
class GenerationConfig(SpecialTokenFields, DecoderStartFields):
    """All settings of :func:`jaxmm.generate`, with Hugging Face semantics.

    Attributes:
      max_new_tokens: required; at most this many new tokens per sequence.
      min_new_tokens: EOS is suppressed until this many new tokens exist.
      do_sample: multinomial sampling (beam sampling with ``num_beams > 1``);
        ``generate`` then needs ``rng=``. Otherwise greedy or beam search.
      temperature, top_k, top_p: the sampling warpers, applied in that order
        (``top_k=0`` / ``top_p=1`` turn a filter off); ignored without
        ``do_sample``.
      num_beams: beam search width (1: no beam search).
      length_penalty: finished hypotheses score
        ``sum_logprobs / generated_length ** length_penalty`` (EOS counted).
      early_stopping: ``True``, ``False`` or ``"never"`` (when beam search stops).
      num_return_sequences: sequences returned per input (<= ``num_beams``
        with beam search; needs ``do_sample`` otherwise).
      repetition_penalty: CTRL penalty (> 1 discourages repeats, prompt included).
      no_repeat_ngram_size: forbid repeating any n-gram of this size (0: off).
      eos_token_id: an id or a tuple of ids (a list is accepted and stored as a
        tuple by :meth:`from_dict`); ``None``: the model config's; ``()``: none.
      pad_token_id, bos_token_id, decoder_start_token_id: ``None``: the model
        config's. ``pad_token_id`` then falls back to the first EOS id.
      output_scores: also return the processed scores of every step.
      bucket_multiple: pad prompt lengths to multiples of this instead of the
        default buckets (powers of two up to 128, then multiples of 128).
    """

    max_new_tokens: int
    min_new_tokens: int = 0
    do_sample: bool = False
    temperature: float = 1.0
    top_k: int = 50
    top_p: float = 1.0
    num_beams: int = 1
    length_penalty: float = 1.0
    early_stopping: bool | str = False
    num_return_sequences: int = 1
    repetition_penalty: float = 1.0
    no_repeat_ngram_size: int = 0
    output_scores: bool = False
    bucket_multiple: int | None = None

    def validate(self) -> None:
        """Raises :class:`~jaxmm.config.ConfigError` (a ``ValueError``) naming the
        bad setting; warns when sampling knobs are set without ``do_sample``."""
        self._check_lengths()
        self._check_search()
        self._check_penalties_and_ids()
        if not self.do_sample and (self.temperature != 1.0 or self.top_k not in (0, 50)
                                   or self.top_p < 1.0):
            warnings.warn("temperature/top_k/top_p only apply with do_sample=True; they are "
                          "ignored for greedy and beam search.", UserWarning, stacklevel=4)

    def _check_lengths(self) -> None:
        if not _is_int(self.max_new_tokens) or self.max_new_tokens < 1:
            raise ConfigError(f"max_new_tokens must be an int >= 1; got {self.max_new_tokens!r}.")
        if not _is_int(self.min_new_tokens) or self.min_new_tokens < 0:
            raise ConfigError(f"min_new_tokens must be an int >= 0; got {self.min_new_tokens!r}.")
        multiple = self.bucket_multiple
        if multiple is not None and (not _is_int(multiple) or multiple < 1):
            raise ConfigError(f"bucket_multiple must be an int >= 1 or None; got {multiple!r}.")

    def _check_search(self) -> None:
        beams, returned = self.num_beams, self.num_return_sequences
        if not _is_int(beams) or beams < 1:
            raise ConfigError(f"num_beams must be an int >= 1; got {beams!r}. Use 1 for "
                              "greedy/sampling.")
        if not _is_int(returned) or returned < 1:
            raise ConfigError(f"num_return_sequences must be an int >= 1; got {returned!r}.")
        if beams > 1 and returned > beams:
            raise ConfigError(f"num_return_sequences ({returned}) cannot exceed num_beams "
                              f"({beams}); raise num_beams or lower num_return_sequences.")
        if beams == 1 and not self.do_sample and returned > 1:
            raise ConfigError("Greedy search returns one sequence per input; "
                              "num_return_sequences > 1 needs do_sample=True or num_beams >= "
                              "num_return_sequences.")
        if not (_is_number(self.temperature) and self.temperature > 0):
            raise ConfigError(f"temperature must be a float > 0; got {self.temperature!r} (for "
                              "greedy decoding use do_sample=False).")
        if not _is_int(self.top_k) or self.top_k < 0:
            raise ConfigError(f"top_k must be an int >= 0 (0 disables it); got {self.top_k!r}.")
        if not (_is_number(self.top_p) and 0.0 < self.top_p <= 1.0):
            raise ConfigError(f"top_p must be in (0, 1] (1 disables it); got {self.top_p!r}.")
        if not _is_number(self.length_penalty):
            raise ConfigError(f"length_penalty must be a float; got {self.length_penalty!r}.")
        stop = self.early_stopping
        if not (stop is True or stop is False or stop == "never"):
            raise ConfigError(f"early_stopping must be True, False or 'never'; got {stop!r}.")

    def _check_penalties_and_ids(self) -> None:
        rep, ngram = self.repetition_penalty, self.no_repeat_ngram_size
        if not (_is_number(rep) and rep > 0):
            raise ConfigError(f"repetition_penalty must be > 0 (1.0 disables it); got {rep!r}.")
        if not _is_int(ngram) or ngram < 0:
            raise ConfigError(f"no_repeat_ngram_size must be an int >= 0 (0 disables it); "
                              f"got {ngram!r}.")
        _eos_tuple(self.eos_token_id)
        for name in ("pad_token_id", "bos_token_id", "decoder_start_token_id"):
            value = getattr(self, name)
            if value is not None and (not _is_int(value) or value < 0):
                raise ConfigError(f"{name} must be a non-negative int or None; got {value!r}.")

    # -- what derives from the config -------------------------------------

    def special_tokens(self, model_config: Any = None) -> SpecialTokens:
        """The special ids, unset ones taken from ``model_config`` (any object with
        ``eos_token_id`` etc. attributes, or ``None``)."""

        def pick(name: str):
            value = getattr(self, name)
            return getattr(model_config, name, None) if value is None else value

        eos = _eos_tuple(pick("eos_token_id"))
        pad = pick("pad_token_id")
        pad = eos[0] if pad is None and eos else pad
        bos = pick("bos_token_id")
        start = pick("decoder_start_token_id")
        if self.min_new_tokens > 0 and not eos:
            raise ConfigError("min_new_tokens > 0 works by suppressing EOS, but no eos_token_id "
                              "is set; pass eos_token_id= (or set it in the model config).")
        return SpecialTokens(eos=eos, pad=pad, bos=bos,
                             decoder_start=bos if start is None else start)

    def plan(self, *, encoder_decoder: bool, num_eos: int) -> DecodePlan:
        """The static settings of the compiled loop (``num_eos``: the number of
        resolved EOS ids, :attr:`SpecialTokens.eos`)."""
        sample = bool(self.do_sample)
        return DecodePlan(
            encoder_decoder=bool(encoder_decoder), max_new_tokens=int(self.max_new_tokens),
            num_beams=int(self.num_beams), num_return_sequences=int(self.num_return_sequences),
            do_sample=sample, top_k=int(self.top_k) if sample else 0,
            use_top_p=sample and self.top_p < 1.0,
            use_temperature=sample and self.temperature != 1.0,
            use_repetition_penalty=self.repetition_penalty != 1.0,
            no_repeat_ngram_size=int(self.no_repeat_ngram_size), num_eos=int(num_eos),
            early_stopping=self.early_stopping, output_scores=bool(self.output_scores),
        )

    def traced(self, tokens: SpecialTokens) -> TracedSettings:
        """The traced settings of the compiled loop, as arrays."""
        return TracedSettings(
            temperature=jnp.float32(self.temperature), top_p=jnp.float32(self.top_p),
            repetition_penalty=jnp.float32(self.repetition_penalty),
            length_penalty=jnp.float32(self.length_penalty),
            min_new_tokens=jnp.int32(self.min_new_tokens),
            eos=jnp.asarray(tokens.eos, jnp.int32).reshape(-1), pad=jnp.int32(tokens.fill),
        )
