"""Tiny models built from jaxmm.layers, registered for the training-system tests.

They let the loop be tested independently of the model families. Runs in
subprocesses import this module through ``config.imports``.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import flax.linen as nn
import flax.struct
import jax.numpy as jnp

from jaxmm.config import ConfigBase
from jaxmm.layers import Embed, LayerNorm, TransformerConfig, TransformerStack, causal_mask
from jaxmm.layers.attention import combine_masks, padding_mask
from jaxmm.models import register
from jaxmm.models.outputs import CausalLMOutput, SequenceClassifierOutput


@dataclasses.dataclass(frozen=True)
class TinyConfig(ConfigBase):
    vocab_size: int = 64
    num_layers: int = 1
    d_model: int = 32
    num_heads: int = 2
    mlp_dim: int = 64
    max_len: int = 32
    num_labels: int = 4
    image_size: int = 16
    patch: int = 4
    dropout_rate: float = 0.0
    dtype: str = "float32"
    remat_policy: str = "none"
    scan_layers: bool = False

    SIZES: ClassVar = {"tiny": {}, "small": {"d_model": 64, "num_layers": 2}}

    @property
    def stack(self) -> TransformerConfig:
        return TransformerConfig(
            num_layers=self.num_layers, d_model=self.d_model, num_heads=self.num_heads,
            mlp_dim=self.mlp_dim, dropout_rate=self.dropout_rate, dtype=self.dtype,
            remat_policy=self.remat_policy, scan_layers=self.scan_layers)


@register("test_tiny_lm", TinyConfig, "Tiny decoder-only LM for training tests")
class TinyLM(nn.Module):
    config: TinyConfig

    @nn.compact
    def __call__(self, input_ids, attention_mask=None, deterministic=True):
        cfg = self.config
        embed = Embed(cfg.vocab_size, cfg.d_model, name="embed")
        pos = self.param("pos_embed", nn.with_logical_partitioning(
            nn.initializers.normal(0.02), ("position", "embed")), (cfg.max_len, cfg.d_model))
        t = input_ids.shape[1]
        x = embed(input_ids) + pos[None, :t]
        mask = causal_mask(t)
        if attention_mask is not None:
            mask = combine_masks(mask, padding_mask(attention_mask))
        x = nn.Dropout(cfg.dropout_rate)(x, deterministic=deterministic)
        h = TransformerStack(cfg.stack, decoder=True, name="decoder")(
            x, mask=mask, deterministic=deterministic).last_hidden_state
        return CausalLMOutput(logits=embed.attend(h).astype(jnp.float32))


@register("test_tiny_classifier", TinyConfig, "Tiny patch-encoder image classifier")
class TinyClassifier(nn.Module):
    config: TinyConfig

    @nn.compact
    def __call__(self, image, deterministic=True):
        cfg = self.config
        x = nn.Conv(cfg.d_model, (cfg.patch, cfg.patch), strides=(cfg.patch, cfg.patch),
                    kernel_init=nn.with_logical_partitioning(
                        nn.initializers.lecun_normal(), (None, None, None, "embed")),
                    name="patch")(image)
        x = x.reshape(x.shape[0], -1, cfg.d_model)
        h = TransformerStack(cfg.stack, name="encoder")(
            x, deterministic=deterministic).last_hidden_state
        h = LayerNorm(name="pool_norm")(h.mean(axis=1))
        logits = nn.Dense(cfg.num_labels, kernel_init=nn.with_logical_partitioning(
            nn.initializers.lecun_normal(), ("embed", None)), name="head")(h)
        return SequenceClassifierOutput(logits=logits.astype(jnp.float32))


def _encode(cfg: TinyConfig, name: str, *, image=None, features=None, ids=None, mask=None):
    """Patches / feature frames / tokens -> (B, S, E) encoder states (a small helper)."""
    if image is not None:
        x = nn.Conv(cfg.d_model, (cfg.patch, cfg.patch), strides=(cfg.patch, cfg.patch),
                    name=f"{name}_patch")(image)
        x = x.reshape(x.shape[0], -1, cfg.d_model)
    elif features is not None:
        x = nn.Dense(cfg.d_model, name=f"{name}_frames")(jnp.swapaxes(features, 1, 2))
    else:
        x = Embed(cfg.vocab_size, cfg.d_model, name=f"{name}_embed")(ids)
    m = None if mask is None else padding_mask(mask)
    return TransformerStack(cfg.stack, name=name)(x, mask=m).last_hidden_state


@flax.struct.dataclass
class DualEncoderOutput:
    image_embeds: jnp.ndarray
    text_embeds: jnp.ndarray
    logit_scale: jnp.ndarray


class _ImageTower(nn.Module):
    config: TinyConfig

    @nn.compact
    def __call__(self, image):
        img = _encode(self.config, "vision", image=image).mean(axis=1)
        return nn.Dense(self.config.d_model, name="vision_proj")(img)


class _TextTower(nn.Module):
    config: TinyConfig

    @nn.compact
    def __call__(self, input_ids, attention_mask):
        txt = _encode(self.config, "text", ids=input_ids, mask=attention_mask)
        txt = (txt * attention_mask[..., None]).sum(1) / attention_mask.sum(1, keepdims=True)
        return nn.Dense(self.config.d_model, name="text_proj")(txt)


def _l2_normalize(x):
    return x / jnp.linalg.norm(x, axis=-1, keepdims=True)


@register("test_tiny_dual_encoder", TinyConfig, "Tiny CLIP-style dual encoder")
class TinyDualEncoder(nn.Module):
    """``encode_image`` / ``encode_text`` give L2-normalised embeddings (as CLIP's)."""

    config: TinyConfig

    def setup(self):
        self.image_tower = _ImageTower(self.config)
        self.text_tower = _TextTower(self.config)
        self.logit_scale = self.param("logit_scale", nn.initializers.constant(jnp.log(10.0)), ())

    def encode_image(self, image, deterministic=True):
        return _l2_normalize(self.image_tower(image))

    def encode_text(self, input_ids, attention_mask, deterministic=True):
        return _l2_normalize(self.text_tower(input_ids, attention_mask))

    def __call__(self, image, input_ids, attention_mask, deterministic=True):
        return DualEncoderOutput(image_embeds=self.image_tower(image),
                                 text_embeds=self.text_tower(input_ids, attention_mask),
                                 logit_scale=self.logit_scale)


@register("test_tiny_seq2seq", TinyConfig, "Tiny encoder-decoder (image or audio -> text)")
class TinySeq2Seq(nn.Module):
    config: TinyConfig

    @nn.compact
    def __call__(self, decoder_input_ids, decoder_attention_mask=None, image=None,
                 input_features=None, input_ids=None, attention_mask=None, deterministic=True):
        cfg = self.config
        enc = _encode(cfg, "encoder", image=image, features=input_features)
        if input_ids is not None:  # VQA: the question joins the encoder states
            enc = jnp.concatenate([enc, _encode(cfg, "question", ids=input_ids,
                                                mask=attention_mask)], axis=1)
        embed = Embed(cfg.vocab_size, cfg.d_model, name="embed")
        t = decoder_input_ids.shape[1]
        mask = causal_mask(t)
        if decoder_attention_mask is not None:
            mask = combine_masks(mask, padding_mask(decoder_attention_mask))
        stack_cfg = dataclasses.replace(cfg.stack, cross_attention=True)
        h = TransformerStack(stack_cfg, decoder=True, name="decoder")(
            embed(decoder_input_ids), mask=mask, encoder_out=enc).last_hidden_state
        return CausalLMOutput(logits=embed.attend(h).astype(jnp.float32))


@register("test_tiny_mlm", TinyConfig, "Tiny bidirectional encoder with a tied MLM head")
class TinyMLM(nn.Module):
    config: TinyConfig

    @nn.compact
    def __call__(self, input_ids, attention_mask=None, token_type_ids=None, deterministic=True):
        cfg = self.config
        embed = Embed(cfg.vocab_size, cfg.d_model, name="embed")
        pos = self.param("pos_embed", nn.with_logical_partitioning(
            nn.initializers.normal(0.02), ("position", "embed")), (cfg.max_len, cfg.d_model))
        x = embed(input_ids) + pos[None, :input_ids.shape[1]]
        mask = None if attention_mask is None else padding_mask(attention_mask)
        h = TransformerStack(cfg.stack, name="encoder")(x, mask=mask).last_hidden_state
        return CausalLMOutput(logits=embed.attend(h).astype(jnp.float32))
