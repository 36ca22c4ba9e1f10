"""Encoder-decoder Transformers for text: T5 and the original Transformer.

One model, two families through its config:

* T5: shared token embedding, bucketed relative position bias (computed once
  per stack and shared by its layers; separate tables for encoder and
  decoder), pre-LN RMSNorm without bias, no attention scaling, no biases,
  ReLU FFN (v1.0) or gated GELU (v1.1), LM head tied to the embedding with the
  ``d_model**-0.5`` rescale, or untied without it.
* The original Transformer ("Attention Is All You Need"): embeddings scaled by
  ``sqrt(d_model)`` plus sinusoidal positions, post-LN LayerNorm, biases,
  ReLU FFN, softmax scaled by ``1/sqrt(d)``, one embedding matrix shared by
  encoder, decoder and the output projection.

Shapes: ``input_ids``/``attention_mask`` ``(B, S)``; ``decoder_input_ids``/
``decoder_attention_mask`` ``(B, T)``; logits float32 ``(B, T, vocab_size)``.

Decoding protocol (see :mod:`jaxmm.models.outputs`)::

    enc = model.apply(v, input_ids, attention_mask, method="encode")
    cache = jax.eval_shape(lambda: model.init(rng, jnp.zeros((B, L), jnp.int32),
        enc.last_hidden_state, decode=True, method="decode"))["cache"]  # then zeros
    out, vars = model.apply({"params": p, "cache": cache}, ids, enc.last_hidden_state,
        attention_mask, decoder_attention_mask=mask_BL, decode=True,
        method="decode", mutable=["cache"])

The relative position bias, like Hugging Face T5, uses cache slot indices;
``decoder_position_ids`` only affect sinusoidal positions.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxmm.layers import (
    DecodePositions,
    Embed,
    RelativePositionBias,
    TransformerConfig,
    TransformerStack,
    causal_mask,
    check_token_mask,
    combine_masks,
    key_padding_mask,
    sinusoidal_embedding,
)
from jaxmm.layers.config_fields import (
    ComputeFields,
    DropoutFields,
    LayerVariantFields,
    TransformerFields,
)
from jaxmm.models.config_fields import DecoderStartFields, TokenFields
from jaxmm.models.outputs import (
    BaseModelOutput,
    CausalLMOutput,
    Seq2SeqLMOutput,
    Seq2SeqModelOutput,
    shift_tokens_right,
)
from jaxmm.models.registry import register

Array = jax.Array

__all__ = [
    "EncoderDecoderConfig",
    "EncoderDecoderLM",
    "EncoderDecoderModel",
    "Seq2SeqDecoder",
    "Seq2SeqEncoder",
]

_TRANSFORMER = dict(
    norm="layernorm", norm_eps=1e-5, norm_position="post", use_bias=True, attention_scale=None,
    activation="relu", position_embedding="sinusoidal", scale_embeddings=True,
    tie_word_embeddings=True, scale_decoder_outputs=False, dropout_rate=0.1,
    vocab_size=37000, bos_token_id=None, eos_token_id=2, pad_token_id=0,
    decoder_start_token_id=2,
)


@dataclasses.dataclass(frozen=True, kw_only=True)
class EncoderDecoderConfig(
    ComputeFields, DropoutFields, LayerVariantFields, TransformerFields, TokenFields,
    DecoderStartFields,
):
    """Encoder-decoder hyper-parameters (defaults: T5-small v1.0).

    The widths (``d_model``; ``num_heads``; ``mlp_dim``, T5 ``d_ff``;
    ``num_layers``, the encoder depth; ``activation``: ``relu``, or
    ``gelu_tanh`` + ``gated_mlp`` is T5 v1.1's; ``norm_eps``), the dropout
    rates, the compute fields, the layer variant (``head_dim``, T5 ``d_kv``;
    ``gated_mlp``; ``norm``; ``use_bias``, which also gives LayerNorm a bias)
    and the ids (``vocab_size`` shared by encoder and decoder,
    ``bos_token_id``, ``eos_token_id``, ``pad_token_id``,
    ``decoder_start_token_id``) are the shared ones
    (:mod:`jaxmm.layers.config_fields`, :mod:`jaxmm.models.config_fields`).

    Attributes:
      num_decoder_layers: decoder depth (default ``num_layers``).
      norm_position: ``pre`` or ``post``.
      attention_scale: logit scale; ``1.0`` for T5, None for ``1/sqrt(head_dim)``.
      position_embedding: ``relative`` (T5 buckets) or ``sinusoidal``.
      relative_attention_num_buckets, relative_attention_max_distance: T5 buckets.
      max_position_embeddings: length limit for sinusoidal positions (None: none).
      scale_embeddings: multiply token embeddings by ``sqrt(d_model)``.
      tie_word_embeddings: the LM head is the shared embedding matrix.
      scale_decoder_outputs: multiply the decoder output by ``d_model**-0.5``
        before the head (T5 with a tied head); None means ``tie_word_embeddings``.
      embedding_init_std: init std of the shared embedding; None means
        ``d_model**-0.5`` when ``scale_embeddings`` else 1.0 (T5).
      initializer_range: init std of attention/MLP kernels and the untied
        head; None means ``d_model**-0.5`` (fan-in scaling, as T5's k/v).
    """

    DEFAULTS: ClassVar = dict(
        vocab_size=32128, eos_token_id=1, pad_token_id=0, decoder_start_token_id=0,
        num_layers=6, d_model=512, num_heads=8, mlp_dim=2048, activation="relu", norm_eps=1e-6,
        norm="rmsnorm", use_bias=False,
    )

    num_decoder_layers: int | None = None
    norm_position: str = "pre"
    attention_scale: float | None = 1.0
    position_embedding: str = "relative"
    relative_attention_num_buckets: int = 32
    relative_attention_max_distance: int = 128
    max_position_embeddings: int | None = None
    scale_embeddings: bool = False
    tie_word_embeddings: bool = True
    scale_decoder_outputs: bool | None = None
    embedding_init_std: float | None = None
    initializer_range: float | None = None

    SIZES: ClassVar = {
        # The original Transformer (Vaswani et al. 2017), base and big.
        "transformer-tiny": dict(_TRANSFORMER, num_layers=2, d_model=64, num_heads=4,
                                 mlp_dim=256, dropout_rate=0.0),
        "transformer-base": dict(_TRANSFORMER, num_layers=6, d_model=512, num_heads=8,
                                 mlp_dim=2048),
        "transformer-big": dict(_TRANSFORMER, num_layers=6, d_model=1024, num_heads=16,
                                mlp_dim=4096, dropout_rate=0.3),
    }

    def validate(self) -> None:
        self.require_one_of("position_embedding", ("relative", "sinusoidal"))
        if self.position_embedding == "sinusoidal" and self.d_model % 2:
            raise self.config_error(
                f"sinusoidal positions need an even d_model; got {self.d_model}.")
        if self.num_decoder_layers is not None:
            self.require_at_least(1, "num_decoder_layers")
        self.transformer(decoder=True)  # validates the layer settings

    def transformer(self, decoder: bool) -> TransformerConfig:
        """The :class:`TransformerConfig` of the encoder or decoder stack."""
        layers = self.num_layers if not decoder else (self.num_decoder_layers or
                                                      self.num_layers)
        return TransformerConfig.from_fields(
            self, num_layers=layers, norm_position=self.norm_position,
            final_norm=self.norm_position == "pre", attention_scale=self.attention_scale,
            cross_attention=decoder, initializer_range=self.resolved_initializer_range,
        )

    @property
    def rescale_decoder_outputs(self) -> bool:
        return self.tie_word_embeddings if self.scale_decoder_outputs is None else \
            self.scale_decoder_outputs

    @property
    def resolved_initializer_range(self) -> float:
        return self.initializer_range or self.d_model ** -0.5

    @property
    def resolved_embedding_init_std(self) -> float:
        if self.embedding_init_std is not None:
            return self.embedding_init_std
        return self.d_model ** -0.5 if self.scale_embeddings else 1.0


class _Embedder(nn.Module):
    """Token embedding (x sqrt(d)) + sinusoidal positions, then dropout."""

    config: EncoderDecoderConfig
    shared: Embed

    @nn.compact
    def __call__(self, ids: Array, positions: Array, deterministic: bool) -> Array:
        cfg = self.config
        ids = jnp.asarray(ids)
        if ids.ndim != 2:
            raise ValueError(f"Token ids must be (batch, length); got shape {ids.shape}.")
        x = self.shared(ids)
        if cfg.scale_embeddings:
            x = x * jnp.asarray(np.sqrt(cfg.d_model), x.dtype)
        if cfg.position_embedding == "sinusoidal":
            x = x + sinusoidal_embedding(positions, cfg.d_model, dtype=x.dtype)
        return nn.Dropout(cfg.dropout_rate)(x, deterministic=deterministic)


def _check_length(cfg: EncoderDecoderConfig, length: int, what: str) -> None:
    limit = cfg.max_position_embeddings
    if limit is not None and length > limit:
        raise ValueError(
            f"{what} length {length} exceeds max_position_embeddings={limit}; truncate the "
            "input or raise the limit."
        )


class Seq2SeqEncoder(nn.Module):
    """``input_ids`` ``(B, S)`` -> :class:`BaseModelOutput` ``(B, S, E)``."""

    config: EncoderDecoderConfig
    shared: Embed

    def setup(self):
        cfg = self.config
        self.embedder = _Embedder(cfg, self.shared)
        if cfg.position_embedding == "relative":
            self.relative_position_bias = RelativePositionBias(
                cfg.num_heads, cfg.relative_attention_num_buckets,
                cfg.relative_attention_max_distance, bidirectional=True)
        self.stack = TransformerStack(cfg.transformer(decoder=False), decoder=False)
        self.dropout = nn.Dropout(cfg.dropout_rate)

    def __call__(self, input_ids: Array, attention_mask: Array | None = None, *,
                 deterministic: bool = True, output_attentions: bool = False,
                 output_hidden_states: bool = False) -> BaseModelOutput:
        cfg = self.config
        input_ids = jnp.asarray(input_ids)
        if input_ids.ndim != 2:
            raise ValueError(f"input_ids must be (batch, length); got {input_ids.shape}.")
        batch, length = input_ids.shape
        _check_length(cfg, length, "Encoder input")
        mask = check_token_mask("attention_mask", attention_mask, batch, length)
        positions = jnp.arange(length)[None]
        x = self.embedder(input_ids, positions, deterministic)
        bias = None
        if cfg.position_embedding == "relative":
            bias = self.relative_position_bias(length, length)
        out = self.stack(x, mask=None if mask is None else key_padding_mask(mask), bias=bias,
                         deterministic=deterministic, output_attentions=output_attentions,
                         output_hidden_states=output_hidden_states)
        return BaseModelOutput(
            last_hidden_state=self.dropout(out.last_hidden_state, deterministic=deterministic),
            hidden_states=out.hidden_states, attentions=out.attentions)


class Seq2SeqDecoder(nn.Module):
    """Causal decoder with cross-attention; -> :class:`BaseModelOutput` ``(B, T, E)``."""

    config: EncoderDecoderConfig
    shared: Embed

    def setup(self):
        cfg = self.config
        self.embedder = _Embedder(cfg, self.shared)
        self.positions = DecodePositions()
        if cfg.position_embedding == "relative":
            self.relative_position_bias = RelativePositionBias(
                cfg.num_heads, cfg.relative_attention_num_buckets,
                cfg.relative_attention_max_distance, bidirectional=False)
        self.stack = TransformerStack(cfg.transformer(decoder=True), decoder=True)
        self.dropout = nn.Dropout(cfg.dropout_rate)

    def __call__(
        self, decoder_input_ids: Array, encoder_hidden_states: Array | None = None,
        encoder_attention_mask: Array | None = None, decoder_attention_mask: Array | None = None,
        decoder_position_ids: Array | None = None, *, decode: bool = False,
        deterministic: bool = True, output_attentions: bool = False,
        output_hidden_states: bool = False,
    ) -> BaseModelOutput:
        cfg = self.config
        ids = jnp.asarray(decoder_input_ids)
        if ids.ndim != 2:
            raise ValueError(f"decoder_input_ids must be (batch, length); got {ids.shape}.")
        batch, length = ids.shape
        positions, index, cache_length = self.positions(batch, length, decoder_position_ids,
                                                        decode)
        key_length = cache_length if decode else length
        _check_length(cfg, key_length, "Decoder")
        x = self.embedder(ids, positions, deterministic)

        mask = check_token_mask(
            "In decode mode decoder_attention_mask" if decode else "decoder_attention_mask",
            decoder_attention_mask, batch, key_length)
        mask = None if mask is None else key_padding_mask(mask)
        if not decode or cache_length == length:
            # Outside decode mode, and on the cache-creating call, causality is ours to add.
            mask = combine_masks(causal_mask(length), mask)
        bias = None
        if cfg.position_embedding == "relative":
            bias = self.relative_position_bias(length, key_length, offset=index)
        if encoder_hidden_states is None and not decode:
            raise ValueError("The decoder needs encoder_hidden_states (the encoder output).")
        src_len = None if encoder_hidden_states is None else encoder_hidden_states.shape[1]
        enc_mask = check_token_mask("encoder_attention_mask", encoder_attention_mask, batch,
                                    src_len)
        out = self.stack(
            x, mask=mask, bias=bias, positions=positions, encoder_out=encoder_hidden_states,
            cross_mask=None if enc_mask is None else key_padding_mask(enc_mask), decode=decode,
            deterministic=deterministic, output_attentions=output_attentions,
            output_hidden_states=output_hidden_states)
        return BaseModelOutput(
            last_hidden_state=self.dropout(out.last_hidden_state, deterministic=deterministic),
            hidden_states=out.hidden_states, attentions=out.attentions,
            cross_attentions=out.cross_attentions)


@register("transformer", EncoderDecoderConfig)
class EncoderDecoderLM(nn.Module):
    """Encoder-decoder LM (T5ForConditionalGeneration; the original Transformer).

    Methods (``model.apply(v, ..., method=...)``): ``encode``, ``decode`` and
    ``__call__`` (teacher forcing). Parameters: ``shared`` (the embedding),
    ``encoder``, ``decoder`` and, when untied, ``lm_head``.
    """

    config: EncoderDecoderConfig
    has_lm_head: ClassVar[bool] = True

    def setup(self):
        cfg = self.config
        tcfg = cfg.transformer(decoder=True)
        self.shared = Embed(
            cfg.vocab_size, cfg.d_model,
            embedding_init=nn.initializers.normal(cfg.resolved_embedding_init_std),
            dtype=tcfg.compute_dtype, param_dtype=tcfg.weights_dtype)
        self.encoder = Seq2SeqEncoder(cfg, self.shared)
        self.decoder = Seq2SeqDecoder(cfg, self.shared)
        if self.has_lm_head and not cfg.tie_word_embeddings:
            self.lm_head = nn.Dense(
                cfg.vocab_size, use_bias=False, dtype=tcfg.compute_dtype,
                param_dtype=tcfg.weights_dtype,
                kernel_init=nn.with_logical_partitioning(
                    nn.initializers.normal(cfg.resolved_initializer_range), ("embed", "vocab")))

    def encode(self, input_ids: Array, attention_mask: Array | None = None, *,
               deterministic: bool = True, output_attentions: bool = False,
               output_hidden_states: bool = False) -> BaseModelOutput:
        """``input_ids`` ``(B, S)`` -> ``last_hidden_state`` ``(B, S, E)``."""
        return self.encoder(input_ids, attention_mask, deterministic=deterministic,
                            output_attentions=output_attentions,
                            output_hidden_states=output_hidden_states)

    def _logits(self, h: Array) -> Array:
        cfg = self.config
        if cfg.rescale_decoder_outputs:
            h = h * jnp.asarray(cfg.d_model ** -0.5, h.dtype)
        logits = self.shared.attend(h) if cfg.tie_word_embeddings else self.lm_head(h)
        return logits.astype(jnp.float32)

    def decode(
        self, decoder_input_ids: Array, encoder_hidden_states: Array | None = None,
        encoder_attention_mask: Array | None = None, decoder_attention_mask: Array | None = None,
        decoder_position_ids: Array | None = None, *, decode: bool = False,
        deterministic: bool = True, output_attentions: bool = False,
        output_hidden_states: bool = False,
    ) -> CausalLMOutput | BaseModelOutput:
        """Decoder pass -> :class:`CausalLMOutput` (``logits`` ``(B, T, V)``).

        Args:
          decoder_input_ids: ``(B, T)``.
          encoder_hidden_states: ``(B, S, E)``; in decode mode pass it on the
            call that should (re)compute the cached cross-attention keys, and
            None afterwards.
          encoder_attention_mask: ``(B, S)`` 1/0; pass it on every call.
          decoder_attention_mask: ``(B, T)``, or ``(B, L)`` over the cache when
            decoding.
          decoder_position_ids: ``(B, T)`` (sinusoidal positions only).
          decode: use and update the KV cache (collection ``"cache"``).
        """
        out = self.decoder(
            decoder_input_ids, encoder_hidden_states, encoder_attention_mask,
            decoder_attention_mask, decoder_position_ids, decode=decode,
            deterministic=deterministic, output_attentions=output_attentions,
            output_hidden_states=output_hidden_states)
        if not self.has_lm_head:
            return out
        return CausalLMOutput(
            logits=self._logits(out.last_hidden_state), hidden_states=out.hidden_states,
            attentions=out.attentions, cross_attentions=out.cross_attentions,
            last_hidden_state=out.last_hidden_state)

    def shift_right(self, labels: Array) -> Array:
        """``labels`` -> ``decoder_input_ids`` (see :func:`shift_tokens_right`)."""
        cfg = self.config
        return shift_tokens_right(labels, decoder_start_token_id=cfg.decoder_start_token_id,
                                  pad_token_id=cfg.pad_token_id)

    def __call__(
        self, input_ids: Array, attention_mask: Array | None = None,
        decoder_input_ids: Array | None = None, decoder_attention_mask: Array | None = None,
        labels: Array | None = None, *, deterministic: bool = True,
        output_attentions: bool = False, output_hidden_states: bool = False,
    ) -> Seq2SeqLMOutput | Seq2SeqModelOutput:
        """Teacher-forced forward pass.

        ``decoder_input_ids`` default to ``labels`` shifted right with
        ``decoder_start_token_id`` (as Hugging Face; ``-100`` -> pad). Returns
        :class:`Seq2SeqLMOutput` (``logits`` ``(B, T, V)``).
        """
        if decoder_input_ids is None:
            if labels is None:
                raise ValueError("Pass decoder_input_ids or labels (to shift right).")
            decoder_input_ids = self.shift_right(labels)
        flags = dict(deterministic=deterministic, output_attentions=output_attentions,
                     output_hidden_states=output_hidden_states)
        enc = self.encode(input_ids, attention_mask, **flags)
        dec = self.decode(decoder_input_ids, enc.last_hidden_state, attention_mask,
                          decoder_attention_mask, **flags)
        output = Seq2SeqLMOutput if self.has_lm_head else Seq2SeqModelOutput
        return output.from_parts(enc, dec)


class EncoderDecoderModel(EncoderDecoderLM):
    """:class:`EncoderDecoderLM` without the LM head (T5Model): ``decode`` returns
    :class:`BaseModelOutput`, ``__call__`` :class:`Seq2SeqModelOutput`."""

    has_lm_head: ClassVar[bool] = False
