"""Visual question answering: a fusion encoder over image and question tokens.

Two variants share the encoder (:class:`~jaxmm.models.modality.MultimodalEncoder`
over ``image`` and ``input_ids``/``attention_mask``, any fusion kind):

* ``mode="classify"``: an answer classifier over a fixed answer vocabulary
  (``num_answers``; ViLT-style MLP head on the fused ``pooler_output``) ->
  ``SequenceClassifierOutput`` with ``logits`` ``(B, num_answers)``. Train it
  with softmax cross-entropy on ``label`` or sigmoid cross-entropy on VQA
  soft scores (``jaxmm.train`` task ``vqa``).
* ``mode="generate"``: a GPT text decoder cross-attends to the fused tokens
  (masking padding) and writes the answer, with the captioner's machinery
  (:class:`~jaxmm.models.captioner.ConditionalDecoder`: teacher forcing with
  HF label shifting, the ``encode``/``decode`` protocol). Generate answers
  with :func:`jaxmm.generation.generate_answers`.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxmm.layers import LayerNorm
from jaxmm.layers.config_fields import DropoutFields
from jaxmm.models.captioner import ConditionalDecoder, ConditionalDecoderFields
from jaxmm.models.classifier import classifier_head
from jaxmm.models.fusion import FusionConfig, FusionOutput
from jaxmm.models.gpt import GPTConfig
from jaxmm.models.modality import ModalityEncoders, MultimodalEncoder
from jaxmm.models.outputs import SequenceClassifierOutput
from jaxmm.models.registry import register

Array = jax.Array

__all__ = ["VQAConfig", "VQAModel"]

_TINY_DECODER = dict(GPTConfig.SIZES["tiny"], vocab_size=512, max_position_embeddings=32,
                     num_layers=1, bos_token_id=1, eos_token_id=2, pad_token_id=0)


@dataclasses.dataclass(frozen=True, kw_only=True)
class VQAConfig(DropoutFields, ConditionalDecoderFields):
    """Attributes:
      mode: ``classify`` or ``generate``.
      fusion: fusion encoder over ``("image", "text")`` (any kind).
      encoders: per-modality encoders (stems or registered encoders).
      num_answers: answer vocabulary size (``classify``).
      head_hidden_dim: hidden width of the answer MLP (default ``2 * d_model``).
      dropout_rate: dropout before the answer head.
      decoder, encoder_projection, decoder_start_token_id, pad_token_id: the
        answer decoder (``generate``; :class:`ConditionalDecoderFields`, with
        ``fusion.d_model`` as the encoder width).
    """

    DEFAULTS: ClassVar = dict(decoder=GPTConfig.from_dict(_TINY_DECODER))

    mode: str = "classify"
    fusion: FusionConfig = dataclasses.field(default_factory=lambda: FusionConfig(
        kind="early", modalities=("image", "text"), max_positions=128))
    encoders: ModalityEncoders = dataclasses.field(default_factory=ModalityEncoders)
    num_answers: int = 16
    head_hidden_dim: int | None = None

    SIZES: ClassVar = {
        "tiny": dict(fusion=dict(kind="early", modalities=("image", "text"), num_layers=2,
                                 d_model=64, num_heads=4, mlp_dim=128, max_positions=128)),
        "small": dict(fusion=dict(kind="early", modalities=("image", "text"), num_layers=4,
                                  d_model=256, num_heads=4, mlp_dim=1024, max_positions=512),
                      decoder=dict(_TINY_DECODER, d_model=256, num_heads=4, mlp_dim=1024)),
    }

    def validate(self) -> None:
        self.require_one_of("mode", ("classify", "generate"))
        if set(self.fusion.modalities) != {"image", "text"}:
            raise self.config_error(f"fusion.modalities must be ('image', 'text') in some "
                                    f"order; got {self.fusion.modalities}.")
        self.require_at_least(1, "num_answers")

    @property
    def decodes_text(self) -> bool:
        return self.mode == "generate"

    @property
    def encoder_width(self) -> int:
        return self.fusion.d_model

    # Read by the trainer (synthetic data) and by jaxmm.generate.
    @property
    def num_labels(self) -> int:
        return self.num_answers

    @property
    def vocab_size(self) -> int:  # the question's (classify) or the answer's (generate)
        if self.mode == "generate":
            return self.decoder.vocab_size
        return self.encoders.text.vocab_size


@register("vqa", VQAConfig)
class VQAModel(ConditionalDecoder, nn.Module):
    """VQA over ``image`` ``(B, H, W, C)`` and a question ``input_ids`` ``(B, T)``.

    ``classify``: ``__call__(image, input_ids, attention_mask)`` ->
    ``SequenceClassifierOutput`` (``logits`` ``(B, num_answers)``).
    ``generate``: also ``decoder_input_ids``/``decoder_attention_mask`` or
    ``labels`` -> ``Seq2SeqLMOutput`` (``logits`` ``(B, T_answer, vocab)``).
    """

    config: VQAConfig

    def setup(self):
        cfg = self.config
        self.encoder = MultimodalEncoder(cfg.fusion, cfg.encoders)
        if cfg.mode == "generate":
            self.build_decoder()
        else:
            hidden = cfg.head_hidden_dim or 2 * cfg.fusion.d_model
            self.head_dense = nn.Dense(
                hidden, kernel_init=nn.with_logical_partitioning(nn.initializers.normal(0.02),
                                                                 ("embed", "mlp")),
                bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("mlp",)))
            self.head_norm = LayerNorm(1e-5)
            self.head_dropout = nn.Dropout(cfg.dropout_rate)
            self.answer_classifier = classifier_head(cfg.num_answers, None)

    def encode(self, image: Array, input_ids: Array, attention_mask: Array | None = None, *,
               deterministic: bool = True, output_attentions: bool = False,
               output_hidden_states: bool = False) -> FusionOutput:
        """Fused image+question tokens: ``last_hidden_state`` ``(B, S, d_model)`` and
        their ``attention_mask`` ``(B, S)`` (pass it to ``decode``)."""
        del output_hidden_states
        return self.encoder(dict(image=image, input_ids=input_ids,
                                 attention_mask=attention_mask),
                            deterministic=deterministic, output_attentions=output_attentions)

    def __call__(
        self, image: Array, input_ids: Array, attention_mask: Array | None = None,
        decoder_input_ids: Array | None = None, decoder_attention_mask: Array | None = None,
        labels: Array | None = None, *, deterministic: bool = True,
        output_attentions: bool = False, output_hidden_states: bool = False,
    ):
        cfg = self.config
        fused = self.encode(image, input_ids, attention_mask, deterministic=deterministic,
                            output_attentions=output_attentions)
        if cfg.mode == "generate":
            return self.teacher_forced(
                fused, fused.attention_mask, decoder_input_ids, decoder_attention_mask, labels,
                deterministic=deterministic, output_attentions=output_attentions,
                output_hidden_states=output_hidden_states)
        h = nn.gelu(self.head_dense(fused.pooler_output), approximate=False)
        h = self.head_dropout(self.head_norm(h), deterministic=deterministic)
        logits = self.answer_classifier(h)
        return SequenceClassifierOutput(logits=logits.astype(jnp.float32),
                                        attentions=fused.attentions)
