"""T5 (v1.0 and v1.1): size table and the three Hugging Face model shapes.

The architecture is :mod:`jaxmm.models.encoder_decoder` with T5 settings:

* v1.0 (``t5-small``...): ReLU FFN, LM head tied to the shared embedding,
  decoder output rescaled by ``d_model**-0.5`` before it.
* v1.1 (``t5-v1_1-small``..., also FLAN-T5): gated-GELU (tanh) FFN, untied
  LM head, no rescale.

Registered as ``t5`` (:class:`T5ForConditionalGeneration`), ``t5_model``
(:class:`T5Model`, no head) and ``t5_encoder`` (:class:`T5EncoderModel`).
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import flax.linen as nn
import jax

from jaxmm.layers import Embed
from jaxmm.models.encoder_decoder import (
    EncoderDecoderConfig,
    EncoderDecoderLM,
    EncoderDecoderModel,
    Seq2SeqEncoder,
)
from jaxmm.models.outputs import BaseModelOutput
from jaxmm.models.registry import register

Array = jax.Array

__all__ = ["T5Config", "T5EncoderModel", "T5ForConditionalGeneration", "T5Model"]

_V1_1 = dict(activation="gelu_tanh", gated_mlp=True, tie_word_embeddings=False)


@dataclasses.dataclass(frozen=True)
class T5Config(EncoderDecoderConfig):
    """:class:`EncoderDecoderConfig` with T5's defaults (T5-small v1.0) and sizes."""

    SIZES: ClassVar = {
        "tiny": dict(num_layers=2, d_model=64, num_heads=4, mlp_dim=256),
        "t5-small": dict(num_layers=6, d_model=512, num_heads=8, head_dim=64, mlp_dim=2048),
        "t5-base": dict(num_layers=12, d_model=768, num_heads=12, head_dim=64, mlp_dim=3072),
        "t5-large": dict(num_layers=24, d_model=1024, num_heads=16, head_dim=64, mlp_dim=4096),
        "tiny-v1_1": dict(_V1_1, num_layers=2, d_model=64, num_heads=4, mlp_dim=128),
        "t5-v1_1-small": dict(_V1_1, num_layers=8, d_model=512, num_heads=6, head_dim=64,
                              mlp_dim=1024),
        "t5-v1_1-base": dict(_V1_1, num_layers=12, d_model=768, num_heads=12, head_dim=64,
                             mlp_dim=2048),
        "t5-v1_1-large": dict(_V1_1, num_layers=24, d_model=1024, num_heads=16, head_dim=64,
                              mlp_dim=2816),
    }


@register("t5", T5Config)
class T5ForConditionalGeneration(EncoderDecoderLM):
    """T5 with its LM head; ``encode`` / ``decode`` / ``__call__``."""

    config: T5Config


@register("t5_model", T5Config)
class T5Model(EncoderDecoderModel):
    """T5 without an LM head (decoder ``last_hidden_state``)."""

    config: T5Config


@register("t5_encoder", T5Config)
class T5EncoderModel(nn.Module):
    """T5's encoder alone: ``input_ids`` ``(B, S)`` -> :class:`BaseModelOutput`."""

    config: T5Config

    def setup(self):
        cfg = self.config
        tcfg = cfg.transformer(decoder=False)
        self.shared = Embed(
            cfg.vocab_size, cfg.d_model,
            embedding_init=nn.initializers.normal(cfg.resolved_embedding_init_std),
            dtype=tcfg.compute_dtype, param_dtype=tcfg.weights_dtype)
        self.encoder = Seq2SeqEncoder(cfg, self.shared)

    def __call__(self, input_ids: Array, attention_mask: Array | None = None,
                 **kwargs: Any) -> BaseModelOutput:
        """Same arguments as :meth:`EncoderDecoderLM.encode`."""
        return self.encoder(input_ids, attention_mask, **kwargs)
