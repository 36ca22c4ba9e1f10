"""Whisper speech-to-text (Hugging Face ``WhisperModel`` / ``WhisperForConditionalGeneration``).

Encoder: log-mel ``input_features`` ``(B, n_mels, 2 * max_source_positions)``
-> Conv1d(k3) + GELU -> Conv1d(k3, stride 2) + GELU -> + sinusoidal positions
(stored as a weight, as in the checkpoints) -> pre-LN Transformer -> LayerNorm.

Decoder: token embedding + learned positions -> pre-LN Transformer with
cross-attention -> LayerNorm -> logits tied to the token embedding
(``proj_out`` in HF is the embedding matrix).

Both models implement the encoder-decoder decoding protocol of
:mod:`jaxmm.models.outputs`: ``encode(input_features)`` and
``decode(decoder_input_ids, encoder_hidden_states=..., decode=True)`` with a
self-attention KV cache and cached cross-attention keys/values.

Attention projections carry a ``key`` bias although HF's ``k_proj`` has none:
a bias added to every key shifts each query's logits by the same constant, so
softmax is unchanged (and its gradient is zero). The importer fills it with
zeros and the exporter drops it; both are exact.

Features come from :func:`jaxmm.audio_features.whisper_log_mel` (16 kHz audio, the
rate named by ``WhisperConfig.sample_rate``).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxmm.layers import (
    Embed,
    TransformerConfig,
    TransformerStack,
    causal_mask,
    combine_masks,
    get_activation,
    key_padding_mask,
)
from jaxmm.layers.blocks import DTYPES
from jaxmm.layers.config_fields import ComputeFields, DropoutFields, TransformerFields
from jaxmm.models.config_fields import DecoderStartFields, TokenFields
from jaxmm.models.outputs import (
    CausalLMOutput,
    EncoderOutput,
    Seq2SeqLMOutput,
    Seq2SeqModelOutput,
)
from jaxmm.models.registry import register
from jaxmm.models.specs import InputSpec, text_specs

Array = jax.Array

__all__ = [
    "WhisperConfig",
    "WhisperDecoder",
    "WhisperEncoder",
    "WhisperForConditionalGeneration",
    "WhisperModel",
    "whisper_sinusoids",
]

_REAL = dict(vocab_size=51865, max_source_positions=1500, max_target_positions=448)


@dataclasses.dataclass(frozen=True, kw_only=True)
class WhisperConfig(
    ComputeFields, DropoutFields, TransformerFields, TokenFields, DecoderStartFields
):
    """Whisper hyper-parameters (HF ``WhisperConfig`` names in brackets).

    Shared fields (:mod:`jaxmm.layers.config_fields`,
    :mod:`jaxmm.models.config_fields`), with Whisper-tiny defaults: num_layers
    [encoder_layers], d_model, num_heads [encoder_attention_heads], mlp_dim
    [encoder_ffn_dim], activation, norm_eps, the dropout rates, the compute
    fields, vocab_size and the pad/bos/eos/decoder-start ids. Its own:

    num_decoder_layers [decoder_layers], num_decoder_heads
    [decoder_attention_heads] (default num_heads), decoder_mlp_dim
    [decoder_ffn_dim] (default mlp_dim), num_mel_bins, max_source_positions
    (encoder length after the stride-2 conv; the input has twice as many
    frames), max_target_positions (decoder length limit), sample_rate: the
    audio rate the features assume (16 kHz).
    """

    DEFAULTS: ClassVar = dict(
        vocab_size=51865, pad_token_id=50257, bos_token_id=50257, eos_token_id=50257,
        decoder_start_token_id=50258, num_layers=4, d_model=384, num_heads=6, mlp_dim=1536,
    )

    num_mel_bins: int = 80
    num_decoder_layers: int = 4
    num_decoder_heads: int | None = None
    decoder_mlp_dim: int | None = None
    max_source_positions: int = 1500
    max_target_positions: int = 448
    sample_rate: int = 16000

    SIZES: ClassVar = {
        "tiny": dict(vocab_size=128, num_layers=2, num_decoder_layers=2, d_model=64, num_heads=4,
                     mlp_dim=128, max_source_positions=32, max_target_positions=32,
                     pad_token_id=0, bos_token_id=1, eos_token_id=2, decoder_start_token_id=3),
        "whisper-tiny": dict(_REAL, num_layers=4, num_decoder_layers=4, d_model=384,
                             num_heads=6, mlp_dim=1536),
        "whisper-base": dict(_REAL, num_layers=6, num_decoder_layers=6, d_model=512,
                             num_heads=8, mlp_dim=2048),
        "whisper-small": dict(_REAL, num_layers=12, num_decoder_layers=12, d_model=768,
                              num_heads=12, mlp_dim=3072),
        "whisper-medium": dict(_REAL, num_layers=24, num_decoder_layers=24, d_model=1024,
                               num_heads=16, mlp_dim=4096),
        "whisper-large": dict(_REAL, num_layers=32, num_decoder_layers=32, d_model=1280,
                              num_heads=20, mlp_dim=5120),
        "whisper-large-v3": dict(_REAL, vocab_size=51866, num_mel_bins=128, num_layers=32,
                                 num_decoder_layers=32, d_model=1280, num_heads=20,
                                 mlp_dim=5120),
    }

    def input_specs(self) -> dict:
        """``input_features`` ``(num_mel_bins, num_frames)`` and the decoder's tokens
        (:class:`WhisperEncoder` alone reads only the features)."""
        return {"input_features": InputSpec((self.num_mel_bins, self.num_frames)),
                **text_specs(self.max_target_positions, prefix="decoder_")}

    def validate(self) -> None:
        if self.d_model % 2:
            raise self.config_error(f"d_model must be even; got {self.d_model}.")
        self.require_at_least(1, "num_mel_bins", "max_source_positions", "max_target_positions")
        self.decoder_transformer  # noqa: B018 - validates the decoder's heads and widths

    @property
    def num_frames(self) -> int:
        """Log-mel frames the encoder expects (``2 * max_source_positions``)."""
        return 2 * self.max_source_positions

    @property
    def max_position_embeddings(self) -> int:
        return self.max_target_positions

    @property
    def encoder_transformer(self) -> TransformerConfig:
        return TransformerConfig.from_fields(self, norm_position="pre", final_norm=True,
                                             use_bias=True)

    @property
    def decoder_transformer(self) -> TransformerConfig:
        return TransformerConfig.from_fields(
            self, num_layers=self.num_decoder_layers,
            num_heads=self.num_decoder_heads or self.num_heads,
            mlp_dim=self.decoder_mlp_dim or self.mlp_dim, norm_position="pre",
            final_norm=True, use_bias=True, cross_attention=True,
        )


def whisper_sinusoids(length: int, channels: int, max_timescale: float = 10000.0) -> np.ndarray:
    """Whisper's sinusoidal table ``(length, channels)``: all sines, then all cosines,
    with timescales spaced by ``log(max_timescale) / (channels // 2 - 1)``."""
    inc = math.log(max_timescale) / (channels // 2 - 1)
    inv = np.exp(-inc * np.arange(channels // 2))
    t = np.arange(length)[:, None] * inv[None, :]
    return np.concatenate([np.sin(t), np.cos(t)], axis=1).astype(np.float32)


def _conv(cfg: WhisperConfig, strides: int, name: str) -> nn.Conv:
    return nn.Conv(
        cfg.d_model, (3,), strides=(strides,), padding=((1, 1),), dtype=DTYPES[cfg.dtype],
        param_dtype=DTYPES[cfg.param_dtype],
        kernel_init=nn.with_logical_partitioning(nn.initializers.lecun_normal(),
                                                 (None, None, "embed")),
        bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("embed",)), name=name,
    )


@register("whisper_encoder", WhisperConfig, "Whisper's audio encoder alone (a tower)")
class WhisperEncoder(nn.Module):
    """``input_features`` ``(B, n_mels, 2 * max_source_positions)`` -> ``(B, S, D)``.

    ``attention_mask`` (frames) is accepted for API symmetry and, as in Hugging
    Face and the original model, not used: Whisper attends over the padded
    30 s window (it was trained that way).
    """

    config: WhisperConfig

    @classmethod
    def input_specs(cls, config: WhisperConfig) -> dict:
        """The encoder reads only ``input_features``."""
        return {"input_features": config.input_specs()["input_features"]}

    @nn.compact
    def __call__(self, input_features: Array, attention_mask: Array | None = None, *,
                 deterministic: bool = True, output_attentions: bool = False,
                 output_hidden_states: bool = False) -> EncoderOutput:
        cfg = self.config
        del attention_mask
        if input_features.ndim != 3 or input_features.shape[1] != cfg.num_mel_bins:
            raise ValueError(
                f"Whisper expects input_features (batch, {cfg.num_mel_bins} mel bins, frames); "
                f"got shape {tuple(input_features.shape)}. Compute them with "
                f"jaxmm.audio_features.whisper_log_mel(audio, sample_rate={cfg.sample_rate}, "
                f"n_mels={cfg.num_mel_bins})."
            )
        if input_features.shape[2] != cfg.num_frames:
            raise ValueError(
                f"Whisper expects {cfg.num_frames} log-mel frames "
                f"(2 * max_source_positions); got {input_features.shape[2]}. Pad or truncate "
                f"the audio to {cfg.num_frames * 160 / cfg.sample_rate:g} s (whisper_log_mel "
                "does this with chunk_seconds=30)."
            )
        gelu = get_activation("gelu")
        x = jnp.swapaxes(input_features, 1, 2).astype(DTYPES[cfg.dtype])
        x = gelu(_conv(cfg, 1, "conv1")(x))
        x = gelu(_conv(cfg, 2, "conv2")(x))
        table = self.param(
            "position_embedding",
            nn.with_logical_partitioning(
                lambda *_: jnp.asarray(whisper_sinusoids(cfg.max_source_positions, cfg.d_model)),
                ("position", "embed")),
            (cfg.max_source_positions, cfg.d_model), DTYPES[cfg.param_dtype],
        )
        x = x + table[None].astype(x.dtype)
        x = nn.Dropout(cfg.dropout_rate)(x, deterministic=deterministic)
        out = TransformerStack(cfg.encoder_transformer, name="encoder")(
            x, deterministic=deterministic, output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
        )
        return EncoderOutput(last_hidden_state=out.last_hidden_state,
                             hidden_states=out.hidden_states, attentions=out.attentions)


class WhisperDecoder(nn.Module):
    """Token decoder with cross-attention.

    Returns ``(stack_output, logits)``; ``logits`` ``(B, T, vocab)`` (tied to
    ``embed_tokens``) when ``lm_head`` else ``None``.
    """

    config: WhisperConfig

    @nn.compact
    def __call__(self, input_ids, encoder_hidden_states, encoder_attention_mask,
                 attention_mask, position_ids, decode, deterministic, output_attentions,
                 output_hidden_states, lm_head):
        cfg = self.config
        if input_ids.ndim != 2:
            raise ValueError(f"decoder_input_ids must be (batch, length); got {input_ids.shape}.")
        t = input_ids.shape[1]
        creating = decode and not self.has_variable("cache", "position_index")
        if (not decode or creating) and t > cfg.max_target_positions:
            raise ValueError(
                f"Decoder length {t} exceeds max_target_positions={cfg.max_target_positions}; "
                "Whisper cannot decode longer sequences."
            )
        if decode:
            # Next position when none are given (the cache index of the decoder).
            index = self.variable("cache", "position_index", lambda: jnp.array(0, jnp.int32))
        if position_ids is None:
            position_ids = jnp.arange(t)[None, :]
            if decode and not creating:
                position_ids = position_ids + index.value
        if decode and not creating:
            index.value = index.value + t
        embed = Embed(cfg.vocab_size, cfg.d_model, dtype=DTYPES[cfg.dtype],
                      param_dtype=DTYPES[cfg.param_dtype], name="embed_tokens")
        table = self.param(
            "position_embedding",
            nn.with_logical_partitioning(nn.initializers.normal(0.02), ("position", "embed")),
            (cfg.max_target_positions, cfg.d_model), DTYPES[cfg.param_dtype],
        )
        positions = jnp.take(table, position_ids, axis=0, mode="clip")
        x = embed(input_ids) + positions.astype(DTYPES[cfg.dtype])
        x = nn.Dropout(cfg.dropout_rate)(x, deterministic=deterministic)
        valid = None if attention_mask is None else key_padding_mask(attention_mask)
        mask = valid if decode else combine_masks(causal_mask(t), valid)
        cross = None if encoder_attention_mask is None else key_padding_mask(
            encoder_attention_mask)
        out = TransformerStack(cfg.decoder_transformer, decoder=True, name="stack")(
            x, mask=mask, encoder_out=encoder_hidden_states, cross_mask=cross, decode=decode,
            deterministic=deterministic, output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
        )
        logits = embed.attend(out.last_hidden_state).astype(jnp.float32) if lm_head else None
        return out, logits


class _WhisperBase(nn.Module):
    config: WhisperConfig
    output: ClassVar[type] = Seq2SeqLMOutput

    def setup(self):
        self.encoder = WhisperEncoder(self.config)
        self.decoder = WhisperDecoder(self.config)

    def encode(self, input_features: Array, attention_mask: Array | None = None, *,
               deterministic: bool = True, output_attentions: bool = False,
               output_hidden_states: bool = False) -> EncoderOutput:
        """Runs the audio encoder: ``(B, n_mels, frames)`` -> ``EncoderOutput``."""
        return self.encoder(input_features, attention_mask, deterministic=deterministic,
                            output_attentions=output_attentions,
                            output_hidden_states=output_hidden_states)

    def __call__(
        self, input_features: Array, decoder_input_ids: Array,
        decoder_attention_mask: Array | None = None, attention_mask: Array | None = None, *,
        decoder_position_ids: Array | None = None, deterministic: bool = True,
        output_attentions: bool = False, output_hidden_states: bool = False,
    ) -> Seq2SeqLMOutput | Seq2SeqModelOutput:
        """Encoder then decoder: the subclass's ``output`` (with or without logits)."""
        flags = dict(deterministic=deterministic, output_attentions=output_attentions,
                     output_hidden_states=output_hidden_states)
        enc = self.encode(input_features, attention_mask, **flags)
        dec = self.decode(decoder_input_ids, enc.last_hidden_state, None, decoder_attention_mask,
                          decoder_position_ids, **flags)
        return self.output.from_parts(enc, dec)

    def _decode_stack(self, decoder_input_ids, encoder_hidden_states, encoder_attention_mask,
                      decoder_attention_mask, decoder_position_ids, decode, deterministic,
                      output_attentions, output_hidden_states, lm_head=False):
        return self.decoder(decoder_input_ids, encoder_hidden_states, encoder_attention_mask,
                            decoder_attention_mask, decoder_position_ids, decode, deterministic,
                            output_attentions, output_hidden_states, lm_head)


@register("whisper", WhisperConfig)
class WhisperForConditionalGeneration(_WhisperBase):
    """Whisper with the tied LM head.

    ``__call__(input_features, decoder_input_ids, decoder_attention_mask=None,
    ...)`` -> ``Seq2SeqLMOutput`` with ``logits`` ``(B, T, vocab)``;
    ``encode``/``decode`` follow the decoding protocol.
    """

    def decode(
        self, decoder_input_ids: Array, encoder_hidden_states: Array | None = None,
        encoder_attention_mask: Array | None = None, decoder_attention_mask: Array | None = None,
        decoder_position_ids: Array | None = None, *, decode: bool = False,
        deterministic: bool = True, output_attentions: bool = False,
        output_hidden_states: bool = False,
    ) -> CausalLMOutput:
        """Decoder logits ``(B, T, vocab)`` given encoder states ``(B, S, D)``."""
        out, logits = self._decode_stack(decoder_input_ids, encoder_hidden_states,
                                         encoder_attention_mask, decoder_attention_mask,
                                         decoder_position_ids, decode, deterministic,
                                         output_attentions, output_hidden_states, True)
        return CausalLMOutput(logits=logits, hidden_states=out.hidden_states,
                              attentions=out.attentions, cross_attentions=out.cross_attentions,
                              last_hidden_state=out.last_hidden_state)


@register("whisper_model", WhisperConfig)
class WhisperModel(_WhisperBase):
    """Whisper encoder-decoder without the LM head (HF ``WhisperModel``); same params
    as :class:`WhisperForConditionalGeneration`. Returns ``Seq2SeqModelOutput``."""

    output: ClassVar[type] = Seq2SeqModelOutput

    def decode(
        self, decoder_input_ids: Array, encoder_hidden_states: Array | None = None,
        encoder_attention_mask: Array | None = None, decoder_attention_mask: Array | None = None,
        decoder_position_ids: Array | None = None, *, decode: bool = False,
        deterministic: bool = True, output_attentions: bool = False,
        output_hidden_states: bool = False,
    ) -> Any:
        """Decoder hidden states (a ``StackOutput``: ``last_hidden_state`` ``(B, T, D)``)."""
        return self._decode_stack(decoder_input_ids, encoder_hidden_states,
                                  encoder_attention_mask, decoder_attention_mask,
                                  decoder_position_ids, decode, deterministic, output_attentions,
                                  output_hidden_states)[0]
