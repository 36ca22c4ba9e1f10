"""Hugging Face ``vision-encoder-decoder`` <-> jaxmm ``ImageCaptioner``.

Supported pairs: a ``vit`` encoder and a ``gpt2`` decoder (with
``add_cross_attention``). The tensors of each side are mapped by the ViT and
GPT-2 converters (``encoder.`` and ``decoder.transformer.`` prefixes);
``enc_to_dec_proj`` is a plain ``nn.Linear``. GPT-2's LM head is tied to its
token embedding and is not stored.
"""

from __future__ import annotations

from typing import Any

from jaxmm.convert import ConversionError, Converter, TensorStore, register_converter
from jaxmm.convert import gpt2 as gpt2_convert
from jaxmm.convert import vit as vit_convert
from jaxmm.convert.layers import dense
from jaxmm.convert.rules import Table, Tied, params_from_hf, params_to_hf
from jaxmm.models.captioner import CaptionerConfig, ImageCaptioner
from jaxmm.models.gpt import GPTConfig
from jaxmm.models.vit import ViTConfig

__all__ = ["config_from_hf", "config_to_hf", "tensor_table"]

_ENCODERS = ("vit",)
_DECODERS = ("gpt2",)


def _check_pair(hf: dict) -> tuple[dict, dict]:
    enc, dec = hf.get("encoder") or {}, hf.get("decoder") or {}
    et, dt = enc.get("model_type"), dec.get("model_type")
    if et not in _ENCODERS or dt not in _DECODERS:
        raise ConversionError(
            f"vision-encoder-decoder with encoder {et!r} and decoder {dt!r} is not supported; "
            f"jaxmm converts encoders {_ENCODERS} with decoders {_DECODERS}."
        )
    if dec.get("cross_attention_hidden_size") not in (None, enc.get("hidden_size")):
        raise ConversionError("decoder.cross_attention_hidden_size different from the encoder "
                              "width is not supported.")
    return enc, dec


def config_from_hf(hf: dict, *, use_pooler: bool = True, **overrides: Any) -> CaptionerConfig:
    """VED ``config.json`` -> :class:`CaptionerConfig`; ``overrides`` (e.g.
    ``scan_layers=True``) apply to both encoder and decoder."""
    enc, dec = _check_pair(hf)
    encoder = vit_convert.config_from_hf(enc, use_pooler=use_pooler, **overrides)
    decoder = gpt2_convert.config_from_hf(dec, **overrides).replace(add_cross_attention=True)
    projection = (enc.get("hidden_size") != dec.get("n_embd", 768)
                  and dec.get("cross_attention_hidden_size") is None)
    return CaptionerConfig(
        encoder="vit", encoder_config=encoder, decoder=decoder, encoder_projection=projection,
        decoder_start_token_id=hf.get("decoder_start_token_id", decoder.bos_token_id),
        pad_token_id=hf.get("pad_token_id", decoder.pad_token_id),
    )


def config_to_hf(cfg: CaptionerConfig) -> dict:
    if not isinstance(cfg.encoder_config, ViTConfig):
        raise ConversionError(
            f"Only a ViT encoder exports as a Hugging Face vision-encoder-decoder; this "
            f"captioner's encoder is {cfg.encoder!r}."
        )
    problems = gpt2_convert.gpt2_incompatibilities(cfg.decoder)
    if problems:
        raise ConversionError("The captioner's decoder cannot be exported as GPT-2: "
                              + "; ".join(problems))
    if cfg.uses_projection != (cfg.encoder_config.d_model != cfg.decoder.d_model):
        raise ConversionError(
            "Hugging Face adds enc_to_dec_proj exactly when the encoder and decoder widths "
            f"differ; this captioner has encoder_projection={cfg.encoder_projection} with widths "
            f"{cfg.encoder_config.d_model} and {cfg.decoder.d_model}."
        )
    encoder = vit_convert.config_to_hf(cfg.encoder_config, classifier=False)
    decoder = dict(gpt2_convert.config_to_hf(cfg.decoder), add_cross_attention=True,
                   is_decoder=True, architectures=["GPT2LMHeadModel"])
    return dict(model_type="vision-encoder-decoder", architectures=["VisionEncoderDecoderModel"],
                encoder=encoder, decoder=decoder, is_encoder_decoder=True,
                decoder_start_token_id=cfg.decoder_start_token_id,
                pad_token_id=cfg.pad_token_id, tie_word_embeddings=False)


def tensor_table(cfg: CaptionerConfig) -> Table:
    """``encoder.`` (ViT) + ``decoder.transformer.`` (GPT-2) + ``enc_to_dec_proj``
    tensors <-> :class:`ImageCaptioner` params (``encoder``, ``decoder/model``)."""
    if not cfg.decoder.tie_word_embeddings:
        raise ConversionError("An untied GPT-2 LM head inside a vision-encoder-decoder is not "
                              "supported.")
    return Table.of(
        vit_convert.tensor_table(cfg.encoder_config).under("encoder.", "encoder/"),
        gpt2_convert.tensor_table(cfg.decoder).under("decoder.transformer.", "decoder/model/"),
        Tied("decoder.lm_head.weight", "decoder/model/token_embedding/embedding",
             why="the GPT-2 LM head is tied to the token embedding."),
        dense("enc_to_dec_proj", "enc_to_dec_proj") if cfg.uses_projection else [])


def _load(hf_config: dict, store: TensorStore, **options) -> tuple[Any, Any]:
    options.setdefault("use_pooler", "encoder.pooler.dense.weight" in store)
    cfg = config_from_hf(hf_config, **options)
    return ImageCaptioner(cfg), params_from_hf(tensor_table(cfg), store)


def _save(model: Any, params: Any) -> tuple[dict, dict]:
    cfg = model.config
    return config_to_hf(cfg), params_to_hf(tensor_table(cfg), params)


def _handles(model: Any) -> bool:
    return (isinstance(model, ImageCaptioner)
            and isinstance(model.config.encoder_config, ViTConfig)
            and isinstance(model.config.decoder, GPTConfig))


register_converter(Converter(model_types=("vision-encoder-decoder",), load=_load, save=_save,
                             handles=_handles))
