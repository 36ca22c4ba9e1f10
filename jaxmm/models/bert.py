"""BERT and RoBERTa encoders with their task heads (Hugging Face compatible).

RoBERTa is a configuration of BERT (``model_type="roberta"``): position ids
start at ``pad_token_id + 1`` and skip padding tokens, there is usually one
token type, and its classification head pools the first token through its own
dense+tanh layer. Everything else (post-LN layers, exact GELU, learned absolute
positions, token-type embeddings, pooler) is shared.

Models (registry names in brackets, ``roberta_*`` for the RoBERTa defaults)::

    BertModel                       ["bert", "roberta"]
    BertForMaskedLM                 ["bert_mlm", "roberta_mlm"]
    BertForNextSentencePrediction   ["bert_nsp"]
    BertForPreTraining              ["bert_pretraining"]   (MLM + NSP)
    BertForSequenceClassification   ["bert_classifier", "roberta_classifier"]
    BertForTokenClassification      ["bert_token_classifier", "roberta_token_classifier"]
    BertForQuestionAnswering        ["bert_qa", "roberta_qa"]

Every model is called as ``model.apply({"params": p}, input_ids,
attention_mask=None, token_type_ids=None, position_ids=None, deterministic=True,
output_attentions=False, output_hidden_states=False)`` with int32 ``(B, T)``
inputs; ``deterministic=False`` enables dropout (pass ``rngs={"dropout": k}``).
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxmm.layers import (
    DTYPES,
    Embed,
    LayerNorm,
    LearnedPositionEmbedding,
    TransformerConfig,
    TransformerStack,
    get_activation,
    key_padding_mask,
)
from jaxmm.layers.config_fields import ComputeFields, DropoutFields, TransformerFields
from jaxmm.losses import cross_entropy
from jaxmm.models.config_fields import TokenFields
from jaxmm.models.outputs import (
    BaseModelOutput,
    MaskedLMOutput,
    QuestionAnsweringOutput,
    SequenceClassifierOutput,
    TokenClassifierOutput,
)
from jaxmm.models.registry import register
from jaxmm.models.specs import text_specs

Array = jax.Array

__all__ = [
    "BertConfig",
    "BertEmbeddings",
    "BertForMaskedLM",
    "BertForNextSentencePrediction",
    "BertForPreTraining",
    "BertForPreTrainingOutput",
    "BertForQuestionAnswering",
    "BertForSequenceClassification",
    "BertForTokenClassification",
    "BertModel",
    "RobertaConfig",
    "roberta_position_ids",
    "sequence_classification_loss",
]

_INIT = nn.initializers.normal(0.02)


# ---------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, kw_only=True)
class BertConfig(ComputeFields, DropoutFields, TransformerFields, TokenFields):
    """BERT hyper-parameters (Hugging Face names in brackets).

    The encoder widths, dropout, compute and token fields are the shared ones
    (:mod:`jaxmm.layers.config_fields`, :mod:`jaxmm.models.config_fields`) with
    BERT-base defaults: ``num_layers`` [num_hidden_layers], ``d_model``
    [hidden_size], ``num_heads`` [num_attention_heads], ``mlp_dim``
    [intermediate_size], ``activation`` [hidden_act], ``dropout_rate``
    [hidden_dropout_prob], ``attention_dropout_rate``
    [attention_probs_dropout_prob], ``norm_eps`` [layer_norm_eps],
    ``vocab_size``, ``pad_token_id``, ``bos_token_id``, ``eos_token_id``,
    ``dtype``, ``param_dtype``, ``scan_layers``, ``remat_policy``,
    ``attention_impl``.

    Attributes:
      model_type: ``"bert"`` or ``"roberta"`` (position ids and head layouts).
      max_position_embeddings, type_vocab_size: table sizes.
      classifier_dropout: dropout of the heads (``None`` = dropout_rate).
      num_labels: classes of the sequence/token classification heads; a
        sequence classifier with ``num_labels == 1`` is a regressor.
      problem_type: ``None`` (infer), ``"regression"``,
        ``"single_label_classification"`` or ``"multi_label_classification"``.
      tie_word_embeddings: the MLM decoder reuses the word embedding table.
      add_pooling_layer: :class:`BertModel` has the pooler (heads decide for
        themselves, as in Hugging Face).
    """

    DEFAULTS: ClassVar = dict(
        vocab_size=30522, pad_token_id=0, num_layers=12, d_model=768, num_heads=12,
        mlp_dim=3072, dropout_rate=0.1, attention_dropout_rate=0.1, norm_eps=1e-12,
    )

    model_type: str = "bert"
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    classifier_dropout: float | None = None
    num_labels: int = 2
    problem_type: str | None = None
    tie_word_embeddings: bool = True
    add_pooling_layer: bool = True

    # Google's BERT miniatures (tiny/mini/small/medium) and the paper's base/large.
    SIZES: ClassVar = {
        "tiny": dict(num_layers=2, d_model=128, num_heads=2, mlp_dim=512),
        "mini": dict(num_layers=4, d_model=256, num_heads=4, mlp_dim=1024),
        "small": dict(num_layers=4, d_model=512, num_heads=8, mlp_dim=2048),
        "medium": dict(num_layers=8, d_model=512, num_heads=8, mlp_dim=2048),
        "base": dict(num_layers=12, d_model=768, num_heads=12, mlp_dim=3072),
        "large": dict(num_layers=24, d_model=1024, num_heads=16, mlp_dim=4096),
    }

    def input_specs(self) -> dict:
        """``input_ids`` / ``attention_mask`` / ``token_type_ids`` (:mod:`jaxmm.models.specs`)."""
        return text_specs(self.max_position_embeddings, token_type_ids=True)

    def validate(self) -> None:
        self.require_one_of("model_type", ("bert", "roberta"))
        self.require_at_least(1, "max_position_embeddings", "type_vocab_size", "num_labels")
        if self.model_type == "roberta":
            if self.pad_token_id is None:
                raise self.config_error(
                    "RoBERTa position ids are computed from pad_token_id; set it (usually 1).")
            if self.max_position_embeddings <= self.pad_token_id + 1:
                raise self.config_error(
                    f"max_position_embeddings ({self.max_position_embeddings}) must exceed "
                    f"pad_token_id + 1 ({self.pad_token_id + 1}): RoBERTa positions start there."
                )
        if self.classifier_dropout is not None:
            self.require_rate("classifier_dropout")
        self.require_one_of("problem_type", (None, "regression", "single_label_classification",
                                             "multi_label_classification"))

    @property
    def transformer_config(self) -> TransformerConfig:
        """The post-LN encoder stack these hyper-parameters describe."""
        return TransformerConfig.from_fields(
            self, norm="layernorm", norm_position="post", final_norm=False, use_bias=True)

    @property
    def max_length(self) -> int:
        """Longest input the position table can hold."""
        if self.model_type == "roberta":
            return self.max_position_embeddings - self.pad_token_id - 1
        return self.max_position_embeddings

    @property
    def head_dropout(self) -> float:
        return self.dropout_rate if self.classifier_dropout is None else self.classifier_dropout


@dataclasses.dataclass(frozen=True, kw_only=True)
class RobertaConfig(BertConfig):
    """:class:`BertConfig` with RoBERTa's defaults (BPE vocab, ``<pad>`` = 1)."""

    DEFAULTS: ClassVar = dict(
        model_type="roberta", vocab_size=50265, max_position_embeddings=514, type_vocab_size=1,
        norm_eps=1e-5, pad_token_id=1, bos_token_id=0, eos_token_id=2,
    )

    SIZES: ClassVar = {
        k: v for k, v in BertConfig.SIZES.items() if k in ("tiny", "small", "base", "large")
    }


# ---------------------------------------------------------------------------
# Input checks and position ids
# ---------------------------------------------------------------------------


def roberta_position_ids(input_ids: Array, pad_token_id: int) -> Array:
    """RoBERTa/fairseq positions ``(B, T)``: real tokens count up from ``pad+1``,
    padding tokens get ``pad_token_id``."""
    not_pad = (input_ids != pad_token_id).astype(jnp.int32)
    return jnp.cumsum(not_pad, axis=1) * not_pad + pad_token_id


def _check_ids(name: str, ids: Any, limit: int, hint: str) -> None:
    """Range check for concrete (not traced) id arrays; jnp.take would give NaN."""
    if ids is None or isinstance(ids, jax.core.Tracer):
        return
    arr = np.asarray(ids)
    if not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{name} must be integers; got dtype {arr.dtype}.")
    if arr.size and (arr.min() < 0 or arr.max() >= limit):
        raise ValueError(
            f"{name} holds values in [{arr.min()}, {arr.max()}] but must lie in [0, {limit}); "
            f"{hint}"
        )


def _check_inputs(cfg: BertConfig, input_ids, attention_mask, token_type_ids, position_ids,
                  inputs_embeds) -> tuple[int, int]:
    if (input_ids is None) == (inputs_embeds is None):
        raise ValueError("Pass exactly one of input_ids (B, T) or inputs_embeds (B, T, E).")
    shape = tuple(input_ids.shape) if input_ids is not None else tuple(inputs_embeds.shape[:2])
    if input_ids is not None and input_ids.ndim != 2:
        raise ValueError(
            f"input_ids must have shape (batch, length); got {tuple(input_ids.shape)}."
        )
    if inputs_embeds is not None and (
        inputs_embeds.ndim != 3 or inputs_embeds.shape[-1] != cfg.d_model
    ):
        raise ValueError(
            f"inputs_embeds must have shape (batch, length, {cfg.d_model}); "
            f"got {tuple(inputs_embeds.shape)}."
        )
    for name, arr in (("attention_mask", attention_mask), ("token_type_ids", token_type_ids),
                      ("position_ids", position_ids)):
        if arr is not None and tuple(jnp.shape(arr)) != shape:
            raise ValueError(f"{name} must have the shape of input_ids {shape}; "
                             f"got {tuple(jnp.shape(arr))}.")
    if shape[1] > cfg.max_length:
        raise ValueError(
            f"Input length {shape[1]} exceeds this model's position table "
            f"(max_position_embeddings={cfg.max_position_embeddings}, so at most "
            f"{cfg.max_length} tokens); truncate the inputs, e.g. "
            f"tokenizer.encode(..., max_length={cfg.max_length}, truncation=True)."
        )
    _check_ids("input_ids", input_ids, cfg.vocab_size,
               f"the model's vocab_size is {cfg.vocab_size}; use the matching tokenizer.")
    _check_ids("token_type_ids", token_type_ids, cfg.type_vocab_size,
               f"this model has type_vocab_size={cfg.type_vocab_size}.")
    _check_ids("position_ids", position_ids, cfg.max_position_embeddings,
               f"max_position_embeddings is {cfg.max_position_embeddings}.")
    return shape


# ---------------------------------------------------------------------------
# Backbone
# ---------------------------------------------------------------------------


def _dense(features: int, axes: tuple[str, str], cfg: BertConfig, name: str) -> nn.Dense:
    return nn.Dense(
        features, dtype=DTYPES[cfg.dtype], param_dtype=DTYPES[cfg.param_dtype],
        kernel_init=nn.with_logical_partitioning(_INIT, axes),
        bias_init=nn.with_logical_partitioning(nn.initializers.zeros, axes[-1:]), name=name,
    )


class BertEmbeddings(nn.Module):
    """word + position + token-type embeddings, LayerNorm, dropout -> ``(B, T, E)``."""

    config: BertConfig

    def setup(self):
        cfg = self.config
        dt, pdt = DTYPES[cfg.dtype], DTYPES[cfg.param_dtype]
        self.word_embeddings = Embed(cfg.vocab_size, cfg.d_model, _INIT, dt, pdt)
        self.position_embeddings = LearnedPositionEmbedding(
            cfg.max_position_embeddings, cfg.d_model, _INIT, dt, pdt)
        self.token_type_embeddings = Embed(cfg.type_vocab_size, cfg.d_model, _INIT, dt, pdt)
        self.norm = LayerNorm(cfg.norm_eps, dtype=dt, param_dtype=pdt)
        self.dropout = nn.Dropout(cfg.dropout_rate)

    def __call__(self, input_ids, token_type_ids, position_ids, inputs_embeds=None,
                 deterministic: bool = True) -> Array:
        x = self.word_embeddings(input_ids) if inputs_embeds is None else inputs_embeds
        x = x + self.token_type_embeddings(token_type_ids) + self.position_embeddings(position_ids)
        return self.dropout(self.norm(x), deterministic=deterministic)

    def attend(self, x: Array) -> Array:
        """Logits against the word embedding table (tied MLM decoder)."""
        return self.word_embeddings.attend(x)


@register("bert", BertConfig, "BERT encoder (embeddings, post-LN stack, pooler)")
@register("roberta", RobertaConfig, "RoBERTa encoder")
class BertModel(nn.Module):
    """The BERT encoder.

    Returns :class:`BaseModelOutput`: ``last_hidden_state`` ``(B, T, E)``,
    ``pooler_output`` ``(B, E)`` (``tanh(dense(h[:, 0]))``, ``None`` without
    the pooler), and per-layer ``hidden_states`` (``L + 1`` arrays, embeddings
    first) / ``attentions`` ``(B, H, T, T)`` when asked.
    """

    config: BertConfig
    add_pooling_layer: bool | None = None  # None: config.add_pooling_layer

    @property
    def has_pooler(self) -> bool:
        return self.config.add_pooling_layer if self.add_pooling_layer is None else (
            self.add_pooling_layer)

    def setup(self):
        cfg = self.config
        self.embeddings = BertEmbeddings(cfg)
        self.encoder = TransformerStack(cfg.transformer_config)
        if self.has_pooler:
            self.pooler = _dense(cfg.d_model, ("embed", "mlp"), cfg, "pooler")

    def __call__(
        self,
        input_ids: Array | None = None,
        attention_mask: Array | None = None,
        token_type_ids: Array | None = None,
        position_ids: Array | None = None,
        *,
        inputs_embeds: Array | None = None,
        deterministic: bool = True,
        output_attentions: bool = False,
        output_hidden_states: bool = False,
    ) -> BaseModelOutput:
        cfg = self.config
        as_array = lambda a: None if a is None else jnp.asarray(a)  # noqa: E731 (lists ok)
        input_ids, attention_mask, token_type_ids, position_ids = map(
            as_array, (input_ids, attention_mask, token_type_ids, position_ids))
        b, t = _check_inputs(cfg, input_ids, attention_mask, token_type_ids, position_ids,
                             inputs_embeds)
        if token_type_ids is None:
            token_type_ids = jnp.zeros((b, t), jnp.int32)
        if position_ids is None:
            if cfg.model_type == "roberta" and input_ids is not None:
                position_ids = roberta_position_ids(input_ids, cfg.pad_token_id)
            else:
                start = cfg.pad_token_id + 1 if cfg.model_type == "roberta" else 0
                position_ids = jnp.broadcast_to(start + jnp.arange(t, dtype=jnp.int32), (b, t))
        # Padded keys are hidden; padded query rows still compute (as in HF).
        mask = None if attention_mask is None else key_padding_mask(attention_mask)
        x = self.embeddings(input_ids, token_type_ids, position_ids, inputs_embeds,
                            deterministic=deterministic)
        out = self.encoder(x, mask=mask, deterministic=deterministic,
                           output_attentions=output_attentions,
                           output_hidden_states=output_hidden_states)
        h = out.last_hidden_state
        pooled = jnp.tanh(self.pooler(h[:, 0])) if self.has_pooler else None
        return BaseModelOutput(last_hidden_state=h, pooler_output=pooled,
                               hidden_states=out.hidden_states, attentions=out.attentions)

    def attend(self, x: Array) -> Array:
        return self.embeddings.attend(x)


# ---------------------------------------------------------------------------
# Heads
# ---------------------------------------------------------------------------


@flax.struct.dataclass
class BertForPreTrainingOutput:
    """``prediction_logits`` ``(B, T, V)``, ``seq_relationship_logits`` ``(B, 2)``."""

    prediction_logits: Array
    seq_relationship_logits: Array
    hidden_states: tuple[Array, ...] | None = None
    attentions: tuple[Array, ...] | None = None


class MaskedLMHead(nn.Module):
    """dense -> activation -> LayerNorm -> (tied) decoder + bias: ``(B, T, V)`` logits.

    BERT applies ``hidden_act``; RoBERTa always applies exact GELU.
    """

    config: BertConfig

    @nn.compact
    def __call__(self, h: Array, backbone: BertModel) -> Array:
        cfg = self.config
        act = get_activation("gelu" if cfg.model_type == "roberta" else cfg.activation)
        h = act(_dense(cfg.d_model, ("embed", "mlp"), cfg, "dense")(h))
        h = LayerNorm(cfg.norm_eps, dtype=DTYPES[cfg.dtype], param_dtype=DTYPES[cfg.param_dtype],
                      name="norm")(h)
        if cfg.tie_word_embeddings:
            logits = backbone.attend(h)
        else:
            kernel = self.param("decoder", nn.with_logical_partitioning(_INIT, ("embed", "vocab")),
                                (cfg.d_model, cfg.vocab_size), DTYPES[cfg.param_dtype])
            logits = h @ kernel.astype(h.dtype)
        bias = self.param("bias", nn.with_logical_partitioning(nn.initializers.zeros, ("vocab",)),
                          (cfg.vocab_size,), DTYPES[cfg.param_dtype])
        return (logits + bias.astype(logits.dtype)).astype(jnp.float32)


class _BertHead(nn.Module):
    """A BERT backbone (submodule ``bert``) followed by a task head.

    Call: ``(input_ids, attention_mask=None, token_type_ids=None,
    position_ids=None, *, inputs_embeds=None, deterministic=True,
    output_attentions=False, output_hidden_states=False)``.
    """

    config: BertConfig

    def uses_pooler(self) -> bool:
        return False

    @nn.compact
    def __call__(
        self,
        input_ids: Array | None = None,
        attention_mask: Array | None = None,
        token_type_ids: Array | None = None,
        position_ids: Array | None = None,
        *,
        inputs_embeds: Array | None = None,
        deterministic: bool = True,
        output_attentions: bool = False,
        output_hidden_states: bool = False,
    ):
        bert = BertModel(self.config, add_pooling_layer=self.uses_pooler(), name="bert")
        out = bert(input_ids, attention_mask, token_type_ids, position_ids,
                   inputs_embeds=inputs_embeds, deterministic=deterministic,
                   output_attentions=output_attentions, output_hidden_states=output_hidden_states)
        return self.head(bert, out, deterministic)

    def head(self, bert: BertModel, out: BaseModelOutput, deterministic: bool):
        raise NotImplementedError(f"{type(self).__name__} must define head().")

    def dropout(self, x: Array, deterministic: bool) -> Array:
        return nn.Dropout(self.config.head_dropout)(x, deterministic=deterministic)

    def dense(self, features: int, name: str, axes=("embed", "classes")) -> nn.Dense:
        return _dense(features, axes, self.config, name)


@register("bert_mlm", BertConfig, "BERT with the masked-LM head")
@register("roberta_mlm", RobertaConfig, "RoBERTa with the masked-LM head")
class BertForMaskedLM(_BertHead):
    """Masked LM: :class:`MaskedLMOutput` with ``logits`` ``(B, T, V)`` (float32)."""

    def head(self, bert, out, deterministic):
        logits = MaskedLMHead(self.config, name="mlm_head")(out.last_hidden_state, bert)
        return MaskedLMOutput(logits=logits, hidden_states=out.hidden_states,
                              attentions=out.attentions)


@register("bert_nsp", BertConfig, "BERT with the next-sentence-prediction head")
class BertForNextSentencePrediction(_BertHead):
    """NSP: ``logits`` ``(B, 2)``; class 0 = B follows A, 1 = B is random."""

    def uses_pooler(self) -> bool:
        return True

    def head(self, bert, out, deterministic):
        logits = self.dense(2, "nsp_head")(out.pooler_output).astype(jnp.float32)
        return SequenceClassifierOutput(logits=logits, hidden_states=out.hidden_states,
                                        attentions=out.attentions)


@register("bert_pretraining", BertConfig, "BERT with the MLM and NSP pretraining heads")
class BertForPreTraining(_BertHead):
    """MLM + NSP: :class:`BertForPreTrainingOutput`."""

    def uses_pooler(self) -> bool:
        return True

    def head(self, bert, out, deterministic):
        mlm = MaskedLMHead(self.config, name="mlm_head")(out.last_hidden_state, bert)
        nsp = self.dense(2, "nsp_head")(out.pooler_output).astype(jnp.float32)
        return BertForPreTrainingOutput(prediction_logits=mlm, seq_relationship_logits=nsp,
                                        hidden_states=out.hidden_states,
                                        attentions=out.attentions)


@register("bert_classifier", BertConfig, "BERT sequence classification/regression")
@register("roberta_classifier", RobertaConfig, "RoBERTa sequence classification/regression")
class BertForSequenceClassification(_BertHead):
    """Sequence classification/regression: ``logits`` ``(B, num_labels)`` (float32).

    BERT: ``classifier(dropout(pooler_output))``. RoBERTa: ``classifier(dropout(
    tanh(classifier_dense(dropout(h[:, 0])))))`` (its own head, no pooler).
    :func:`sequence_classification_loss` gives the matching loss.
    """

    def uses_pooler(self) -> bool:
        return self.config.model_type == "bert"

    def head(self, bert, out, deterministic):
        cfg = self.config
        if cfg.model_type == "roberta":
            x = self.dropout(out.last_hidden_state[:, 0], deterministic)
            x = jnp.tanh(self.dense(cfg.d_model, "classifier_dense", ("embed", "mlp"))(x))
        else:
            x = out.pooler_output
        x = self.dropout(x, deterministic)
        logits = self.dense(cfg.num_labels, "classifier")(x).astype(jnp.float32)
        return SequenceClassifierOutput(logits=logits, hidden_states=out.hidden_states,
                                        attentions=out.attentions)


@register("bert_token_classifier", BertConfig, "BERT token classification (NER, tagging)")
@register("roberta_token_classifier", RobertaConfig, "RoBERTa token classification")
class BertForTokenClassification(_BertHead):
    """Per-token classification: ``logits`` ``(B, T, num_labels)`` (float32)."""

    def head(self, bert, out, deterministic):
        x = self.dropout(out.last_hidden_state, deterministic)
        logits = self.dense(self.config.num_labels, "classifier")(x).astype(jnp.float32)
        return TokenClassifierOutput(logits=logits, hidden_states=out.hidden_states,
                                     attentions=out.attentions)


@register("bert_qa", BertConfig, "BERT extractive question answering (span start/end)")
@register("roberta_qa", RobertaConfig, "RoBERTa extractive question answering")
class BertForQuestionAnswering(_BertHead):
    """Extractive QA: ``start_logits`` and ``end_logits`` ``(B, T)`` (float32)."""

    def head(self, bert, out, deterministic):
        logits = self.dense(2, "qa_outputs")(out.last_hidden_state).astype(jnp.float32)
        return QuestionAnsweringOutput(start_logits=logits[..., 0], end_logits=logits[..., 1],
                                       hidden_states=out.hidden_states,
                                       attentions=out.attentions)


# ---------------------------------------------------------------------------
# Loss for the sequence head
# ---------------------------------------------------------------------------


def sequence_classification_loss(config: BertConfig, logits: Array, labels: Array) -> Array:
    """Mean loss of :class:`BertForSequenceClassification` logits, as HF computes it.

    ``problem_type`` (or, when ``None``: regression if ``num_labels == 1``,
    single-label if ``labels`` are integers, else multi-label) selects MSE on
    float ``(B,)``/``(B, num_labels)`` targets, softmax cross-entropy on int
    ``(B,)`` class ids (``-100`` ignored), or sigmoid BCE on ``(B, num_labels)``
    0/1 targets.
    """
    labels = jnp.asarray(labels)
    kind = config.problem_type
    if kind is None:
        if config.num_labels == 1:
            kind = "regression"
        elif jnp.issubdtype(labels.dtype, jnp.integer):
            kind = "single_label_classification"
        else:
            kind = "multi_label_classification"
    if kind == "regression":
        preds = logits[:, 0] if config.num_labels == 1 else logits
        return jnp.mean(jnp.square(preds - labels.reshape(preds.shape).astype(preds.dtype)))
    if kind == "single_label_classification":
        return cross_entropy(logits, labels)
    return jnp.mean(optax.sigmoid_binary_cross_entropy(logits, labels.astype(logits.dtype)))
