"""Decoder-only causal language models: GPT-2 and Llama-style.

One model covers both families through its config:

* GPT-2: learned absolute positions, pre-LN LayerNorm with biases, GELU (tanh)
  MLP, biases everywhere, LM head tied to the token embedding.
* Llama: rotary positions (``rope_theta``), RMSNorm, SwiGLU MLP, grouped-query
  attention (``num_kv_heads``), no biases, untied LM head.

Optional cross-attention (``add_cross_attention``, like Hugging Face GPT-2)
makes it the text decoder of an encoder-decoder (e.g. a ViT -> GPT-2 captioner).

Shapes: ``input_ids``/``attention_mask``/``position_ids`` int32 ``(B, T)``;
``encoder_hidden_states`` ``(B, S, E_enc)``; ``encoder_attention_mask``
``(B, S)``; logits float32 ``(B, T, vocab_size)``.

Decoding (see :mod:`jaxmm.models.outputs`)::

    cache = model.init(rng, jnp.zeros((B, L), jnp.int32), decode=True)["cache"]
    out, vars = model.apply({"params": p, "cache": cache}, prompt_ids,
                            attention_mask=mask_BL, position_ids=pos,
                            decode=True, mutable=["cache"])
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxmm.layers import (
    DecodePositions,
    Embed,
    LearnedPositionEmbedding,
    RopeScaling,
    TransformerConfig,
    TransformerStack,
    causal_mask,
    check_token_mask,
    combine_masks,
    key_padding_mask,
    segment_mask,
)
from jaxmm.layers.config_fields import (
    ComputeFields,
    DropoutFields,
    LayerVariantFields,
    TransformerFields,
)
from jaxmm.models.config_fields import TokenFields
from jaxmm.models.outputs import BaseModelOutput, CausalLMOutput
from jaxmm.models.registry import register
from jaxmm.models.specs import text_specs

Array = jax.Array

__all__ = ["GPTConfig", "GPTLMHeadModel", "GPTModel"]

_GPT2 = dict(activation="gelu_tanh", norm="layernorm", norm_eps=1e-5, use_bias=True,
             position_embedding="learned", max_position_embeddings=1024,
             tie_word_embeddings=True, vocab_size=50257, bos_token_id=50256,
             eos_token_id=50256)
_LLAMA = dict(activation="silu", gated_mlp=True, norm="rmsnorm", norm_eps=1e-5, use_bias=False,
              position_embedding="rope", rope_theta=10000.0, max_position_embeddings=None,
              tie_word_embeddings=False, vocab_size=32000, bos_token_id=1, eos_token_id=2)


@dataclasses.dataclass(frozen=True, kw_only=True)
class GPTConfig(
    ComputeFields, DropoutFields, LayerVariantFields, TransformerFields, TokenFields
):
    """Decoder-only LM hyper-parameters (defaults: GPT-2 124M).

    The widths (``num_layers``, ``d_model``, ``num_heads``, ``mlp_dim``,
    ``activation``: ``gelu_tanh`` for GPT-2, ``silu`` + ``gated_mlp`` is
    SwiGLU; ``norm_eps``), ``dropout_rate`` (embedding/residual/MLP),
    ``attention_dropout_rate``, the compute fields, the layer variant
    (``head_dim``, ``gated_mlp``, ``norm``: ``layernorm`` for GPT-2, ``rmsnorm``
    for Llama; ``use_bias``) and the token fields (``vocab_size``,
    ``bos_token_id``, ``eos_token_id``, which may be a tuple of several end ids
    as in Llama 3, ``pad_token_id``) are the shared ones
    (:mod:`jaxmm.layers.config_fields`, :mod:`jaxmm.models.config_fields`).

    Attributes:
      max_position_embeddings: size of the learned position table; for RoPE
        models the trained context length (informational, not enforced) or None.
      num_kv_heads: ``num_kv_heads < num_heads`` is grouped-query attention.
      position_embedding: ``learned`` (GPT-2), ``rope`` (Llama) or ``none``.
      rope_theta, rotary_dim: RoPE base and rotated features per head (default all);
        rope_scaling: frequency scaling for long contexts (``linear``, ``llama3``).
      tie_word_embeddings: LM head shares the token embedding matrix.
      add_cross_attention: each layer cross-attends to ``encoder_hidden_states``.
      initializer_range: std of the normal init of every kernel and embedding.
    """

    DEFAULTS: ClassVar = dict(
        vocab_size=50257, bos_token_id=50256, eos_token_id=50256, num_layers=12, d_model=768,
        num_heads=12, mlp_dim=3072, activation="gelu_tanh",
    )

    max_position_embeddings: int | None = 1024
    num_kv_heads: int | None = None
    position_embedding: str = "learned"
    rope_theta: float = 10000.0
    rotary_dim: int | None = None
    rope_scaling: RopeScaling | None = None
    tie_word_embeddings: bool = True
    add_cross_attention: bool = False
    initializer_range: float = 0.02

    SIZES: ClassVar = {
        # GPT-2 family ("base" is the 124M GPT-2).
        "tiny": dict(_GPT2, num_layers=2, d_model=64, num_heads=4, mlp_dim=256),
        "small": dict(_GPT2, num_layers=6, d_model=512, num_heads=8, mlp_dim=2048),
        "base": dict(_GPT2, num_layers=12, d_model=768, num_heads=12, mlp_dim=3072),
        "gpt2": dict(_GPT2, num_layers=12, d_model=768, num_heads=12, mlp_dim=3072),
        "gpt2-medium": dict(_GPT2, num_layers=24, d_model=1024, num_heads=16, mlp_dim=4096),
        "gpt2-large": dict(_GPT2, num_layers=36, d_model=1280, num_heads=20, mlp_dim=5120),
        "gpt2-xl": dict(_GPT2, num_layers=48, d_model=1600, num_heads=25, mlp_dim=6400),
        # Llama family.
        "llama-tiny": dict(_LLAMA, num_layers=2, d_model=64, num_heads=4, num_kv_heads=2,
                           mlp_dim=176),
        "llama-small": dict(_LLAMA, num_layers=8, d_model=512, num_heads=8, num_kv_heads=4,
                            mlp_dim=1408),
        "llama-base": dict(_LLAMA, num_layers=12, d_model=768, num_heads=12, num_kv_heads=4,
                           mlp_dim=2048),
        "llama2-7b": dict(_LLAMA, num_layers=32, d_model=4096, num_heads=32, mlp_dim=11008,
                          max_position_embeddings=4096),
    }

    def input_specs(self) -> dict:
        """``input_ids`` / ``attention_mask`` (:mod:`jaxmm.models.specs`)."""
        return text_specs(self.max_position_embeddings)

    def validate(self) -> None:
        self.require_one_of("position_embedding", ("learned", "rope", "none"))
        if self.position_embedding == "learned" and not self.max_position_embeddings:
            raise self.config_error(
                "learned position embeddings need max_position_embeddings (the table size).")
        if self.max_position_embeddings is not None and self.max_position_embeddings < 1:
            raise self.config_error(f"max_position_embeddings must be >= 1 or None; got "
                                    f"{self.max_position_embeddings}.")
        self.transformer  # noqa: B018 - validates the layer settings

    @property
    def transformer(self) -> TransformerConfig:
        """The :class:`TransformerConfig` of the decoder stack."""
        return TransformerConfig.from_fields(
            self, num_kv_heads=self.num_kv_heads, norm_position="pre", final_norm=True,
            rotary_theta=self.rope_theta if self.position_embedding == "rope" else None,
            rotary_dim=self.rotary_dim, rope_scaling=self.rope_scaling,
            cross_attention=self.add_cross_attention, initializer_range=self.initializer_range,
        )


@register("gpt_model", GPTConfig)
class GPTModel(nn.Module):
    """Decoder-only Transformer without an LM head (Hugging Face GPT2Model / LlamaModel).

    Returns :class:`BaseModelOutput` with ``last_hidden_state`` ``(B, T, E)``
    (after the final norm) and, when asked, ``hidden_states`` (``num_layers +
    1`` arrays), ``attentions`` and ``cross_attentions`` ``(B, H, T, S)``.
    """

    config: GPTConfig

    def setup(self):
        cfg = self.config
        tcfg = cfg.transformer
        init = nn.initializers.normal(cfg.initializer_range)
        self.token_embedding = Embed(cfg.vocab_size, cfg.d_model, embedding_init=init,
                                     dtype=tcfg.compute_dtype, param_dtype=tcfg.weights_dtype)
        if cfg.position_embedding == "learned":
            self.position_embedding = LearnedPositionEmbedding(
                cfg.max_position_embeddings, cfg.d_model, embedding_init=init,
                dtype=tcfg.compute_dtype, param_dtype=tcfg.weights_dtype)
        self.positions = DecodePositions()
        self.dropout = nn.Dropout(cfg.dropout_rate)
        self.decoder = TransformerStack(tcfg, decoder=True)

    def attend(self, x: Array) -> Array:
        """Logits ``x @ token_embedding.T`` (the tied LM head)."""
        return self.token_embedding.attend(x)

    def __call__(
        self,
        input_ids: Array | None = None,
        attention_mask: Array | None = None,
        position_ids: Array | None = None,
        *,
        segment_ids: Array | None = None,
        inputs_embeds: Array | None = None,
        encoder_hidden_states: Array | None = None,
        encoder_attention_mask: Array | None = None,
        decode: bool = False,
        deterministic: bool = True,
        output_attentions: bool = False,
        output_hidden_states: bool = False,
    ) -> BaseModelOutput:
        """Runs the decoder.

        Args:
          input_ids: ``(B, T)`` token ids (or pass ``inputs_embeds`` ``(B, T, E)``).
          attention_mask: 1/0 ``(B, T)``; in ``decode`` mode ``(B, L)`` over the
            whole cache. Hides padding (left or right); causality is built in.
          position_ids: ``(B, T)``; default ``arange(T)`` (plus the cache index
            when decoding). Pass them for left-padded prompts.
          segment_ids: ``(B, T)`` for packed rows (several sequences per row, 1, 2, ...;
            0 = padding): attention stays inside each sequence. Pass the sequences'
            own ``position_ids`` with them. Not in decode mode.
          encoder_hidden_states, encoder_attention_mask: cross-attention inputs
            (models with ``add_cross_attention``); in decode mode the encoder
            keys/values are cached by the call that passes them.
          decode: use and update the KV cache (collection ``"cache"``).
          deterministic: disable dropout (pass ``rngs={"dropout": key}`` otherwise).
        """
        cfg = self.config
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("Pass exactly one of input_ids (B, T) and inputs_embeds (B, T, E).")
        if input_ids is not None:
            input_ids = jnp.asarray(input_ids)
            if input_ids.ndim != 2:
                raise ValueError(f"input_ids must be (batch, length); got {input_ids.shape}.")
            x = self.token_embedding(input_ids)
        else:
            x = jnp.asarray(inputs_embeds)
            if x.ndim != 3 or x.shape[-1] != cfg.d_model:
                raise ValueError(
                    f"inputs_embeds must be (batch, length, {cfg.d_model}); got {x.shape}."
                )
            x = x.astype(cfg.transformer.compute_dtype)
        batch, length = x.shape[:2]
        positions, _, cache_length = self.positions(batch, length, position_ids, decode)
        if cfg.position_embedding == "learned":
            span = cache_length if decode else length
            if span > cfg.max_position_embeddings:
                raise ValueError(
                    f"Sequence length {span} exceeds the learned position table "
                    f"(max_position_embeddings={cfg.max_position_embeddings}); truncate the "
                    f"input to {cfg.max_position_embeddings} tokens or use a longer model."
                )
            x = x + self.position_embedding(positions)
        x = self.dropout(x, deterministic=deterministic)

        if decode:
            if segment_ids is not None:
                raise ValueError("segment_ids (packed rows) are for training; decode one "
                                 "sequence per row.")
            attention_mask = check_token_mask("In decode mode attention_mask", attention_mask,
                                         batch, cache_length)
            mask = None if attention_mask is None else key_padding_mask(attention_mask)
            if cache_length == length:
                # The cache-creating call (input length = cache length) has no cache yet to
                # supply causality; for a full-length prefill this mask is the same.
                mask = combine_masks(causal_mask(length), mask)
        else:
            attention_mask = check_token_mask("attention_mask", attention_mask, batch, length)
            segment_ids = check_token_mask("segment_ids", segment_ids, batch, length)
            mask = combine_masks(
                causal_mask(length),
                None if attention_mask is None else key_padding_mask(attention_mask),
                None if segment_ids is None else segment_mask(segment_ids),
            )

        cross_mask = None
        if encoder_hidden_states is not None or encoder_attention_mask is not None:
            if not cfg.add_cross_attention:
                raise ValueError(
                    "encoder_hidden_states were given but this model has no cross-attention; "
                    "build it with add_cross_attention=True."
                )
            src_len = None if encoder_hidden_states is None else encoder_hidden_states.shape[1]
            enc_mask = check_token_mask("encoder_attention_mask", encoder_attention_mask, batch,
                                   src_len)
            cross_mask = None if enc_mask is None else key_padding_mask(enc_mask)
        out = self.decoder(
            x, mask=mask, positions=positions, encoder_out=encoder_hidden_states,
            cross_mask=cross_mask, decode=decode, deterministic=deterministic,
            output_attentions=output_attentions, output_hidden_states=output_hidden_states,
        )
        return BaseModelOutput(
            last_hidden_state=out.last_hidden_state, hidden_states=out.hidden_states,
            attentions=out.attentions, cross_attentions=out.cross_attentions,
        )


@register("gpt", GPTConfig)
class GPTLMHeadModel(nn.Module):
    """Causal LM: :class:`GPTModel` + LM head (GPT2LMHeadModel / LlamaForCausalLM).

    ``apply(params, input_ids, attention_mask=..., ...)`` -> :class:`CausalLMOutput`
    with float32 ``logits`` ``(B, T, vocab_size)`` and ``last_hidden_state``.
    Parameters: ``model`` (the :class:`GPTModel`) and, when untied, ``lm_head``.
    """

    config: GPTConfig

    def setup(self):
        cfg = self.config
        self.model = GPTModel(cfg)
        if not cfg.tie_word_embeddings:
            tcfg = cfg.transformer
            self.lm_head = nn.Dense(
                cfg.vocab_size, use_bias=False, dtype=tcfg.compute_dtype,
                param_dtype=tcfg.weights_dtype,
                kernel_init=nn.with_logical_partitioning(
                    nn.initializers.normal(cfg.initializer_range), ("embed", "vocab")),
            )

    def __call__(
        self,
        input_ids: Array | None = None,
        attention_mask: Array | None = None,
        position_ids: Array | None = None,
        *,
        segment_ids: Array | None = None,
        **kwargs: Any,
    ) -> CausalLMOutput:
        """Same arguments as :meth:`GPTModel.__call__`."""
        out = self.model(input_ids, attention_mask, position_ids, segment_ids=segment_ids,
                         **kwargs)
        h = out.last_hidden_state
        logits = self.model.attend(h) if self.config.tie_word_embeddings else self.lm_head(h)
        return CausalLMOutput(
            logits=logits.astype(jnp.float32), hidden_states=out.hidden_states,
            attentions=out.attentions, cross_attentions=out.cross_attentions,
            last_hidden_state=h,
        )
