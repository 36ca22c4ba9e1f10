"""Hugging Face ``whisper`` <-> jaxmm Whisper (``WhisperModel``,
``WhisperForConditionalGeneration``).

HF ``k_proj`` layers have no bias; jaxmm's attention has one. Import fills it
with zeros, export drops it. Both are exact: a key bias adds ``q . b`` to every
logit of a query row, which softmax ignores. ``proj_out`` is tied to the token
embedding (not stored by HF); an untied checkpoint is refused by name.
"""

from __future__ import annotations

from typing import Any

from jaxmm.convert import ConversionError, Converter, TensorStore, fields, register_converter
from jaxmm.convert.layers import LayerNames, conv, norm, qkvo, transformer_layer
from jaxmm.convert.rules import Rule, Table, Tied, params_from_hf, params_to_hf, stack
from jaxmm.models.whisper import WhisperConfig, WhisperForConditionalGeneration, WhisperModel

__all__ = ["config_from_hf", "config_to_hf", "tensor_table"]

_FIELDS = fields.FieldMap(
    ("vocab_size", "vocab_size"), ("num_mel_bins", "num_mel_bins"),
    ("num_layers", "encoder_layers"), ("num_decoder_layers", "decoder_layers"),
    ("d_model", "d_model"), ("num_heads", "encoder_attention_heads"),
    ("num_decoder_heads", "decoder_attention_heads"), ("mlp_dim", "encoder_ffn_dim"),
    ("decoder_mlp_dim", "decoder_ffn_dim"), ("activation", "activation_function"),
    ("dropout_rate", "dropout"), ("attention_dropout_rate", "attention_dropout"),
    ("max_source_positions", "max_source_positions"),
    ("max_target_positions", "max_target_positions"), ("pad_token_id", "pad_token_id"),
    ("bos_token_id", "bos_token_id"), ("eos_token_id", "eos_token_id"),
    ("decoder_start_token_id", "decoder_start_token_id"),
)


def config_from_hf(hf: dict[str, Any], **overrides) -> WhisperConfig:
    values = _FIELDS.from_hf(hf)
    values.update(overrides)
    return WhisperConfig.from_dict(values)


def config_to_hf(cfg: WhisperConfig, lm_head: bool) -> dict[str, Any]:
    out = _FIELDS.to_hf(cfg)
    out["decoder_attention_heads"] = cfg.num_decoder_heads or cfg.num_heads
    out["decoder_ffn_dim"] = cfg.decoder_mlp_dim or cfg.mlp_dim
    out.update(model_type="whisper", is_encoder_decoder=True, tie_word_embeddings=True,
               scale_embedding=False, activation_dropout=0.0,
               architectures=["WhisperForConditionalGeneration" if lm_head else "WhisperModel"])
    return out


def _side(cfg: WhisperConfig, p: str, decoder: bool) -> list[Rule]:
    """The layers and final norm of the encoder or decoder (``p``: the file's prefix)."""
    side = "decoder" if decoder else "encoder"
    heads = (cfg.num_decoder_heads or cfg.num_heads) if decoder else cfg.num_heads
    names = LayerNames(
        attention_norm="self_attn_layer_norm",
        self_attention=qkvo("self_attn.", "q_proj", "k_proj", "v_proj", "out_proj"),
        mlp_norm="final_layer_norm", mlp={"wi": "fc1", "wo": "fc2"},
        cross_attention_norm="encoder_attn_layer_norm" if decoder else None,
        cross_attention=qkvo("encoder_attn.", "q_proj", "k_proj", "v_proj", "out_proj")
        if decoder else None)
    # HF's k_proj has no bias; jaxmm's key has one (zeros; exact under softmax).
    no_key_bias = (heads, cfg.d_model // heads)
    zero_bias = {"self_attention/key": no_key_bias, "cross_attention/key": no_key_bias}
    path = "decoder/stack" if decoder else "encoder/encoder"
    return [*stack(f"{p}{side}.layers.{{i}}.", path,
                   cfg.num_decoder_layers if decoder else cfg.num_layers, cfg.scan_layers,
                   transformer_layer(names, heads, zero_bias=zero_bias)),
            *norm(f"{p}{side}.layer_norm", f"{path}/final_norm")]


def tensor_table(cfg: WhisperConfig, p: str = "") -> Table:
    """Whisper tensors (``{p}encoder...``, ``{p}decoder...``) <-> WhisperModel params.

    ``proj_out`` (the LM head) is tied to the token embedding: absent or equal.
    """
    return Table.of(
        conv(f"{p}encoder.conv1", "encoder/conv1"), conv(f"{p}encoder.conv2", "encoder/conv2"),
        Rule(f"{p}encoder.embed_positions.weight", "encoder/position_embedding"),
        _side(cfg, p, decoder=False),
        Rule(f"{p}decoder.embed_tokens.weight", "decoder/embed_tokens/embedding"),
        Rule(f"{p}decoder.embed_positions.weight", "decoder/position_embedding"),
        _side(cfg, p, decoder=True),
        Tied("proj_out.weight", "decoder/embed_tokens/embedding", why="jaxmm Whisper ties "
             "the output projection to the token embedding."))


def _load(hf_config: dict, store: TensorStore, **options) -> tuple[Any, Any]:
    cfg = config_from_hf(hf_config, **options)
    with_prefix = "model.encoder.conv1.weight" in store
    lm_head = with_prefix or "WhisperForConditionalGeneration" in (
        hf_config.get("architectures") or [])
    if any(k.startswith(("classifier", "projector")) for k in store.keys()):
        raise ConversionError(
            "This is a WhisperForAudioClassification checkpoint; jaxmm imports WhisperModel and "
            "WhisperForConditionalGeneration. Use the encoder part with a jaxmm classifier head."
        )
    params = params_from_hf(tensor_table(cfg, "model." if with_prefix else ""), store)
    model = WhisperForConditionalGeneration(cfg) if lm_head else WhisperModel(cfg)
    return model, params


def _save(model: Any, params: Any) -> tuple[dict, dict]:
    lm_head = isinstance(model, WhisperForConditionalGeneration)
    tensors = params_to_hf(tensor_table(model.config, "model." if lm_head else ""), params)
    return config_to_hf(model.config, lm_head), tensors


register_converter(Converter(
    model_types=("whisper",), load=_load, save=_save,
    handles=lambda m: isinstance(m, WhisperModel | WhisperForConditionalGeneration),
))
