"""Tiny models implementing the decoding protocol, for generation tests.

Built from ``jaxmm.layers`` only, so ``jaxmm.generate`` can be tested
independently of the model families. ``TRACES`` counts how often each model's
Python code runs (i.e. how often it is traced by ``jit``).
"""

from __future__ import annotations

import collections
import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxmm.layers import (
    Embed,
    LearnedPositionEmbedding,
    TransformerConfig,
    TransformerStack,
    causal_mask,
    combine_masks,
    key_padding_mask,
)
from jaxmm.models.outputs import CausalLMOutput, EncoderOutput, Seq2SeqLMOutput

TRACES: collections.Counter = collections.Counter()


@dataclasses.dataclass(frozen=True)
class ToyConfig:
    vocab_size: int = 61
    d_model: int = 32
    num_heads: int = 4
    num_kv_heads: int = 2
    num_layers: int = 2
    mlp_dim: int = 64
    max_position_embeddings: int = 64
    rotary: bool = False
    scan_layers: bool = False
    bos_token_id: int | None = 1
    eos_token_id: int | None = 2
    pad_token_id: int | None = 0
    decoder_start_token_id: int | None = 0

    def stack(self, cross: bool = False) -> TransformerConfig:
        return TransformerConfig(
            num_layers=self.num_layers, d_model=self.d_model, num_heads=self.num_heads,
            num_kv_heads=self.num_kv_heads, mlp_dim=self.mlp_dim, cross_attention=cross,
            rotary_theta=10000.0 if self.rotary else None, scan_layers=self.scan_layers,
        )


def _self_mask(mask, length: int, decode: bool):
    """Decode: key padding over the cache (the cache adds causality)."""
    key = None if mask is None else key_padding_mask(mask)
    return key if decode else combine_masks(causal_mask(length), key)


class ToyLM(nn.Module):
    """Decoder-only LM (learned positions or rotary, GQA, tied output)."""

    config: ToyConfig

    @nn.compact
    def __call__(self, input_ids, attention_mask=None, position_ids=None, decode=False):
        TRACES["lm"] += 1
        cfg = self.config
        t = input_ids.shape[1]
        if position_ids is None:
            position_ids = jnp.arange(t)[None, :]
        embed = Embed(cfg.vocab_size, cfg.d_model, name="embed")
        x = embed(input_ids)
        if not cfg.rotary:
            x = x + LearnedPositionEmbedding(cfg.max_position_embeddings, cfg.d_model,
                                             name="positions")(position_ids)
        h = TransformerStack(cfg.stack(), decoder=True, name="decoder")(
            x, mask=_self_mask(attention_mask, t, decode), positions=position_ids, decode=decode
        ).last_hidden_state
        return CausalLMOutput(logits=embed.attend(h))


class ToySeq2Seq(nn.Module):
    """Encoder-decoder with shared embeddings and cross-attention."""

    config: ToyConfig

    def setup(self):
        cfg = self.config
        self.embed = Embed(cfg.vocab_size, cfg.d_model)
        self.encoder = TransformerStack(cfg.stack(), decoder=False)
        self.decoder = TransformerStack(cfg.stack(cross=True), decoder=True)
        self.positions = LearnedPositionEmbedding(cfg.max_position_embeddings, cfg.d_model)

    def encode(self, input_ids, attention_mask=None):
        TRACES["encode"] += 1
        mask = None if attention_mask is None else key_padding_mask(attention_mask)
        x = self.embed(input_ids)
        return EncoderOutput(last_hidden_state=self.encoder(x, mask=mask).last_hidden_state)

    def decode(self, decoder_input_ids, encoder_hidden_states=None, encoder_attention_mask=None,
               decoder_attention_mask=None, decoder_position_ids=None, decode=False):
        TRACES["decode"] += 1
        t = decoder_input_ids.shape[1]
        if decoder_position_ids is None:
            decoder_position_ids = jnp.arange(t)[None, :]
        x = self.embed(decoder_input_ids) + self.positions(decoder_position_ids)
        cross = None if encoder_attention_mask is None else key_padding_mask(
            encoder_attention_mask)
        h = self.decoder(
            x, mask=_self_mask(decoder_attention_mask, t, decode),
            encoder_out=encoder_hidden_states, cross_mask=cross, decode=decode,
        ).last_hidden_state
        return CausalLMOutput(logits=self.embed.attend(h))

    def __call__(self, input_ids, attention_mask=None, decoder_input_ids=None,
                 decoder_attention_mask=None):
        enc = self.encode(input_ids, attention_mask)
        out = self.decode(decoder_input_ids, enc.last_hidden_state, attention_mask,
                          decoder_attention_mask)
        return Seq2SeqLMOutput(logits=out.logits, encoder_last_hidden_state=enc.last_hidden_state)


def scaled_params(model, *args):
    """Random parameters (no init compile), larger than the default init so the
    next-token distributions are peaked and free of near-ties. They keep
    ``model.init``'s logical-partitioning boxes, as users' params do."""
    shapes = jax.eval_shape(model.init, jax.random.key(0), *args)["params"]
    rng = np.random.default_rng(0)

    def make(path, s):
        name = [k.key for k in path if isinstance(k, jax.tree_util.DictKey)][-1]
        if "scale" in name:
            return jnp.full(s.shape, 6.0, s.dtype)
        if "bias" in name:
            return jnp.zeros(s.shape, s.dtype)
        return jnp.asarray(rng.normal(0.0, 0.12, s.shape), s.dtype)

    return jax.tree_util.tree_map_with_path(make, shapes)
