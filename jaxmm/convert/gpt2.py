"""Hugging Face GPT-2 (``model_type="gpt2"``) <-> jaxmm :mod:`jaxmm.models.gpt`.

Handles ``GPT2Model`` (no prefix), ``GPT2LMHeadModel`` (``transformer.`` prefix;
``lm_head.weight`` is tied to ``wte`` and absent from the file) and any other
prefix through :func:`tensor_table` (e.g. ``decoder.transformer.`` inside a
VisionEncoderDecoder). GPT-2 uses ``Conv1D`` layers whose weights are stored
``(in, out)``, already the Flax kernel layout, so unlike ``nn.Linear`` they are
not transposed; ``c_attn`` packs query, key and value along the output axis.
"""

from __future__ import annotations

from typing import Any

from jaxmm.convert import Converter, fields, register_converter
from jaxmm.convert.io import ConversionError, TensorStore
from jaxmm.convert.layers import norm
from jaxmm.convert.params import CausalLMFormat, load_causal_lm, save_causal_lm
from jaxmm.convert.rules import Rule, Table, chain, heads, split, stack
from jaxmm.models.gpt import GPTConfig, GPTLMHeadModel, GPTModel

__all__ = ["FORMAT", "config_from_hf", "config_to_hf", "gpt2_incompatibilities", "load", "save",
           "tensor_table"]

FORMAT = CausalLMFormat(anchor="wte.weight", lm_prefix="transformer.", lm_marker="LMHead",
                        architectures=("GPT2LMHeadModel", "GPT2Model"))

# Fixed in GPT-2: set on import, required on export.
_NEEDS = dict(position_embedding="learned", norm="layernorm", use_bias=True, gated_mlp=False)
_FIELDS = fields.FieldMap(
    ("vocab_size", "vocab_size", 50257), ("max_position_embeddings", "n_positions", 1024),
    ("num_layers", "n_layer", 12), ("d_model", "n_embd", 768), ("num_heads", "n_head", 12),
    ("norm_eps", "layer_norm_epsilon", 1e-5), ("tie_word_embeddings", "tie_word_embeddings", True),
    ("add_cross_attention", "add_cross_attention", False), ("dropout_rate", "resid_pdrop", 0.1),
    ("attention_dropout_rate", "attn_pdrop", 0.1),
    ("initializer_range", "initializer_range", 0.02), *fields.TOKEN_IDS,
)


def config_from_hf(hf: dict[str, Any], **overrides: Any) -> GPTConfig:
    """``GPT2Config`` dict -> :class:`GPTConfig` (``overrides``: e.g. ``scan_layers``)."""
    where = "GPT-2 config.json"
    if hf.get("scale_attn_by_inverse_layer_idx"):
        raise ConversionError(f"{where}: scale_attn_by_inverse_layer_idx=True is not supported.")
    if hf.get("scale_attn_weights") is False:
        raise ConversionError(f"{where}: scale_attn_weights=False is not supported.")
    values = _FIELDS.from_hf(hf)
    values.update(
        mlp_dim=hf.get("n_inner") or 4 * values["d_model"],
        activation=fields.activation_from_hf(hf.get("activation_function", "gelu_new"), where),
        **_NEEDS)
    values.update(overrides)
    return GPTConfig.from_dict(values)


def gpt2_incompatibilities(cfg: GPTConfig) -> list[str]:
    """Settings of ``cfg`` that Hugging Face GPT-2 cannot represent (empty if none)."""
    problems = fields.unsupported(cfg, "GPT-2", **_NEEDS)
    if (cfg.num_kv_heads or cfg.num_heads) != cfg.num_heads:
        problems.append(f"num_kv_heads={cfg.num_kv_heads} (GPT-2 has no grouped-query attention)")
    if cfg.head_dim not in (None, cfg.d_model // cfg.num_heads):
        problems.append(f"head_dim={cfg.head_dim} (GPT-2 needs d_model // num_heads)")
    return problems


def config_to_hf(cfg: GPTConfig) -> dict[str, Any]:
    """:class:`GPTConfig` -> ``GPT2Config`` dict."""
    return dict(_FIELDS.to_hf(cfg), model_type="gpt2", n_inner=cfg.mlp_dim,
                activation_function=fields.activation_to_hf(cfg.activation),
                embd_pdrop=cfg.dropout_rate, scale_attn_weights=True)


def _attention(hf: str, path: str, num_heads: int, cross: bool) -> list[Rule]:
    """``c_attn`` (query, key, value side by side; key, value for cross-attention,
    whose query is ``q_attn``) and ``c_proj``, all Conv1D ``(in, out)``."""
    per_head = heads(-1, num_heads)
    fused = ("key", "value") if cross else ("query", "key", "value")
    rules = [Rule(f"{hf}c_attn.{kind}", tuple(f"{path}/{n}/{leaf}" for n in fused),
                  chain(split(len(fused)), per_head)) for kind, leaf in (("weight", "kernel"),
                                                                      ("bias", "bias"))]
    if cross:
        rules += [Rule(f"{hf}q_attn.weight", f"{path}/query/kernel", per_head),
                  Rule(f"{hf}q_attn.bias", f"{path}/query/bias", per_head)]
    return rules + [Rule(f"{hf}c_proj.weight", f"{path}/out/kernel", heads(0, num_heads)),
                    Rule(f"{hf}c_proj.bias", f"{path}/out/bias")]


def _conv1d(hf: str, path: str) -> list[Rule]:
    return [Rule(f"{hf}.weight", f"{path}/kernel"), Rule(f"{hf}.bias", f"{path}/bias")]


def tensor_table(cfg: GPTConfig) -> Table:
    """GPT-2 tensors (``wte.weight``, ``h.N...``) <-> :class:`GPTModel` params."""
    layer = [*norm("ln_1", "attention_norm"),
             *_attention("attn.", "self_attention", cfg.num_heads, cross=False),
             *norm("ln_2", "mlp_norm"),
             *_conv1d("mlp.c_fc", "mlp/wi"), *_conv1d("mlp.c_proj", "mlp/wo")]
    if cfg.add_cross_attention:
        layer += [*norm("ln_cross_attn", "cross_attention_norm"),
                  *_attention("crossattention.", "cross_attention", cfg.num_heads, cross=True)]
    return Table.of(
        Rule("wte.weight", "token_embedding/embedding"),
        Rule("wpe.weight", "position_embedding/embedding"),
        stack("h.{i}.", "decoder", cfg.num_layers, cfg.scan_layers, layer),
        norm("ln_f", "decoder/final_norm"),
        # causal-mask buffers saved by old transformers versions
        ignore=(r"(^|\.)h\.\d+\.(attn|crossattention)\.(bias|masked_bias)$",))


def load(hf_config: dict, store: TensorStore, *, with_head: bool | None = None,
         **overrides: Any) -> tuple[Any, dict]:
    """Builds a GPTLMHeadModel (or GPTModel) and its params from a GPT-2 checkpoint.

    ``with_head``: None picks from the file (``transformer.`` prefix or an
    ``*LMHeadModel`` architecture -> LM); ``overrides`` replace config fields
    that do not change the weights (``scan_layers``, ``dtype``, ``remat_policy``...).
    """
    cfg = config_from_hf(hf_config, **overrides)
    return load_causal_lm(FORMAT, hf_config, store, cfg, tensor_table(cfg), with_head)


def save(model: Any, params: dict) -> tuple[dict, dict]:
    """GPTLMHeadModel/GPTModel -> (``GPT2Config`` dict, tensors)."""
    problems = gpt2_incompatibilities(model.config)
    if problems:
        raise ConversionError("This GPT model cannot be exported as GPT-2: " + "; ".join(problems))
    tensors, arch = save_causal_lm(FORMAT, model, params, tensor_table(model.config))
    return dict(config_to_hf(model.config), architectures=[arch]), tensors


def _handles(model: Any) -> bool:
    return isinstance(model, GPTModel | GPTLMHeadModel) and not gpt2_incompatibilities(
        model.config)


CONVERTER = register_converter(Converter(("gpt2",), load, save, _handles))
