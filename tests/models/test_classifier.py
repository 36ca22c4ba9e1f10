"""Multimodal classifier over modality subsets and fusion kinds, its logit-level
late fusion, padding invariance, the image-text matching head, and clear errors
for missing modalities and bad inputs."""

import jax
import numpy as np
import pytest

from jaxmm.config import ConfigError
from jaxmm.losses import itm_loss
from jaxmm.models import build
from jaxmm.models.itm import itm_pairs
from tests.mm_params import random_params

FUSION = dict(d_model=32, num_heads=4, mlp_dim=64, max_positions=64, num_layers=1)
CASES = {
    # sentiment-style: text + image + log-mel audio, early fusion
    "text_image_audio_early": dict(
        fusion=dict(FUSION, kind="early", modalities=("text", "image", "audio")),
        encoders=dict(text=dict(width=16, vocab_size=100), audio=dict(width=24))),
    # late fusion of per-modality decisions, attention pooling over modalities
    "text_video_late_logits": dict(
        fusion=dict(FUSION, kind="late", modalities=("text", "video"), combine="attention"),
        head="modality_logits", num_labels=3,
        encoders=dict(text=dict(vocab_size=100), video=dict(patch_size=8, tubelet_frames=2))),
    # MBT bottleneck fusion over image and raw waveform
    "image_waveform_bottleneck": dict(
        fusion=dict(FUSION, kind="hybrid", fusion_layer=0, num_bottleneck_tokens=2,
                    modalities=("image", "audio"), combine="gate"),
        encoders=dict(audio=dict(samples_per_token=200))),
    # text queries a registered ViT image encoder (cross-attention fusion)
    "text_vit_cross": dict(
        fusion=dict(FUSION, kind="cross_attention", cross_query="text",
                    modalities=("text", "image")), num_labels=4,
        encoders=dict(text=dict(vocab_size=100),
                      image=dict(encoder="vit", config={"size": "tiny", "num_layers": 1}))),
}


def _batch(rng, b=2):
    mask = np.array([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1]], np.int32)[:b]
    return dict(
        input_ids=np.where(mask == 1, rng.integers(1, 100, (b, 6)), 0).astype(np.int32),
        attention_mask=mask, image=rng.normal(size=(b, 32, 32, 3)).astype(np.float32),
        input_features=rng.normal(size=(b, 16, 24)).astype(np.float32),
        audio=rng.normal(size=(b, 1000)).astype(np.float32),
        video=rng.normal(size=(b, 4, 16, 16, 3)).astype(np.float32),
    )


@pytest.mark.parametrize("name", list(CASES))
def test_classifier_kinds_and_padding(name):
    rng = np.random.default_rng(0)
    model = build("multimodal_classifier", CASES[name])
    cfg = model.config
    batch = _batch(rng)
    audio = "audio" if name == "image_waveform_bottleneck" else "input_features"
    fields = {"text": ("input_ids", "attention_mask"), "image": ("image",), "audio": (audio,),
              "video": ("video",)}
    inputs = {k: batch[k] for m in cfg.modalities for k in fields[m]}
    params = random_params(model, **inputs)
    apply = jax.jit(lambda p, **kw: model.apply({"params": p}, **kw))
    out = apply(params, **inputs)
    assert out.logits.shape == (2, cfg.num_labels)
    assert np.isfinite(np.asarray(out.logits)).all()
    if cfg.head == "modality_logits":
        per = np.asarray(out.extra["modality_logits"])
        assert per.shape == (2, 2, 3)
        # attention pooling: a convex combination of the per-modality logits
        lo, hi = per.min(1), per.max(1)
        assert np.all(np.asarray(out.logits) >= lo - 1e-5)
        assert np.all(np.asarray(out.logits) <= hi + 1e-5)
    if "input_ids" in inputs:  # other ids at padded positions: same logits
        noisy = dict(inputs, input_ids=np.where(inputs["attention_mask"] == 1,
                                                inputs["input_ids"], 7).astype(np.int32))
        np.testing.assert_allclose(np.asarray(apply(params, **noisy).logits),
                                   np.asarray(out.logits), atol=1e-5)


def test_modality_logits_mean_is_the_average_of_per_modality_heads():
    rng = np.random.default_rng(1)
    cfg = dict(fusion=dict(FUSION, kind="late", modalities=("text", "image"), combine="mean"),
               head="modality_logits", num_labels=3, encoders=dict(text=dict(vocab_size=100)))
    model = build("multimodal_classifier", cfg)
    b = _batch(rng)
    inputs = dict(input_ids=b["input_ids"], attention_mask=b["attention_mask"], image=b["image"])
    variables = {"params": random_params(model, **inputs)}
    out = jax.jit(model.apply)(variables, **inputs)
    np.testing.assert_allclose(np.asarray(out.logits),
                               np.asarray(out.extra["modality_logits"]).mean(1), atol=1e-6)


def test_missing_modality_and_bad_inputs_are_named():
    rng = np.random.default_rng(2)
    model = build("multimodal_classifier", CASES["text_image_audio_early"])
    b = _batch(rng)
    good = dict(input_ids=b["input_ids"], attention_mask=b["attention_mask"], image=b["image"],
                input_features=b["input_features"])
    variables = jax.eval_shape(model.init, jax.random.key(0), **good)
    trace = lambda **kw: jax.eval_shape(model.apply, variables, **kw)  # noqa: E731
    no_audio = {k: v for k, v in good.items() if k != "input_features"}
    with pytest.raises(ValueError, match=r"Modality 'audio' is configured but missing from the "
                                         r"batch \('audio' needs input_features or audio\); the "
                                         r"batch has \['attention_mask', 'image', 'input_ids'\]"):
        trace(**no_audio)
    with pytest.raises(ValueError, match="3 channels last; got shape"):
        trace(**dict(good, image=np.zeros((2, 32, 32, 1), np.float32)))
    with pytest.raises(ValueError, match="not a multiple of the patch size"):
        trace(**dict(good, image=np.zeros((2, 30, 30, 3), np.float32)))
    with pytest.raises(ValueError, match="fewer than one token"):
        trace(**dict(good, input_features=np.zeros((2, 16, 2), np.float32)))
    bad = build("multimodal_classifier", dict(fusion=dict(FUSION, modalities=("text", "smell"))))
    with pytest.raises(ConfigError, match="'smell'"):
        jax.eval_shape(bad.init, jax.random.key(0), **good)
    with pytest.raises(ConfigError, match="head="):
        build("multimodal_classifier", dict(head="max"))


@pytest.mark.slow
def test_itm_head_and_pairs():
    rng = np.random.default_rng(3)
    model = build("itm", dict(fusion=dict(FUSION, kind="cross_attention", cross_query="text",
                                          modalities=("text", "image")),
                              encoders=dict(text=dict(vocab_size=100))))
    b = _batch(rng, 2)
    image = np.concatenate([b["image"], b["image"][::-1]])  # batch of 4
    ids = np.concatenate([b["input_ids"], b["input_ids"][::-1]])
    mask = np.concatenate([b["attention_mask"], b["attention_mask"][::-1]])
    sim = rng.normal(size=(4, 4)).astype(np.float32)
    pairs = itm_pairs(jax.random.key(0), image, ids, mask, sim)
    assert pairs["image"].shape[0] == 12 and pairs["is_match"].tolist() == [1] * 4 + [0] * 8
    np.testing.assert_array_equal(np.asarray(pairs["input_ids"][:4]), ids)
    # Each negative text comes from another row than its image; and vice versa.
    neg_t = np.asarray(pairs["input_ids"][4:8])
    neg_i = np.asarray(pairs["image"][8:])
    for i in range(4):
        assert any((neg_t[i] == ids[j]).all() for j in range(4) if j != i)
        assert any(np.allclose(neg_i[i], image[j]) for j in range(4) if j != i)
    variables = {"params": random_params(model, pairs["image"], pairs["input_ids"],
                                         pairs["attention_mask"])}
    logits = jax.jit(model.apply)(variables, pairs["image"], pairs["input_ids"],
                                  pairs["attention_mask"]).logits
    assert logits.shape == (12, 2)
    loss = float(itm_loss(logits, pairs["is_match"]))
    ref = -np.mean(np.asarray(jax.nn.log_softmax(logits))[np.arange(12),
                                                          np.asarray(pairs["is_match"])])
    assert loss == pytest.approx(ref, rel=1e-5)


def test_trainer_classification_task_feeds_every_modality():
    """`jaxmm train` with task.modality=multimodal passes all present fields."""
    from jaxmm.train import build_task, resolve_config

    config = resolve_config({"task": {"name": "classification", "modality": "multimodal"},
                             "model": {"name": "multimodal_classifier", "size": "tiny",
                                       "config": {"num_labels": 4}},
                             "data": {"name": "synthetic"}})
    task = build_task(config)
    batch = task.example_batch(4)
    assert {"image", "input_ids", "attention_mask", "label"} <= set(batch)
    variables = jax.eval_shape(task.init, jax.random.key(0), batch)
    out = jax.eval_shape(lambda v: task.loss(v, batch, train=False, rng=jax.random.key(1)),
                         variables)
    assert out.loss.shape == () and "accuracy" in out.metrics
