"""Hugging Face BERT/RoBERTa checkpoints <-> jaxmm :mod:`jaxmm.models.bert`.

Import::

    conv = jaxmm.convert.from_hf("path/to/bert-folder")             # head from config.json
    conv = jaxmm.convert.from_hf(path, head="classifier", num_labels=3)   # fine-tuning start
    conv = jaxmm.convert.from_hf(path, scan_layers=True)            # scan param layout

Options of :func:`load`: ``head`` (``base``, ``mlm``, ``nsp``, ``pretraining``,
``classifier``, ``token_classifier``, ``qa``, or a HF class name such as
``BertForMaskedLM``; default: ``architectures[0]`` of config.json), ``seed``
(initialises a head the checkpoint lacks, as ``from_pretrained`` does when
you pick another head), and any :class:`~jaxmm.models.bert.BertConfig` field
(``num_labels``, ``scan_layers``, ``remat_policy``, ``dtype``, ...).

Checkpoint keys may carry the ``bert.``/``roberta.`` prefix or not (base-model
files such as sentence-transformers' have none). MLM decoder weights tied in
the config may be absent from the file. Every tensor must be used and every
parameter found; otherwise one error names them all.
"""

from __future__ import annotations

import logging
import re
from typing import Any

import flax.linen as nn
import jax
import numpy as np
from flax import traverse_util

from jaxmm.config import nearest
from jaxmm.convert import Converter, fields, register_converter
from jaxmm.convert.io import ConversionError, TensorStore
from jaxmm.convert.layers import LayerNames, dense, norm, qkvo, transformer_layer
from jaxmm.convert.params import find_prefix
from jaxmm.convert.rules import (
    TRANSPOSE,
    Rule,
    Table,
    Tied,
    params_from_hf,
    params_to_hf,
    stack,
)
from jaxmm.models import bert as B

log = logging.getLogger(__name__)

__all__ = ["HEADS", "backbone_table", "config_from_hf", "config_to_hf", "head_table", "load",
           "save"]

# head name -> (jaxmm class, HF class suffix); HF class = "Bert"/"Roberta" + suffix.
HEADS: dict[str, tuple[type, str]] = {
    "base": (B.BertModel, "Model"),
    "mlm": (B.BertForMaskedLM, "ForMaskedLM"),
    "nsp": (B.BertForNextSentencePrediction, "ForNextSentencePrediction"),
    "pretraining": (B.BertForPreTraining, "ForPreTraining"),
    "classifier": (B.BertForSequenceClassification, "ForSequenceClassification"),
    "token_classifier": (B.BertForTokenClassification, "ForTokenClassification"),
    "qa": (B.BertForQuestionAnswering, "ForQuestionAnswering"),
}
_BERT_ONLY = ("nsp", "pretraining")  # RoBERTa has no NSP head in Hugging Face
_PREFIX = {"bert": "Bert", "roberta": "Roberta"}
# Head tensors of every layout, to skip when loading another head on purpose.
_HEAD_TENSORS = r"^(cls|lm_head|classifier|qa_outputs)\."

_FIELDS = fields.FieldMap(
    ("vocab_size", "vocab_size"), ("max_position_embeddings", "max_position_embeddings", 512),
    ("type_vocab_size", "type_vocab_size", 2), ("num_layers", "num_hidden_layers"),
    ("d_model", "hidden_size"), ("num_heads", "num_attention_heads"),
    ("mlp_dim", "intermediate_size"), ("dropout_rate", "hidden_dropout_prob", 0.1),
    ("attention_dropout_rate", "attention_probs_dropout_prob", 0.1),
    ("classifier_dropout", "classifier_dropout", None), ("norm_eps", "layer_norm_eps", 1e-12),
    ("bos_token_id", "bos_token_id", None), ("problem_type", "problem_type", None),
    ("tie_word_embeddings", "tie_word_embeddings", True),
)
_LAYER = LayerNames(
    attention_norm="attention.output.LayerNorm", mlp_norm="output.LayerNorm",
    self_attention=qkvo("attention.self.", "query", "key", "value", "dense", "attention.output."),
    mlp={"wi": "intermediate.dense", "wo": "output.dense"})
# The MLM head's dense, norm and own prefix (its bias and decoder Linear live under it).
_MLM = {"bert": ("cls.predictions.transform.dense", "cls.predictions.transform.LayerNorm",
                 "cls.predictions."),
        "roberta": ("lm_head.dense", "lm_head.layer_norm", "lm_head.")}


# ---------------------------------------------------------------------------
# Config
# ---------------------------------------------------------------------------


def config_from_hf(hf: dict[str, Any], **overrides) -> B.BertConfig:
    """``config.json`` dict -> :class:`BertConfig` (``overrides`` are BertConfig fields)."""
    if hf.get("is_decoder") or hf.get("add_cross_attention"):
        raise ConversionError(
            "This BERT checkpoint is configured as a decoder (is_decoder/add_cross_attention); "
            "jaxmm's BERT is a bidirectional encoder. Use a GPT-style model for generation."
        )
    pos = hf.get("position_embedding_type", "absolute")
    if pos != "absolute":
        raise ConversionError(
            f"position_embedding_type={pos!r} is not supported; jaxmm's BERT uses learned "
            "absolute positions (position_embedding_type='absolute')."
        )
    act = hf.get("hidden_act", "gelu")
    fields.activation_from_hf(act, "BERT config.json")  # validates; jaxmm keeps the HF name
    cls = B.RobertaConfig if hf.get("model_type") == "roberta" else B.BertConfig
    values = _FIELDS.from_hf(hf)
    for key in ("dropout_rate", "attention_dropout_rate", "norm_eps"):
        values[key] = float(values[key])
    values.update(model_type=hf.get("model_type"), activation=act,
                  pad_token_id=hf.get("pad_token_id", cls.pad_token_id),
                  eos_token_id=fields.first_id(hf.get("eos_token_id")),
                  num_labels=fields.num_labels_from_hf(hf))
    values.update(overrides)
    return cls.from_dict(values)


def config_to_hf(cfg: B.BertConfig, architecture: str) -> dict[str, Any]:
    """:class:`BertConfig` -> ``config.json`` dict for HF class ``architecture``."""
    # HF's QA head is Linear(hidden, num_labels) split into start/end: always 2.
    num_labels = 2 if architecture.endswith("ForQuestionAnswering") else cfg.num_labels
    return dict(
        _FIELDS.to_hf(cfg), architectures=[architecture], model_type=cfg.model_type,
        hidden_act=fields.activation_to_hf(cfg.activation), initializer_range=0.02,
        pad_token_id=cfg.pad_token_id, eos_token_id=cfg.eos_token_id,
        position_embedding_type="absolute", is_decoder=False, add_cross_attention=False,
        dtype="float32", **fields.labels_to_hf(num_labels))


def _resolve_head(name: str, model_type: str) -> str:
    """A head name or HF class name -> key of :data:`HEADS`."""
    prefix = _PREFIX[model_type]
    by_class = {prefix + suffix: key for key, (_, suffix) in HEADS.items()}
    key = by_class.get(name, name)
    if key not in HEADS or (model_type == "roberta" and key in _BERT_ONLY):
        valid = [k for k in HEADS if not (model_type == "roberta" and k in _BERT_ONLY)]
        close = nearest(name, valid + list(by_class))
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ConversionError(
            f"Unsupported {model_type} head/architecture {name!r}.{hint} Supported heads: "
            f"{', '.join(valid)}; pass head=... to load the encoder with one of them "
            "(head='base' for the encoder alone)."
        )
    return key


# ---------------------------------------------------------------------------
# Tensor tables
# ---------------------------------------------------------------------------


def backbone_table(cfg: B.BertConfig) -> Table:
    """The encoder (no pooler): ``embeddings...``, ``encoder.layer.N...`` <->
    :class:`BertModel` params."""
    return Table.of(
        [Rule(f"embeddings.{n}_embeddings.weight", f"embeddings/{n}_embeddings/embedding")
         for n in ("word", "position", "token_type")],
        norm("embeddings.LayerNorm", "embeddings/norm"),
        stack("encoder.layer.{i}.", "encoder", cfg.num_layers, cfg.scan_layers,
              transformer_layer(_LAYER, cfg.num_heads)),
    )


def head_table(cfg: B.BertConfig, head: str) -> Table:
    """The tensors of ``head`` (a key of :data:`HEADS`), outside the encoder's prefix."""
    roberta = cfg.model_type == "roberta"
    parts: list[Rule] = []
    ignore: tuple[str, ...] = ()
    if head in ("mlm", "pretraining"):
        dense_name, norm_name, mlm = _MLM[cfg.model_type]
        parts += [*dense(dense_name, "mlm_head/dense"), *norm(norm_name, "mlm_head/norm")]
        if cfg.tie_word_embeddings:  # the decoder copies the word embeddings and the bias
            parts.append(Rule(f"{mlm}bias", "mlm_head/bias"))
            ignore = tuple(re.escape(f"{mlm}decoder.{n}") + "$" for n in ("weight", "bias"))
        else:  # HF's forward then uses the decoder's own weight and bias
            parts += [Rule(f"{mlm}decoder.weight", "mlm_head/decoder", TRANSPOSE),
                      Rule(f"{mlm}decoder.bias", "mlm_head/bias"),
                      # HF stores the bias twice and requires both when untied.
                      Tied(f"{mlm}bias", "mlm_head/bias", check=False, write=True)]
    if head in ("nsp", "pretraining"):
        parts += dense("cls.seq_relationship", "nsp_head")
    if head == "classifier" and roberta:
        parts += [*dense("classifier.dense", "classifier_dense"),
                  *dense("classifier.out_proj", "classifier")]
    elif head in ("classifier", "token_classifier"):
        parts += dense("classifier", "classifier")
    if head == "qa":
        parts += dense("qa_outputs", "qa_outputs")
    return Table.of(parts, ignore=ignore)


def _tables(cfg: B.BertConfig, head: str, prefix: str, pooler: bool) -> tuple[Table, ...]:
    """(encoder, pooler, head) tables of a model with ``head`` (encoder tensors under
    ``prefix``; params under ``bert/`` unless the model is the bare encoder)."""
    inner = "" if head == "base" else "bert/"
    pooler_table = Table.of(dense("pooler.dense", "pooler") if pooler else [])
    return (backbone_table(cfg).under(prefix, inner), pooler_table.under(prefix, inner),
            head_table(cfg, head))


def _uses_pooler(model: nn.Module) -> bool:
    return model.has_pooler if isinstance(model, B.BertModel) else model.uses_pooler()


# ---------------------------------------------------------------------------
# Load / save
# ---------------------------------------------------------------------------


def load(hf_config: dict, store: TensorStore, *, head: str | None = None, seed: int = 0,
         **overrides) -> tuple[nn.Module, dict]:
    """Builds the jaxmm model for a HF BERT/RoBERTa folder and fills its params.

    Returns ``(model, params)`` with plain (unboxed) arrays in the model's
    dtypes, in the scan layout when ``scan_layers=True``.
    """
    model_type = hf_config.get("model_type")
    file_arch = (hf_config.get("architectures") or [f"{_PREFIX[model_type]}Model"])[0]
    chosen = _resolve_head(head if head is not None else file_arch, model_type)
    try:
        file_head = _resolve_head(file_arch, model_type)
    except ConversionError:
        file_head = None
    cfg = config_from_hf(hf_config, **overrides)
    store.rename(".LayerNorm.gamma", ".LayerNorm.weight")  # TF-era spellings
    store.rename(".LayerNorm.beta", ".LayerNorm.bias")
    prefix = find_prefix(store, "embeddings.word_embeddings.weight",
                         (f"{model_type}.", "bert.", "roberta.", ""), default=f"{model_type}.")
    if chosen == "base":
        cfg = cfg.replace(add_pooling_layer=f"{prefix}pooler.dense.weight" in store)
    model = HEADS[chosen][0](cfg)
    encoder, *optional = _tables(cfg, chosen, prefix, _uses_pooler(model))
    # Another head than the file's: take the encoder and initialise what the file
    # lacks (the head, the pooler), as from_pretrained does for a new head.
    switched = chosen != file_head
    lacking = [switched and bool(t.rules) and not any(n in store for n in t.hf_names())
               for t in optional]
    if switched:
        store.ignore(_HEAD_TENSORS)
    if not _uses_pooler(model):  # e.g. roberta-base's MLM file keeps its pooler
        store.ignore("^" + re.escape(f"{prefix}pooler."))
    store.ignore("position_ids")
    example = np.zeros((1, 2), np.int32)
    init = (model.init(jax.random.key(seed), example) if any(lacking) else
            jax.eval_shape(lambda: model.init(jax.random.key(seed), example)))
    init = nn.meta.unbox(init)["params"]
    kept = [t for t, lacks in zip(optional, lacking) if not lacks]
    params = params_from_hf(Table.of(encoder, *kept), store, expected=init)
    if any(lacking):
        fresh = sorted(n for t, lacks in zip(optional, lacking) if lacks for n in t.hf_names())
        log.warning("%s: newly initialised (not in the checkpoint): %s", store.source,
                    ", ".join(fresh))
        params = traverse_util.unflatten_dict({**traverse_util.flatten_dict(
            jax.tree.map(np.asarray, init)), **traverse_util.flatten_dict(params)})
    return model, params


def _head_of(model: nn.Module) -> str:
    for key, (cls, _) in HEADS.items():
        if type(model) is cls:
            return key
    raise ConversionError(f"{type(model).__name__} is not a BERT model.")


def save(model: nn.Module, params: dict) -> tuple[dict, dict]:
    """jaxmm BERT/RoBERTa model + params -> (config.json dict, HF tensors)."""
    cfg: B.BertConfig = model.config
    head = _head_of(model)
    if cfg.model_type == "roberta" and head in _BERT_ONLY:
        raise ConversionError(
            f"Hugging Face has no RoBERTa class for the {head!r} head; export the encoder "
            "(BertModel) or an MLM/classifier head instead."
        )
    pooler = "pooler" in (params if head == "base" else params["bert"])
    prefix = "" if head == "base" else f"{cfg.model_type}."
    tensors = params_to_hf(Table.of(*_tables(cfg, head, prefix, pooler)), params)
    return config_to_hf(cfg, _PREFIX[cfg.model_type] + HEADS[head][1]), tensors


def _handles(model: Any) -> bool:
    return isinstance(model, B.BertModel | B._BertHead)


CONVERTER = register_converter(
    Converter(model_types=("bert", "roberta"), load=load, save=save, handles=_handles)
)
