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
from collections.abc import Callable, Iterator
from typing import Any

import flax.linen as nn
import jax
import numpy as np

from jaxmm.config import nearest
from jaxmm.convert import Converter, register_converter
from jaxmm.convert.io import ConversionError, TensorStore
from jaxmm.layers import stack_layer_params, unstack_layer_params
from jaxmm.layers.mlp import ACTIVATIONS
from jaxmm.models import bert as B

log = logging.getLogger(__name__)

__all__ = ["HEADS", "config_from_hf", "config_to_hf", "load", "save"]

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
_HEAD_TENSOR_PREFIXES = ("cls.", "lm_head.", "classifier.", "qa_outputs.")
_HF_ACT = {"gelu_tanh": "gelu_new"}


# ---------------------------------------------------------------------------
# Config
# ---------------------------------------------------------------------------


def config_from_hf(hf: dict[str, Any], **overrides) -> B.BertConfig:
    """``config.json`` dict -> :class:`BertConfig` (``overrides`` are BertConfig fields)."""
    model_type = hf.get("model_type")
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
    if not isinstance(act, str) or act not in ACTIVATIONS:
        raise ConversionError(f"hidden_act={act!r} is not supported; use one of "
                              f"{', '.join(sorted(ACTIVATIONS))}.")
    eos = hf.get("eos_token_id")
    num_labels = len(hf["id2label"]) if hf.get("id2label") else hf.get("num_labels", 2)
    cls = B.RobertaConfig if model_type == "roberta" else B.BertConfig
    values = dict(
        model_type=model_type,
        vocab_size=hf["vocab_size"],
        max_position_embeddings=hf.get("max_position_embeddings", 512),
        type_vocab_size=hf.get("type_vocab_size", 2),
        num_layers=hf["num_hidden_layers"],
        d_model=hf["hidden_size"],
        num_heads=hf["num_attention_heads"],
        mlp_dim=hf["intermediate_size"],
        activation=act,
        dropout_rate=float(hf.get("hidden_dropout_prob", 0.1)),
        attention_dropout_rate=float(hf.get("attention_probs_dropout_prob", 0.1)),
        classifier_dropout=hf.get("classifier_dropout"),
        norm_eps=float(hf.get("layer_norm_eps", 1e-12)),
        pad_token_id=hf.get("pad_token_id", cls.pad_token_id),
        bos_token_id=hf.get("bos_token_id"),
        eos_token_id=eos[0] if isinstance(eos, list) and eos else eos,
        num_labels=num_labels,
        problem_type=hf.get("problem_type"),
        tie_word_embeddings=hf.get("tie_word_embeddings", True),
    )
    values.update(overrides)
    return cls.from_dict(values)


def config_to_hf(cfg: B.BertConfig, architecture: str) -> dict[str, Any]:
    """:class:`BertConfig` -> ``config.json`` dict for HF class ``architecture``."""
    # HF's QA head is Linear(hidden, num_labels) split into start/end: always 2.
    num_labels = 2 if architecture.endswith("ForQuestionAnswering") else cfg.num_labels
    labels = {str(i): f"LABEL_{i}" for i in range(num_labels)}
    return {
        "architectures": [architecture],
        "model_type": cfg.model_type,
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.d_model,
        "num_hidden_layers": cfg.num_layers,
        "num_attention_heads": cfg.num_heads,
        "intermediate_size": cfg.mlp_dim,
        "hidden_act": _HF_ACT.get(cfg.activation, cfg.activation),
        "hidden_dropout_prob": cfg.dropout_rate,
        "attention_probs_dropout_prob": cfg.attention_dropout_rate,
        "classifier_dropout": cfg.classifier_dropout,
        "max_position_embeddings": cfg.max_position_embeddings,
        "type_vocab_size": cfg.type_vocab_size,
        "layer_norm_eps": cfg.norm_eps,
        "initializer_range": 0.02,
        "pad_token_id": cfg.pad_token_id,
        "bos_token_id": cfg.bos_token_id,
        "eos_token_id": cfg.eos_token_id,
        "tie_word_embeddings": cfg.tie_word_embeddings,
        "problem_type": cfg.problem_type,
        "id2label": labels,
        "label2id": {v: int(k) for k, v in labels.items()},
        "position_embedding_type": "absolute",
        "is_decoder": False,
        "add_cross_attention": False,
        "dtype": "float32",
    }


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
# Tensor map: (HF name, jaxmm path, kind) for every parameter
# ---------------------------------------------------------------------------

# kind: "linear" (HF (out, in) -> kernel (in, out)), "qkv" (-> (E, H, D)),
# "out" (-> (H, D, E)), "copy" (same layout). Biases of qkv reshape to (H, D).
Entry = tuple[str, tuple[str, ...], str]


def _linear(hf: str, path: tuple[str, ...], kind: str = "linear") -> Iterator[Entry]:
    yield f"{hf}.weight", path + ("kernel",), kind
    yield f"{hf}.bias", path + ("bias",), "qkv" if kind == "qkv" else "copy"


def _norm(hf: str, path: tuple[str, ...]) -> Iterator[Entry]:
    yield f"{hf}.weight", path + ("scale",), "copy"
    yield f"{hf}.bias", path + ("bias",), "copy"


def _backbone_map(cfg: B.BertConfig, pooler: bool) -> Iterator[Entry]:
    for name in ("word", "position", "token_type"):
        yield f"embeddings.{name}_embeddings.weight", (
            "embeddings", f"{name}_embeddings", "embedding"), "copy"
    yield from _norm("embeddings.LayerNorm", ("embeddings", "norm"))
    for i in range(cfg.num_layers):
        hf, jx = f"encoder.layer.{i}", ("encoder", f"layers_{i}", "layer")
        for proj in ("query", "key", "value"):
            yield from _linear(f"{hf}.attention.self.{proj}", jx + ("self_attention", proj), "qkv")
        yield from _linear(f"{hf}.attention.output.dense", jx + ("self_attention", "out"), "out")
        yield from _norm(f"{hf}.attention.output.LayerNorm", jx + ("attention_norm",))
        yield from _linear(f"{hf}.intermediate.dense", jx + ("mlp", "wi"))
        yield from _linear(f"{hf}.output.dense", jx + ("mlp", "wo"))
        yield from _norm(f"{hf}.output.LayerNorm", jx + ("mlp_norm",))
    if pooler:
        yield from _linear("pooler.dense", ("pooler",))


def _head_map(cfg: B.BertConfig, head: str) -> Iterator[Entry]:
    roberta = cfg.model_type == "roberta"
    if head in ("mlm", "pretraining"):
        if roberta:
            yield from _linear("lm_head.dense", ("mlm_head", "dense"))
            yield from _norm("lm_head.layer_norm", ("mlm_head", "norm"))
        else:
            yield from _linear("cls.predictions.transform.dense", ("mlm_head", "dense"))
            yield from _norm("cls.predictions.transform.LayerNorm", ("mlm_head", "norm"))
        bias, decoder = _mlm_bias_names(cfg)
        if cfg.tie_word_embeddings:
            yield bias, ("mlm_head", "bias"), "copy"
        else:  # HF's forward then uses the decoder's own weight and bias
            yield f"{decoder}.weight", ("mlm_head", "decoder"), "linear"
            yield f"{decoder}.bias", ("mlm_head", "bias"), "copy"
    if head in ("nsp", "pretraining"):
        yield from _linear("cls.seq_relationship", ("nsp_head",))
    if head == "classifier":
        if roberta:
            yield from _linear("classifier.dense", ("classifier_dense",))
            yield from _linear("classifier.out_proj", ("classifier",))
        else:
            yield from _linear("classifier", ("classifier",))
    if head == "token_classifier":
        yield from _linear("classifier", ("classifier",))
    if head == "qa":
        yield from _linear("qa_outputs", ("qa_outputs",))


def _mlm_bias_names(cfg: B.BertConfig) -> tuple[str, str]:
    """(the head's own bias tensor, the decoder Linear's name) in HF."""
    if cfg.model_type == "roberta":
        return "lm_head.bias", "lm_head.decoder"
    return "cls.predictions.bias", "cls.predictions.decoder"


def _decoder_copies(cfg: B.BertConfig) -> tuple[str, ...]:
    """MLM tensors HF keeps as copies of others (old files store them, new ones may not)."""
    bias, decoder = _mlm_bias_names(cfg)
    if cfg.tie_word_embeddings:
        return f"{decoder}.weight", f"{decoder}.bias"
    return (bias,)


def _to_jax(arr: np.ndarray, kind: str, cfg: B.BertConfig) -> np.ndarray:
    h, d = cfg.num_heads, cfg.d_model // cfg.num_heads
    if kind == "linear":
        return arr.T
    if kind == "qkv":
        return arr.T.reshape(cfg.d_model, h, d) if arr.ndim == 2 else arr.reshape(h, d)
    if kind == "out":
        return arr.T.reshape(h, d, cfg.d_model)
    return arr


def _to_hf(arr: np.ndarray, kind: str) -> np.ndarray:
    if kind == "linear":
        return arr.T
    if kind == "qkv":
        return arr.reshape(arr.shape[0], -1).T if arr.ndim == 3 else arr.reshape(-1)
    if kind == "out":
        return arr.reshape(-1, arr.shape[-1]).T
    return arr


def _set(tree: dict, path: tuple[str, ...], value: Any) -> None:
    for key in path[:-1]:
        tree = tree.setdefault(key, {})
    tree[path[-1]] = value


def _get(tree: dict, path: tuple[str, ...]) -> Any:
    for key in path:
        tree = tree[key]
    return tree


# ---------------------------------------------------------------------------
# Load
# ---------------------------------------------------------------------------


def _find_prefix(store: TensorStore, model_type: str) -> str:
    for prefix in (f"{model_type}.", "bert.", "roberta.", ""):
        if f"{prefix}embeddings.word_embeddings.weight" in store:
            return prefix
    return f"{model_type}."


def _take(store: TensorStore, name: str) -> np.ndarray:
    """A tensor, accepting the TF-era ``LayerNorm.gamma/beta`` spelling."""
    if name not in store and ".LayerNorm." in name:
        old = name.replace(".weight", ".gamma").replace(".bias", ".beta")
        if old in store:
            return store.take(old)
    return store.take(name)


def _uses_pooler(model: nn.Module) -> bool:
    return model.has_pooler if isinstance(model, B.BertModel) else model.uses_pooler()


def load(hf_config: dict, store: TensorStore, *, head: str | None = None, seed: int = 0,
         **overrides) -> tuple[nn.Module, dict]:
    """Builds the jaxmm model for a HF BERT/RoBERTa folder and fills its params.

    Returns ``(model, params)`` with plain (unboxed) float arrays, in the scan
    layout when ``scan_layers=True``.
    """
    model_type = hf_config.get("model_type")
    file_arch = (hf_config.get("architectures") or [f"{_PREFIX[model_type]}Model"])[0]
    chosen = _resolve_head(head if head is not None else file_arch, model_type)
    try:
        file_head = _resolve_head(file_arch, model_type)
    except ConversionError:
        file_head = None
    # Another head than the file's: take the encoder and initialise what the file
    # lacks (the head, the pooler), as from_pretrained does for a new head.
    switched = chosen != file_head
    cfg = config_from_hf(hf_config, **overrides)
    prefix = _find_prefix(store, model_type)
    if chosen == "base":
        cfg = cfg.replace(add_pooling_layer=f"{prefix}pooler.dense.weight" in store)
    loop_cfg = cfg.replace(scan_layers=False)
    if chosen == "base":
        model = B.BertModel(loop_cfg)
        inner: tuple[str, ...] = ()
    else:
        model = HEADS[chosen][0](loop_cfg)
        inner = ("bert",)

    entries = [(prefix + n, inner + p, k) for n, p, k in _backbone_map(cfg, _uses_pooler(model))]
    entries += list(_head_map(cfg, chosen))
    fresh: set[str] = set()
    if switched:
        head_names = [n for n, _, _ in _head_map(cfg, chosen)]
        pooler_names = [n for n, _, _ in entries if n.startswith(f"{prefix}pooler.")]
        for group in (head_names, pooler_names):
            if group and not any(n in store for n in group):
                fresh.update(group)
        store.ignore(*_HEAD_TENSOR_PREFIXES)
    if not _uses_pooler(model):
        store.ignore(f"{prefix}pooler.")  # e.g. roberta-base's MLM file keeps its pooler
    store.ignore("position_ids", *_decoder_copies(cfg))

    params: dict = {}
    for hf_name, path, kind in entries:
        if hf_name not in fresh:
            _set(params, path, _to_jax(_take(store, hf_name), kind, cfg))
    store.finish()

    # Shapes and dtypes come from the model; fresh leaves from its initialiser.
    example = np.zeros((1, 2), np.int32)
    if fresh:
        log.warning("%s: newly initialised (not in the checkpoint): %s", store.source,
                    ", ".join(sorted(fresh)))
        init = nn.meta.unbox(model.init(jax.random.key(seed), example))["params"]
    else:
        init = nn.meta.unbox(jax.eval_shape(lambda: model.init(jax.random.key(seed), example)))
        init = init["params"]
    bad = []

    def fill(path, want):
        keys = tuple(k.key for k in path)
        try:
            got = _get(params, keys)
        except KeyError:
            return np.asarray(want)  # a freshly initialised head/pooler parameter
        if tuple(got.shape) != tuple(want.shape):
            bad.append(f"{'/'.join(keys)}: checkpoint {tuple(got.shape)} vs config "
                       f"{tuple(want.shape)}")
            return got
        return np.asarray(got, dtype=want.dtype)

    params = jax.tree_util.tree_map_with_path(fill, init)
    if bad:
        raise ConversionError(
            f"{store.source}: tensor shapes do not match config.json: " + "; ".join(bad)
        )
    if cfg.scan_layers:
        enc = params["bert"] if inner else params
        enc["encoder"] = stack_layer_params(enc["encoder"], cfg.num_layers)
    return model.clone(config=cfg), params


# ---------------------------------------------------------------------------
# Save
# ---------------------------------------------------------------------------


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
    params = nn.meta.unbox(params)
    params = jax.tree.map(np.asarray, params)
    inner = () if head == "base" else ("bert",)
    enc = _get(params, inner) if inner else params
    if "layers" in enc["encoder"]:
        enc = dict(enc)
        enc["encoder"] = unstack_layer_params(enc["encoder"], cfg.num_layers)
        params = {**params, "bert": enc} if inner else enc
    pooler = "pooler" in (_get(params, inner) if inner else params)
    prefix = "" if head == "base" else f"{cfg.model_type}."
    tensors = {}
    entries: list[tuple[str, tuple[str, ...], str]] = [
        (prefix + n, inner + p, k) for n, p, k in _backbone_map(cfg, pooler)
    ] + list(_head_map(cfg, head))
    for hf_name, path, kind in entries:
        tensors[hf_name] = _to_hf(np.asarray(_get(params, path), np.float32), kind)
    if head in ("mlm", "pretraining") and not cfg.tie_word_embeddings:
        bias, decoder = _mlm_bias_names(cfg)
        tensors[bias] = tensors[f"{decoder}.bias"]  # HF requires both when untied
    arch = _PREFIX[cfg.model_type] + HEADS[head][1]
    return config_to_hf(cfg, arch), tensors


def _handles(model: Any) -> bool:
    return isinstance(model, B.BertModel | B._BertHead)


CONVERTER: Callable = register_converter(
    Converter(model_types=("bert", "roberta"), load=load, save=save, handles=_handles)
)
