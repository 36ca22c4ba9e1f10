"""Parity with Hugging Face transformers (same weights) and export round trips for
CLIP (clip, clip_text_model, clip_vision_model) and VisionEncoderDecoder."""

import jax
import numpy as np
import pytest

from jaxmm.convert import ConversionError, from_hf, supported_model_types, to_hf
from jaxmm.models import build
from tests.mm_params import random_params

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

TEXT = dict(vocab_size=99, hidden_size=32, intermediate_size=37, num_hidden_layers=2,
            num_attention_heads=4, max_position_embeddings=16, pad_token_id=0,
            bos_token_id=97, eos_token_id=98)
VISION = dict(hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
              image_size=32, patch_size=8)


def _text_batch(rng, eos=98):
    """Right-padded ids with EOS inside; EOS is not always the largest id."""
    ids = rng.integers(3, 96, size=(3, 10))
    mask = np.ones((3, 10), np.int64)
    for i, end in enumerate([6, 9, 4]):
        ids[i, end] = eos
        ids[i, end + 1:] = 0
        mask[i, end + 1:] = 0
    ids[1, 2] = 98 if eos == 2 else ids[1, 2]  # legacy rule pools the largest id
    return ids, mask


def _nchw(x):
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))


def _close(a, b, atol=1e-4):
    np.testing.assert_allclose(np.asarray(a), b.detach().numpy(), atol=atol, rtol=0)


def test_registered_types():
    assert {"clip", "clip_text_model", "clip_vision_model",
            "vision-encoder-decoder"} <= set(supported_model_types())


def test_clip_matches_transformers(tmp_path):
    rng = np.random.default_rng(0)
    torch.manual_seed(0)
    cfg = transformers.CLIPConfig(text_config=TEXT, vision_config=VISION, projection_dim=24)
    hf = transformers.CLIPModel(cfg).eval()
    with torch.no_grad():  # non-default scale, so a missed logit_scale shows
        hf.logit_scale.fill_(1.7)
    hf.save_pretrained(tmp_path)
    conv = from_hf(str(tmp_path))
    ids, mask = _text_batch(rng)
    image = rng.normal(size=(2, 32, 32, 3)).astype(np.float32)
    big = rng.normal(size=(2, 40, 40, 3)).astype(np.float32)
    model = conv.model

    @jax.jit
    def run(p):
        return (model.apply({"params": p}, ids, image, mask),
                model.apply({"params": p}, big, method="encode_image", normalize=False,
                            interpolate_pos_encoding=True))

    ours, big_emb = run(conv.params)
    with torch.no_grad():
        ref = hf(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask),
                 pixel_values=_nchw(image))
        ref_tower = hf.vision_model(pixel_values=_nchw(image))
        ref_big = hf.get_image_features(pixel_values=_nchw(big), interpolate_pos_encoding=True)
    for name in ("logits_per_image", "logits_per_text", "text_embeds", "image_embeds"):
        _close(getattr(ours, name), getattr(ref, name))
    # (HF v5 overwrites vision_model_output.pooler_output with the projection; compare
    # the tower itself.)
    _close(ours.vision_model_output.last_hidden_state, ref_tower.last_hidden_state)
    _close(ours.vision_model_output.pooler_output, ref_tower.pooler_output)
    valid = mask.astype(bool)  # padded rows are not comparable (HF leaves them unmasked)
    np.testing.assert_allclose(
        np.asarray(ours.text_model_output.last_hidden_state)[valid],
        ref.text_model_output.last_hidden_state.numpy()[valid], atol=1e-4)
    _close(big_emb, getattr(ref_big, "pooler_output", ref_big))


@pytest.mark.parametrize("kind", ["text", "text_projection", "vision", "vision_projection"])
def test_clip_towers_load_and_export(tmp_path, kind):
    """HF tower folders load into the right jaxmm class; export re-loads in HF."""
    rng = np.random.default_rng(1)
    torch.manual_seed(1)
    text = kind.startswith("text")
    hf_cls = {
        "text": transformers.CLIPTextModel,
        "text_projection": transformers.CLIPTextModelWithProjection,
        "vision": transformers.CLIPVisionModel,
        "vision_projection": transformers.CLIPVisionModelWithProjection,
    }[kind]
    # The legacy EOS rule (eos_token_id == 2: pool at the largest id) for plain text.
    tcfg = dict(TEXT, eos_token_id=2, projection_dim=20) if kind == "text" else dict(
        TEXT, projection_dim=20)
    hf_cfg = (transformers.CLIPTextConfig(**tcfg) if text
              else transformers.CLIPVisionConfig(**VISION, projection_dim=20))
    hf = hf_cls(hf_cfg).eval()
    hf.save_pretrained(tmp_path / "hf")
    conv = from_hf(str(tmp_path / "hf"))
    assert type(conv.model).__name__ == hf_cls.__name__
    if text:
        ids, mask = _text_batch(rng, eos=2 if kind == "text" else 98)
        args, hf_args = (ids, mask), dict(input_ids=torch.tensor(ids),
                                          attention_mask=torch.tensor(mask))
    else:
        image = rng.normal(size=(2, 32, 32, 3)).astype(np.float32)
        args, hf_args = (image,), dict(pixel_values=_nchw(image))
    out_dir = to_hf(conv.model, conv.params, str(tmp_path / "export"))
    hf2 = hf_cls.from_pretrained(out_dir).eval()
    ours = jax.jit(lambda p: conv.model.apply({"params": p}, *args))(conv.params)
    with torch.no_grad():
        ref, ref2 = hf(**hf_args), hf2(**hf_args)
    field = {"text_projection": "text_embeds", "vision_projection": "image_embeds"}.get(
        kind, "pooler_output")
    _close(getattr(ours, field), getattr(ref, field))
    _close(getattr(ours, field), getattr(ref2, field))
    back = from_hf(out_dir)
    jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), np.asarray(b)),
                 conv.params, back.params)


def test_clip_export_round_trip_from_jaxmm_init(tmp_path):
    """A jaxmm-initialised CLIP (scan layers) exports to a folder transformers loads
    with identical outputs, and re-imports to the same tensors."""
    rng = np.random.default_rng(2)
    cfg = build("clip", "tiny").config
    model = build("clip", cfg.replace(text=cfg.text.replace(scan_layers=True)))
    ids, mask = _text_batch(rng, eos=127)
    ids = np.minimum(ids, 127)
    image = rng.normal(size=(2, 32, 32, 3)).astype(np.float32)
    params = random_params(model, ids, image, mask)
    out_dir = to_hf(model, params, str(tmp_path / "clip"))
    hf = transformers.CLIPModel.from_pretrained(out_dir).eval()
    ours = jax.jit(lambda p: model.apply({"params": p}, ids, image, mask))(params)
    with torch.no_grad():
        ref = hf(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask),
                 pixel_values=_nchw(image))
    _close(ours.logits_per_image, ref.logits_per_image)
    _close(ours.text_embeds, ref.text_embeds)
    back = from_hf(out_dir, scan_layers=True)
    assert back.model.config.text.scan_layers
    jax.tree.map(lambda a, b: np.testing.assert_allclose(np.asarray(a), np.asarray(b)),
                 params["text_model"], back.params["text_model"])


def test_clip_missing_tensor_is_named(tmp_path):
    from safetensors.numpy import load_file, save_file

    hf = transformers.CLIPModel(transformers.CLIPConfig(text_config=TEXT, vision_config=VISION))
    hf.save_pretrained(tmp_path)
    file = tmp_path / "model.safetensors"
    tensors = load_file(str(file))
    tensors.pop("logit_scale")
    save_file(tensors, str(file))
    with pytest.raises(ConversionError, match="missing tensors: logit_scale"):
        from_hf(str(tmp_path))


# ---------------------------------------------------------------------------
# VisionEncoderDecoder (ViT -> GPT-2)
# ---------------------------------------------------------------------------


def _ved(tmp_path, dec_width=24, init_range=0.02):
    enc = transformers.ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                 intermediate_size=37, image_size=32, patch_size=8)
    dec = transformers.GPT2Config(n_embd=dec_width, n_layer=2, n_head=4, vocab_size=50,
                                  n_positions=20, add_cross_attention=True, is_decoder=True,
                                  bos_token_id=1, eos_token_id=2, pad_token_id=0,
                                  initializer_range=init_range)
    cfg = transformers.VisionEncoderDecoderConfig.from_encoder_decoder_configs(enc, dec)
    cfg.decoder_start_token_id, cfg.pad_token_id = 1, 0
    torch.manual_seed(0)
    transformers.VisionEncoderDecoderModel(config=cfg).save_pretrained(tmp_path)
    return transformers.VisionEncoderDecoderModel.from_pretrained(
        tmp_path, attn_implementation="eager").eval()


@pytest.mark.parametrize("dec_width", [24, 32])  # with / without enc_to_dec_proj
def test_vision_encoder_decoder_matches_transformers(tmp_path, dec_width):
    hf = _ved(tmp_path / "hf", dec_width)
    conv = from_hf(str(tmp_path / "hf"))
    assert conv.model.config.uses_projection == (dec_width != 32)
    rng = np.random.default_rng(3)
    image = rng.normal(size=(2, 32, 32, 3)).astype(np.float32)
    labels = rng.integers(3, 50, size=(2, 7))
    labels[0, 5:] = -100  # padded target
    dmask = (labels != -100).astype(np.int64)
    ours = jax.jit(lambda p: conv.model.apply({"params": p}, image, labels=labels,
                                              decoder_attention_mask=dmask,
                                              output_attentions=True))(conv.params)
    with torch.no_grad():
        ref = hf(pixel_values=_nchw(image), labels=torch.tensor(labels),
                 decoder_attention_mask=torch.tensor(dmask), output_attentions=True)
    valid = dmask.astype(bool)
    np.testing.assert_allclose(np.asarray(ours.logits)[valid], ref.logits.numpy()[valid],
                               atol=1e-4)
    _close(ours.encoder_last_hidden_state, ref.encoder_last_hidden_state)
    for a, b in zip(ours.cross_attentions, ref.cross_attentions):
        np.testing.assert_allclose(np.asarray(a)[:, :, :5], b.numpy()[:, :, :5], atol=1e-5)
    # Export: transformers loads it and gives the same logits; re-import is exact.
    out_dir = to_hf(conv.model, conv.params, str(tmp_path / "export"))
    hf2 = transformers.VisionEncoderDecoderModel.from_pretrained(out_dir).eval()
    with torch.no_grad():
        ref2 = hf2(pixel_values=_nchw(image), labels=torch.tensor(labels),
                   decoder_attention_mask=torch.tensor(dmask))
    np.testing.assert_allclose(ref2.logits.numpy()[valid], ref.logits.numpy()[valid], atol=1e-5)
    back = from_hf(out_dir)
    jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), np.asarray(b)),
                 conv.params, back.params)


def test_vision_encoder_decoder_generate_matches_transformers(tmp_path):
    from jaxmm import generate

    hf = _ved(tmp_path, init_range=0.5)  # large weights: varied greedy tokens
    conv = from_hf(str(tmp_path))
    image = np.random.default_rng(4).normal(size=(2, 32, 32, 3)).astype(np.float32)
    ours = generate(conv.model, conv.params, encoder_inputs={"image": image}, max_new_tokens=6)
    with torch.no_grad():
        ref = hf.generate(pixel_values=_nchw(image), max_new_tokens=6, do_sample=False)
    np.testing.assert_array_equal(np.asarray(ours.sequences), ref.numpy())
    assert len(set(ref.numpy()[:, 1:].ravel().tolist())) > 2


def test_vision_encoder_decoder_refuses_unsupported_pairs(tmp_path):
    import json

    _ved(tmp_path)
    cfg = json.load(open(tmp_path / "config.json"))
    cfg["decoder"]["model_type"] = "bert"
    json.dump(cfg, open(tmp_path / "config.json", "w"))
    with pytest.raises(ConversionError, match="decoder 'bert' is not supported"):
        from_hf(str(tmp_path))
