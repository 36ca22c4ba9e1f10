"""Captioner: an image, video or audio encoder + causal text decoder with cross-attention.

Compatible with Hugging Face ``VisionEncoderDecoderModel`` (ViT -> GPT-2): the
encoder is any registered image encoder (``vit``, ``clip_vision``, ``resnet``),
video encoder (``video``: video captioning) or audio encoder (``ast``,
``whisper_encoder``: AudioCaps-style audio captioning), the
decoder a :class:`~jaxmm.models.gpt.GPTLMHeadModel` with
``add_cross_attention``; when the encoder and decoder widths differ the encoder
states go through ``enc_to_dec_proj`` (a Dense layer), as in HF.

Training is teacher forcing: pass ``decoder_input_ids`` or, as HF does,
``labels`` alone; then ``decoder_input_ids = shift_tokens_right(labels, ...)``
(``decoder_start_token_id`` first, ``-100`` replaced by ``pad_token_id``) and
``logits[:, t]`` predicts ``labels[:, t]``.

Decoding protocol (:mod:`jaxmm.models.outputs`, used by ``jaxmm.generate``)::

    enc = model.apply(v, image, method="encode")        # BaseModelOutput
    out = model.apply(v, ids, encoder_hidden_states=enc.last_hidden_state,
                      decoder_attention_mask=m, decode=True, mutable=["cache"],
                      method="decode")

``output_attentions=True`` returns each decoder layer's cross-attention
``(B, H, T, S)`` over the encoder tokens; :func:`jaxmm.viz.cross_attention_maps` turns
them into per-token maps over the image patch grid.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import flax.linen as nn
import jax

from jaxmm.config import ConfigError
from jaxmm.models import registry
from jaxmm.models.config_fields import DecoderStartFields
from jaxmm.models.dual_encoder import resolve_encoder_config
from jaxmm.models.gpt import GPTConfig, GPTLMHeadModel
from jaxmm.models.outputs import (
    BaseModelOutput,
    CausalLMOutput,
    Seq2SeqLMOutput,
    shift_tokens_right,
)
from jaxmm.models.specs import input_specs, text_specs

Array = jax.Array

__all__ = [
    "CaptionerConfig",
    "ConditionalDecoder",
    "ConditionalDecoderFields",
    "ImageCaptioner",
]


_TINY_DECODER = dict(GPTConfig.SIZES["tiny"], vocab_size=512, max_position_embeddings=64,
                     bos_token_id=1, eos_token_id=2, pad_token_id=0)


@dataclasses.dataclass(frozen=True, kw_only=True)
class ConditionalDecoderFields(DecoderStartFields):
    """The text decoder of the captioner and of generative VQA, declared once.

    A GPT decoder with cross-attention over what an encoder produced (width
    ``encoder_width``, which the family defines).

    Attributes:
      decoder: :class:`GPTConfig` of the text decoder (a mapping is accepted);
        its cross-attention is switched on when the config is made.
      encoder_projection: Dense ``enc_to_dec_proj`` from ``encoder_width`` to the
        decoder's width; ``None`` adds it exactly when the widths differ
        (Hugging Face's rule).
      decoder_start_token_id, pad_token_id: ``None`` takes the decoder's
        ``bos_token_id`` and ``pad_token_id`` (or its first EOS when it has no
        pad) when the config is made.

    ``vocab_size``, ``max_position_embeddings``, ``bos_token_id`` and
    ``eos_token_id`` are read-only views of the decoder's (where the decoding
    protocol and the trainer look for them).
    """

    decoder: GPTConfig
    encoder_projection: bool | None = None

    @classmethod
    def prepare(cls, values: dict[str, Any]) -> dict[str, Any]:
        values = super().prepare(values)
        decoder = values["decoder"]
        if not isinstance(decoder, GPTConfig):
            raise ConfigError(f"{cls.__name__}: decoder must be a GPTConfig or a mapping of its "
                              f"fields; got {type(decoder).__name__}.")
        if not decoder.add_cross_attention:
            values["decoder"] = decoder = decoder.replace(add_cross_attention=True)
        if values["decoder_start_token_id"] is None:
            values["decoder_start_token_id"] = decoder.bos_token_id
        if values["pad_token_id"] is None:
            values["pad_token_id"] = (decoder.pad_token_id if decoder.pad_token_id is not None
                                      else decoder.first_eos_token_id)
        return values

    def check_fields(self) -> None:
        if self.decodes_text and (self.decoder_start_token_id is None
                                  or self.pad_token_id is None):
            raise self.config_error(
                "the decoder needs decoder_start_token_id and pad_token_id (they default to "
                "the decoder's bos_token_id and its pad or eos id, which are not set); set "
                "them or the decoder's ids."
            )

    @property
    def decodes_text(self) -> bool:
        """Whether this model uses its decoder (always, unless a family says otherwise)."""
        return True

    @property
    def encoder_width(self) -> int | None:  # pragma: no cover - families define it
        raise NotImplementedError(
            f"{type(self).__name__} must define encoder_width (the width of the states the "
            "decoder cross-attends to)."
        )

    @property
    def uses_projection(self) -> bool:
        if self.encoder_projection is not None:
            return self.encoder_projection
        return self.encoder_width != self.decoder.d_model

    @property
    def vocab_size(self) -> int:
        return self.decoder.vocab_size

    @property
    def max_position_embeddings(self) -> int | None:
        return self.decoder.max_position_embeddings

    @property
    def bos_token_id(self) -> int | None:
        return self.decoder.bos_token_id

    @property
    def eos_token_id(self):
        return self.decoder.eos_token_id


@dataclasses.dataclass(frozen=True, kw_only=True)
class CaptionerConfig(ConditionalDecoderFields):
    """Encoder-decoder captioner.

    Attributes:
      encoder: registered image encoder name; ``encoder_config`` its config (a
        size name, a mapping such as ``{"size": "tiny", "num_layers": 1}``, or
        a config object); it becomes the config object when this config is made.
      decoder, encoder_projection, decoder_start_token_id, pad_token_id: the
        text decoder (:class:`ConditionalDecoderFields`).
    """

    DEFAULTS: ClassVar = dict(decoder=GPTConfig.from_dict(_TINY_DECODER))

    encoder: str = "vit"
    encoder_config: Any = "tiny"

    SIZES: ClassVar = {
        "tiny": dict(encoder="vit", encoder_config="tiny", decoder=_TINY_DECODER),
        "base": dict(encoder="vit", encoder_config="B/16",
                     decoder=dict(GPTConfig.SIZES["gpt2"], pad_token_id=50256)),
    }

    @classmethod
    def prepare(cls, values: dict[str, Any]) -> dict[str, Any]:
        values = super().prepare(values)
        values["encoder_config"] = resolve_encoder_config(values["encoder"],
                                                          values["encoder_config"])
        return values

    @property
    def encoder_width(self) -> int | None:
        return getattr(self.encoder_config, "d_model", None)

    @property
    def encoder_input(self) -> str:
        """The batch field the encoder reads: ``image``, ``video`` or ``input_features``."""
        specs = input_specs(registry.get(self.encoder).module_cls, self.encoder_config)
        if specs is None:  # an encoder without declared inputs: images, as before
            return "image"
        fields = [f for f in ("image", "video", "input_features") if f in specs]
        if not fields:
            raise self.config_error(
                f"encoder {self.encoder!r} reads {', '.join(specs)}; a captioner needs an "
                "image, video or audio encoder (vit, resnet, video, ast, whisper_encoder).")
        return fields[0]

    def input_specs(self) -> dict | None:
        """The encoder's input and the decoder's tokens (:mod:`jaxmm.models.specs`)."""
        specs = input_specs(registry.get(self.encoder).module_cls, self.encoder_config)
        if specs is None:
            return None
        return {self.encoder_input: specs[self.encoder_input],
                **text_specs(self.decoder.max_position_embeddings, prefix="decoder_")}

    @property
    def image_size(self) -> int | None:
        return getattr(self.encoder_config, "image_size", None)

    @property
    def num_channels(self) -> int | None:
        return getattr(self.encoder_config, "num_channels", None)


class ConditionalDecoder:
    """``decode()`` of encoder-decoders whose text decoder is a GPT with
    cross-attention (the captioner, generative VQA).

    The module's config needs ``decoder`` (:class:`GPTConfig`) and
    ``uses_projection``; call :meth:`build_decoder` in ``setup``. Params:
    ``decoder`` (a GPTLMHeadModel's) and, when used, ``enc_to_dec_proj``.
    """

    def build_decoder(self) -> None:
        cfg = self.config
        self.decoder = GPTLMHeadModel(cfg.decoder)
        if cfg.uses_projection:
            tcfg = cfg.decoder.transformer
            self.enc_to_dec_proj = nn.Dense(
                cfg.decoder.d_model, dtype=tcfg.compute_dtype, param_dtype=tcfg.weights_dtype,
                kernel_init=nn.with_logical_partitioning(nn.initializers.normal(0.02),
                                                         (None, "embed")),
                bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("embed",)))

    def decode(
        self, decoder_input_ids: Array, encoder_hidden_states: Array | None = None,
        encoder_attention_mask: Array | None = None,
        decoder_attention_mask: Array | None = None, decoder_position_ids: Array | None = None,
        *, decode: bool = False, deterministic: bool = True, output_attentions: bool = False,
        output_hidden_states: bool = False,
    ) -> CausalLMOutput:
        """Next-token logits ``(B, T, vocab)`` given (unprojected) encoder states.

        In ``decode`` mode the call that passes ``encoder_hidden_states`` caches
        the cross-attention keys/values; later calls pass ``None``.
        """
        if encoder_hidden_states is not None and self.config.uses_projection:
            encoder_hidden_states = self.enc_to_dec_proj(encoder_hidden_states)
        if not decode and encoder_hidden_states is None:
            raise ValueError("decode() needs encoder_hidden_states (the output of encode()).")
        return self.decoder(
            decoder_input_ids, decoder_attention_mask, decoder_position_ids,
            encoder_hidden_states=encoder_hidden_states,
            encoder_attention_mask=encoder_attention_mask, decode=decode,
            deterministic=deterministic, output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
        )

    def teacher_forced(self, enc: Any, encoder_attention_mask: Array | None,
                       decoder_input_ids: Array | None, decoder_attention_mask: Array | None,
                       labels: Array | None, **flags) -> Seq2SeqLMOutput:
        """Decoder pass over ``decoder_input_ids`` (or shifted ``labels``) given an
        encoder output ``enc``; the ``Seq2SeqLMOutput`` of both."""
        cfg = self.config
        if decoder_input_ids is None:
            if labels is None:
                raise ValueError("Pass decoder_input_ids (B, T) or labels (B, T) (the decoder "
                                 "inputs are then the labels shifted right).")
            decoder_input_ids = shift_tokens_right(
                labels, decoder_start_token_id=cfg.decoder_start_token_id,
                pad_token_id=cfg.pad_token_id)
        dec = self.decode(decoder_input_ids, enc.last_hidden_state, encoder_attention_mask,
                          decoder_attention_mask, **flags)
        return Seq2SeqLMOutput.from_parts(enc, dec)


@registry.register("captioner", CaptionerConfig)
class ImageCaptioner(ConditionalDecoder, nn.Module):
    """Image/video/audio -> text encoder-decoder (HF ``VisionEncoderDecoderModel``).

    The encoder input is ``image`` ``(B, H, W, C)``, ``video=`` ``(B, F, H, W, C)``
    or ``input_features=`` ``(B, mels, frames)``, whichever the encoder reads.
    ``__call__(image (B, H, W, C), decoder_input_ids=None (B, T),
    decoder_attention_mask=None, labels=None)`` -> :class:`Seq2SeqLMOutput`
    with float32 ``logits`` ``(B, T, vocab)``, ``encoder_last_hidden_state``
    and, with ``output_attentions``, ``cross_attentions`` (per layer
    ``(B, H, T, S)``). Params: ``encoder``, ``decoder`` (a GPTLMHeadModel's)
    and, when used, ``enc_to_dec_proj``.
    """

    config: CaptionerConfig

    def setup(self):
        cfg = self.config
        self.encoder = registry.get(cfg.encoder).module_cls(cfg.encoder_config)
        self.build_decoder()

    def encode(self, inputs: Array | None = None, *, image: Array | None = None,
               video: Array | None = None, input_features: Array | None = None,
               deterministic: bool = True, output_attentions: bool = False,
               output_hidden_states: bool = False) -> BaseModelOutput:
        """Runs the encoder on its input (positional, or by its field name: ``image``,
        ``video`` or ``input_features``, as ``config.encoder_input`` says):
        ``last_hidden_state`` ``(B, S, E_enc)``."""
        given = {"image": image, "video": video, "input_features": input_features}
        field = self.config.encoder_input
        if inputs is None:
            inputs = given[field]
        if inputs is None:
            others = [k for k, v in given.items() if v is not None]
            raise ValueError(
                f"This captioner's encoder {self.config.encoder!r} reads {field}; got "
                f"{', '.join(others) or 'no encoder input'}. Pass {field}=... .")
        out = self.encoder(inputs, deterministic=deterministic,
                           output_attentions=output_attentions,
                           output_hidden_states=output_hidden_states)
        if out.last_hidden_state.ndim == 4:  # convolutional feature map -> tokens
            h = out.last_hidden_state
            out = out.replace(last_hidden_state=h.reshape(h.shape[0], -1, h.shape[-1]))
        return out

    def __call__(
        self, image: Array | None = None, decoder_input_ids: Array | None = None,
        decoder_attention_mask: Array | None = None, labels: Array | None = None, *,
        video: Array | None = None, input_features: Array | None = None,
        deterministic: bool = True, output_attentions: bool = False,
        output_hidden_states: bool = False,
    ) -> Seq2SeqLMOutput:
        flags = dict(deterministic=deterministic, output_attentions=output_attentions,
                     output_hidden_states=output_hidden_states)
        enc = self.encode(image=image, video=video, input_features=input_features, **flags)
        return self.teacher_forced(enc, None, decoder_input_ids, decoder_attention_mask, labels,
                                   **flags)
