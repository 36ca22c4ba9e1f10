"""Hugging Face T5 (``model_type="t5"``) <-> jaxmm :mod:`jaxmm.models.t5`.

Handles ``T5ForConditionalGeneration``, ``T5Model`` and ``T5EncoderModel``
(v1.0 ``relu`` and v1.1 / FLAN ``gated-gelu``). ``encoder.embed_tokens`` and
``decoder.embed_tokens`` are the shared embedding (absent or equal in files);
``lm_head.weight`` is absent when tied. The head is untied when the file holds
an ``lm_head.weight`` different from ``shared.weight``. Whether the decoder
output is rescaled by ``d_model**-0.5`` follows ``scale_decoder_outputs``
(transformers 5) or, in older files, ``tie_word_embeddings``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from jaxmm.convert import Converter, fields, register_converter
from jaxmm.convert.io import ConversionError, TensorStore
from jaxmm.convert.layers import LayerNames, norm, qkvo, transformer_layer
from jaxmm.convert.rules import TRANSPOSE, Rule, Table, Tied, params_from_hf, params_to_hf, stack
from jaxmm.models.encoder_decoder import EncoderDecoderLM
from jaxmm.models.t5 import T5Config, T5EncoderModel, T5ForConditionalGeneration, T5Model

__all__ = ["config_from_hf", "config_to_hf", "load", "save", "t5_incompatibilities",
           "tensor_table"]

_MODELS = {"lm": T5ForConditionalGeneration, "model": T5Model, "encoder": T5EncoderModel}
# Fixed in T5: set on import, required on export.
_NEEDS = dict(position_embedding="relative", norm="rmsnorm", norm_position="pre", use_bias=False,
              attention_scale=1.0, scale_embeddings=False)
_FIELDS = fields.FieldMap(
    ("vocab_size", "vocab_size", 32128), ("d_model", "d_model", 512),
    ("num_layers", "num_layers", 6), ("num_heads", "num_heads", 8), ("mlp_dim", "d_ff", 2048),
    ("norm_eps", "layer_norm_epsilon", 1e-6),
    ("relative_attention_num_buckets", "relative_attention_num_buckets", 32),
    ("relative_attention_max_distance", "relative_attention_max_distance", 128),
    ("dropout_rate", "dropout_rate", 0.1), ("bos_token_id", "bos_token_id", None),
    ("eos_token_id", "eos_token_id", 1), ("pad_token_id", "pad_token_id", 0),
)


def _feed_forward(proj: str, where: str) -> tuple[str, bool]:
    """HF ``feed_forward_proj`` -> (jaxmm activation, gated)."""
    parts = proj.split("-")
    if len(parts) > 2 or (len(parts) == 2 and parts[0] != "gated"):
        raise ConversionError(f"{where}: feed_forward_proj {proj!r} is not 'ACT' or 'gated-ACT'.")
    gated = len(parts) == 2
    act = "gelu_new" if proj == "gated-gelu" else parts[-1]  # transformers' compatibility rule
    return fields.activation_from_hf(act, where), gated


def config_from_hf(hf: dict[str, Any], **overrides: Any) -> T5Config:
    """``T5Config`` dict -> :class:`T5Config` (``overrides``: e.g. ``scan_layers``)."""
    activation, gated = _feed_forward(hf.get("feed_forward_proj", "relu"), "T5 config.json")
    values = _FIELDS.from_hf(hf)
    d_kv, tie = hf.get("d_kv", 64), hf.get("tie_word_embeddings", True) is not False
    num_decoder_layers = hf.get("num_decoder_layers")
    values.update(
        num_decoder_layers=None if num_decoder_layers == values["num_layers"]
        else num_decoder_layers,
        head_dim=None if d_kv * values["num_heads"] == values["d_model"] else d_kv,
        activation=activation, gated_mlp=gated, **_NEEDS,
        tie_word_embeddings=tie, scale_decoder_outputs=hf.get("scale_decoder_outputs", tie),
        decoder_start_token_id=hf.get("decoder_start_token_id", hf.get("pad_token_id", 0)))
    values.update(overrides)
    return T5Config.from_dict(values)


def t5_incompatibilities(cfg: Any) -> list[str]:
    """Settings that Hugging Face T5 cannot represent (empty if none)."""
    problems = fields.unsupported(cfg, "T5", **_NEEDS)
    if cfg.gated_mlp and cfg.activation == "gelu":
        problems.append("gated exact 'gelu' (T5's gated-gelu is the tanh GELU, 'gelu_tanh')")
    return problems


def config_to_hf(cfg: T5Config) -> dict[str, Any]:
    """:class:`T5Config` -> ``T5Config`` dict (transformers 4 and 5 keys)."""
    if cfg.gated_mlp:
        proj = "gated-gelu" if cfg.activation == "gelu_tanh" else f"gated-{cfg.activation}"
    else:
        proj = fields.activation_to_hf(cfg.activation)
    return dict(
        _FIELDS.to_hf(cfg), model_type="t5", d_kv=cfg.transformer(decoder=False).resolved_head_dim,
        num_decoder_layers=cfg.num_decoder_layers or cfg.num_layers, feed_forward_proj=proj,
        tie_word_embeddings=cfg.tie_word_embeddings,
        scale_decoder_outputs=cfg.rescale_decoder_outputs, is_encoder_decoder=True,
        decoder_start_token_id=cfg.decoder_start_token_id,
    )


def _side(cfg: T5Config, side: str) -> Table:
    """One ``encoder``/``decoder`` side: ``{side}.block.N.layer.M...`` <->
    ``{side}/stack/layers_N/layer/...``, plus the relative-position table of block 0."""
    decoder = side == "decoder"
    ff = "2" if decoder else "1"  # the feed-forward sub-layer comes after cross-attention
    names = LayerNames(
        attention_norm="0.layer_norm", self_attention=qkvo("0.SelfAttention.", "q", "k", "v", "o"),
        mlp_norm=f"{ff}.layer_norm",
        mlp={n: f"{ff}.DenseReluDense.{n}" for n in (("wi_0", "wi_1", "wo") if cfg.gated_mlp
                                                      else ("wi", "wo"))},
        cross_attention_norm="1.layer_norm" if decoder else None,
        cross_attention=qkvo("1.EncDecAttention.", "q", "k", "v", "o") if decoder else None)
    num_layers = (cfg.num_decoder_layers or cfg.num_layers) if decoder else cfg.num_layers
    return Table.of(
        Rule(f"{side}.block.0.layer.0.SelfAttention.relative_attention_bias.weight",
             f"{side}/relative_position_bias/embedding"),
        stack(f"{side}.block.{{i}}.layer.", f"{side}/stack", num_layers, cfg.scan_layers,
              transformer_layer(names, cfg.num_heads, norm_bias=False, bias=False)),
        norm(f"{side}.final_layer_norm", f"{side}/stack/final_norm", bias=False),
        Tied(f"{side}.embed_tokens.weight", "shared/embedding",
             why="jaxmm T5 shares one embedding."))


def tensor_table(cfg: T5Config, kind: str) -> Table:
    """T5 tensors <-> params of a ``kind`` (``lm``, ``model``, ``encoder``) model."""
    table = Table.of(Rule("shared.weight", "shared/embedding"), _side(cfg, "encoder"),
                     ignore=("EncDecAttention.relative_attention_bias",))  # unused in HF too
    if kind != "encoder":
        table += _side(cfg, "decoder")
    if kind == "lm":
        table += Table.of(Tied("lm_head.weight", "shared/embedding") if cfg.tie_word_embeddings
                          else Rule("lm_head.weight", "lm_head/kernel", TRANSPOSE))
    return table


def _kind(hf_config: dict, store: TensorStore) -> str:
    archs = " ".join(hf_config.get("architectures") or [])
    if "EncoderModel" in archs or "decoder.final_layer_norm.weight" not in store:
        return "encoder"
    return "model" if "T5Model" in archs else "lm"


def load(hf_config: dict, store: TensorStore, *, kind: str | None = None,
         **overrides: Any) -> tuple[Any, dict]:
    """Builds a T5 model and its params from a Hugging Face T5 checkpoint.

    ``kind``: ``"lm"``, ``"model"`` (no head) or ``"encoder"``; by default
    from ``architectures`` (and the presence of decoder/head tensors).
    """
    if "shared.weight" not in store:
        raise ConversionError(f"{store.source}: no shared.weight; not a T5 checkpoint.")
    kind = kind or _kind(hf_config, store)
    if kind not in _MODELS:
        raise ConversionError(f"kind must be 'lm', 'model' or 'encoder'; got {kind!r}.")
    if kind == "lm":  # untied when the file holds a head that differs from the embedding
        head = store.peek("lm_head.weight")
        untied = head is not None and not np.array_equal(head, store.peek("shared.weight"))
        overrides.setdefault("tie_word_embeddings", not untied)
    cfg = config_from_hf(hf_config, **overrides)
    if kind == "encoder":
        store.ignore(r"^(decoder|lm_head)\.")  # an encoder taken from a full checkpoint
    return _MODELS[kind](cfg), params_from_hf(tensor_table(cfg, kind), store)


def save(model: Any, params: dict) -> tuple[dict, dict]:
    """T5 model -> (``T5Config`` dict, tensors)."""
    cfg = model.config
    problems = t5_incompatibilities(cfg)
    if problems:
        raise ConversionError("This model cannot be exported as T5: " + "; ".join(problems))
    if isinstance(model, T5EncoderModel):
        kind, arch = "encoder", "T5EncoderModel"
    elif model.has_lm_head:
        kind, arch = "lm", "T5ForConditionalGeneration"
    else:
        kind, arch = "model", "T5Model"
    tensors = params_to_hf(tensor_table(cfg, kind), params)
    return dict(config_to_hf(cfg), architectures=[arch]), tensors


def _handles(model: Any) -> bool:
    return isinstance(model, EncoderDecoderLM | T5EncoderModel)


CONVERTER = register_converter(Converter(("t5",), load, save, _handles))
