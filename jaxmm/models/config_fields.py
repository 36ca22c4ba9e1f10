"""Config fields shared by the text models: vocabulary and special token ids.

Like :mod:`jaxmm.layers.config_fields` (widths, dropout, compute), each field is
declared once here, and a family changes its default with ``DEFAULTS``:

* :class:`VocabFields`: ``vocab_size`` (>= 1; no shared default, every user
  sets its own). Text models and the text stem of multimodal encoders.
* :class:`PadTokenFields`: ``pad_token_id``.
* :class:`SpecialTokenFields`: ``pad_token_id`` + ``bos_token_id``,
  ``eos_token_id``. Also :class:`jaxmm.generation.GenerationConfig`.
* :class:`TokenFields`: ``vocab_size`` + the special ids. BERT/RoBERTa,
  GPT/Llama, T5, CLIP text, Whisper.
* :class:`DecoderStartFields`: ``pad_token_id`` + ``decoder_start_token_id``.
  T5, Whisper, the captioner and VQA.

The captioner/VQA decoder piece (``decoder``, ``encoder_projection`` and the
ids derived from the decoder) is
:class:`jaxmm.models.captioner.ConditionalDecoderFields`.
"""

from __future__ import annotations

import dataclasses

from jaxmm.config import ConfigBase

__all__ = ["DecoderStartFields", "PadTokenFields", "SpecialTokenFields", "TokenFields",
           "VocabFields"]


@dataclasses.dataclass(frozen=True, kw_only=True)
class VocabFields(ConfigBase):
    """Attributes:
      vocab_size: number of token ids (the embedding table's rows).
    """

    vocab_size: int

    def check_fields(self) -> None:
        self.require_at_least(1, "vocab_size")


@dataclasses.dataclass(frozen=True, kw_only=True)
class PadTokenFields(ConfigBase):
    """Attributes:
      pad_token_id: the padding id (``None`` if the vocabulary has none); it
        also replaces ignored label positions (``-100``) when decoder inputs are
        made by shifting labels.
    """

    pad_token_id: int | None = None


@dataclasses.dataclass(frozen=True, kw_only=True)
class SpecialTokenFields(PadTokenFields):
    """Special ids (``None`` where absent).

    Attributes:
      pad_token_id: see :class:`PadTokenFields`.
      bos_token_id: beginning-of-sequence id.
      eos_token_id: end-of-sequence id, or a tuple of several end ids (Llama 3).
    """

    bos_token_id: int | None = None
    eos_token_id: int | tuple[int, ...] | None = None

    @property
    def first_eos_token_id(self) -> int | None:
        """``eos_token_id``, or the first of several."""
        eos = self.eos_token_id
        return eos[0] if isinstance(eos, tuple) else eos


@dataclasses.dataclass(frozen=True, kw_only=True)
class TokenFields(VocabFields, SpecialTokenFields):
    """A text vocabulary and its special ids: :class:`VocabFields` +
    :class:`SpecialTokenFields`."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class DecoderStartFields(PadTokenFields):
    """Ids of a decoder fed shifted labels (teacher forcing).

    Attributes:
      decoder_start_token_id: first decoder input (Hugging Face
        ``decoder_start_token_id``).
      pad_token_id: see :class:`PadTokenFields`.
    """

    decoder_start_token_id: int | None = None
