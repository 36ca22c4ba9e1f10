"""CLIP and the generic dual encoder: output formulas, EOS pooling, padding,
zero-shot helpers, and clear errors for bad inputs."""

import jax
import numpy as np
import pytest

from jaxmm.config import ConfigError
from jaxmm.models import build
from jaxmm.models.clip import CLIPModel, eos_positions
from jaxmm.models.dual_encoder import DualEncoder, DualEncoderConfig
from jaxmm.models.zero_shot import zero_shot_classifier, zero_shot_logits
from tests.mm_params import random_params

EOS, PAD = 127, 0


def _text(rng, batch=3, length=8):
    ids = rng.integers(3, 100, size=(batch, length)).astype(np.int32)
    mask = np.ones((batch, length), np.int32)
    ends = [4, 7, 2][:batch]
    for i, e in enumerate(ends):
        ids[i, e] = EOS
        ids[i, e + 1:] = PAD
        mask[i, e + 1:] = 0
    return ids, mask


@pytest.fixture(scope="module")
def clip_setup():
    rng = np.random.default_rng(0)
    model = build("clip", "tiny")
    ids, mask = _text(rng)
    image = rng.normal(size=(2, 32, 32, 3)).astype(np.float32)
    params = random_params(model, ids, image, mask)
    params["logit_scale"] = np.float32(2.6592)
    return model, params, ids, mask, image


def test_clip_outputs_follow_the_formulas(clip_setup):
    model, params, ids, mask, image = clip_setup
    ids2 = np.where(mask == 1, ids, 55)  # other values at padded positions

    @jax.jit
    def run(p):
        apply = lambda *a, **k: model.apply({"params": p}, *a, **k)  # noqa: E731
        return (apply(ids, image, mask), apply(ids2, image, mask).text_embeds,
                apply(image, method="encode_image", normalize=False),
                apply(ids, mask, method="encode_text"))

    out, txt2, enc_img, enc_txt = run(params)
    assert out.logits_per_image.shape == (2, 3) and out.logits_per_text.shape == (3, 2)
    img, txt = np.asarray(out.image_embeds), np.asarray(out.text_embeds)
    np.testing.assert_allclose(np.linalg.norm(img, axis=-1), 1.0, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(txt, axis=-1), 1.0, atol=1e-5)
    scale = np.exp(float(params["logit_scale"]))
    np.testing.assert_allclose(np.asarray(out.logits_per_image), scale * img @ txt.T, atol=1e-5)
    np.testing.assert_allclose(np.asarray(out.logits_per_text), np.asarray(out.logits_per_image).T)
    assert float(out.logit_scale) == pytest.approx(2.6592, abs=1e-6)

    # Text pooled at the EOS token: equals the final hidden state there, projected.
    hidden = np.asarray(out.text_model_output.last_hidden_state)
    pooled = hidden[np.arange(3), [4, 7, 2]]
    proj = pooled @ np.asarray(params["text_projection"]["kernel"])
    np.testing.assert_allclose(txt, proj / np.linalg.norm(proj, axis=-1, keepdims=True),
                               atol=1e-5)
    # Vision pooled = post_layernorm(class token), projected.
    vis = out.vision_model_output
    ref = np.asarray(vis.pooler_output) @ np.asarray(params["visual_projection"]["kernel"])
    np.testing.assert_allclose(np.asarray(enc_img), ref, atol=1e-5)
    np.testing.assert_allclose(np.asarray(enc_txt), txt, atol=1e-5)
    # Padding after EOS does not change the text embedding (causal + padding mask).
    np.testing.assert_allclose(np.asarray(txt2), txt, atol=1e-5)


def test_eos_position_rules():
    ids = np.array([[5, 9, 127, 0, 127], [127, 3, 4, 0, 0], [4, 8, 3, 2, 0]])
    np.testing.assert_array_equal(np.asarray(eos_positions(ids, 127)), [2, 0, 0])
    # Legacy configs (eos_token_id == 2): position of the largest id.
    np.testing.assert_array_equal(np.asarray(eos_positions(ids, 2)), np.argmax(ids, 1))


def test_zero_shot_helpers_match_manual_recipe(clip_setup):
    model, params, *_, image = clip_setup
    vocab = {}

    def tokenize(texts):
        rows = [[vocab.setdefault(w, 3 + len(vocab)) for w in t.split()] + [EOS] for t in texts]
        length = max(map(len, rows))
        out = np.zeros((len(rows), length), np.int32)
        m = np.zeros_like(out)
        for i, r in enumerate(rows):
            out[i, :len(r)], m[i, :len(r)] = r, 1
        return {"input_ids": out, "attention_mask": m}

    names, templates = ["cat", "dog", "red car"], ("a photo of a {}.", "a {} drawing")
    cls = zero_shot_classifier(model, params, tokenize, names, templates)
    assert cls.shape == (3, 32)
    # Reference: every prompt separately, unbatched, in NumPy.
    enc = tokenize([t.format(n) for n in names for t in templates])
    apply = jax.jit(lambda p, i, m, x: (
        model.apply({"params": p}, i, m, method="encode_text"),
        model.apply({"params": p}, x, method="encode_image")))
    e, img = (np.asarray(a) for a in apply(params, enc["input_ids"], enc["attention_mask"],
                                             image))
    ref = e.reshape(3, 2, -1).mean(1)
    np.testing.assert_allclose(cls, ref / np.linalg.norm(ref, axis=-1, keepdims=True), atol=1e-5)
    logits = zero_shot_logits(model, params, image, cls)
    np.testing.assert_allclose(logits, np.exp(float(params["logit_scale"])) * img @ cls.T,
                               atol=1e-4)
    with pytest.raises(ValueError, match="exactly one"):
        zero_shot_classifier(model, params, tokenize, names, ("no slot",))


def test_clip_bad_inputs_are_named(clip_setup):
    model, params, ids, mask, image = clip_setup
    # Errors are raised while tracing: check them with eval_shape (nothing is computed).
    shape = lambda *a, **k: jax.eval_shape(  # noqa: E731
        lambda p: model.apply({"params": p}, *a, **k), params)
    apply = lambda i, x: shape(i, x)  # noqa: E731
    with pytest.raises(ValueError, match="does not match the model's 32x32.*interpolate"):
        apply(ids, np.zeros((1, 48, 48, 3), np.float32))
    with pytest.raises(ValueError, match="expects 3 channels.*got 1"):
        apply(ids, np.zeros((1, 32, 32, 1), np.float32))
    with pytest.raises(ValueError, match="NCHW"):
        apply(ids, np.zeros((1, 3, 32, 32), np.float32))
    with pytest.raises(ValueError, match="max_position_embeddings"):
        apply(np.zeros((1, 20), np.int32), image)
    with pytest.raises(ValueError, match="attention_mask must be"):
        shape(ids, image, mask[:, :3])
    # Other resolutions work with interpolated positions.
    out = shape(ids, np.zeros((1, 48, 48, 3), np.float32), interpolate_pos_encoding=True)
    assert out.logits_per_image.shape == (1, 3)


def test_generic_dual_encoder_from_registered_towers(rng):
    cfg = DualEncoderConfig(
        image_encoder="vit", image_encoder_config={"size": "tiny", "num_layers": 1},
        text_encoder="clip_text", text_encoder_config="tiny", text_pool="last",
        projection_dim=16, logit_bias_init_value=-10.0,
    )
    model = build("dual_encoder", cfg)
    assert isinstance(model, DualEncoder) and cfg.image_encoder_config.num_layers == 1
    ids, mask = _text(rng)
    image = rng.normal(size=(2, 32, 32, 3)).astype(np.float32)
    params = random_params(model, ids, image, mask)
    assert set(params) >= {"logit_scale", "logit_bias", "image_model", "text_model"}
    out, enc = jax.jit(lambda p: (
        model.apply({"params": p}, ids, image, mask),
        model.apply({"params": p}, image, method="encode_image", normalize=False)))(params)
    assert out.image_embeds.shape == (2, 16) and out.text_embeds.shape == (3, 16)
    img, txt = np.asarray(out.image_embeds), np.asarray(out.text_embeds)
    scale, bias = np.exp(float(params["logit_scale"])), float(params["logit_bias"])
    np.testing.assert_allclose(np.asarray(out.logits_per_image), scale * img @ txt.T + bias,
                               atol=1e-5)
    # text_pool="last": the last real token's hidden state, projected.
    hidden = np.asarray(out.text_model_output.last_hidden_state)
    last = hidden[np.arange(3), mask.sum(1) - 1] @ np.asarray(params["text_projection"]["kernel"])
    np.testing.assert_allclose(txt, last / np.linalg.norm(last, axis=-1, keepdims=True),
                               atol=1e-5)
    # ViT pooler output, projected.
    ref = np.asarray(out.vision_model_output.pooler_output) @ np.asarray(
        params["visual_projection"]["kernel"])
    np.testing.assert_allclose(np.asarray(enc), ref, atol=1e-5)
    with pytest.raises(ConfigError, match="text_pool"):
        DualEncoderConfig(text_pool="max")
    with pytest.raises(ConfigError, match="Unknown model 'vitt'.*Did you mean 'vit'"):
        DualEncoderConfig(image_encoder="vitt")
    assert isinstance(build("clip", "tiny"), CLIPModel)


@pytest.mark.parametrize("image_encoder,text_encoder,text_pool", [
    ("vit", "bert", "pooler"), ("resnet", "gpt_model", "last"), ("clip_vision", "bert", "cls"),
])
def test_dual_encoder_accepts_other_registered_towers(rng, image_encoder, text_encoder,
                                                      text_pool):
    cfg = DualEncoderConfig(image_encoder=image_encoder, image_encoder_config="tiny",
                            text_encoder=text_encoder, text_encoder_config="tiny",
                            text_pool=text_pool, projection_dim=16)
    model = build("dual_encoder", cfg)
    ids, mask = _text(rng)
    image = rng.normal(size=(2, 32, 32, 3)).astype(np.float32)
    out, _ = jax.eval_shape(lambda: model.init_with_output(jax.random.key(0), ids, image, mask))
    assert out.logits_per_image.shape == (2, 3)
    assert out.image_embeds.shape == (2, 16) and out.text_embeds.shape == (3, 16)
