"""VQA: the answer classifier and the generative variant (fused-token padding is
masked for the decoder; generate_answers == a manual greedy loop)."""

import jax
import numpy as np
import pytest

from jaxmm.config import ConfigError
from jaxmm.generation import generate_answers
from jaxmm.models import build
from tests.mm_params import random_params

FUSION = dict(kind="early", modalities=("image", "text"), num_layers=1, d_model=32,
              num_heads=4, mlp_dim=64, max_positions=32)
DECODER = dict(vocab_size=30, max_position_embeddings=16, num_layers=1, d_model=24, num_heads=4,
               mlp_dim=48, bos_token_id=1, eos_token_id=2, pad_token_id=0)


def _inputs(rng):
    mask = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], np.int32)
    ids = np.where(mask == 1, rng.integers(3, 30, (2, 5)), 0).astype(np.int32)
    return rng.normal(size=(2, 32, 32, 3)).astype(np.float32), ids, mask


def test_vqa_classifier_shapes_and_padding():
    rng = np.random.default_rng(0)
    model = build("vqa", dict(fusion=FUSION, num_answers=7, encoders=dict(text=dict(
        vocab_size=30))))
    image, ids, mask = _inputs(rng)
    params = random_params(model, image, ids, mask)
    assert model.config.num_labels == 7
    run = jax.jit(lambda p, i: model.apply({"params": p}, image, i, mask).logits)
    logits = np.asarray(run(params, ids))
    assert logits.shape == (2, 7)
    np.testing.assert_allclose(np.asarray(run(params, np.where(mask == 1, ids, 9))), logits,
                               atol=1e-5)


@pytest.mark.slow
def test_generative_vqa_masks_padding_and_generates_like_a_greedy_loop():
    rng = np.random.default_rng(1)
    model = build("vqa", dict(mode="generate", fusion=FUSION, decoder=DECODER,
                              encoders=dict(text=dict(vocab_size=30))))
    cfg = model.config
    assert cfg.uses_projection and cfg.decoder.add_cross_attention  # 32 -> 24
    image, ids, mask = _inputs(rng)
    labels = np.array([[5, 6, 2, -100], [7, 2, -100, -100]], np.int32)
    params = random_params(model, image, ids, mask, labels=labels, std=0.3)

    @jax.jit
    def run(p, question):
        out = model.apply({"params": p}, image, question, mask, labels=labels)
        enc = model.apply({"params": p}, image, question, mask, method="encode")
        return out.logits, enc.attention_mask

    logits, enc_mask = run(params, ids)
    assert logits.shape == (2, 4, 30)
    # fused tokens: image CLS + 16 patches, text CLS + 5 tokens; padding masked
    np.testing.assert_array_equal(np.asarray(enc_mask)[:, 17:], np.concatenate(
        [np.ones((2, 1), np.int32), mask], 1))
    # Other ids at padded question positions: identical answer logits.
    logits2, _ = run(params, np.where(mask == 1, ids, 11).astype(np.int32))
    np.testing.assert_allclose(np.asarray(logits2), np.asarray(logits), atol=1e-5)

    seq = generate_answers(model, params, image, ids, mask, max_new_tokens=4)
    assert seq[:, 0].tolist() == [1, 1]
    # Reference: full teacher-forced recomputation for every new token.
    fwd = jax.jit(lambda p, d: model.apply({"params": p}, image, ids, mask, d).logits)
    ref = np.zeros((2, seq.shape[1]), np.int32)
    ref[:, 0] = 1
    for t in range(seq.shape[1] - 1):
        ref[:, t + 1] = np.asarray(fwd(params, ref))[:, t].argmax(-1)
    done = np.cumsum(ref == 2, axis=1) > 0
    after = np.concatenate([np.zeros((2, 1), bool), done[:, :-1]], 1)
    np.testing.assert_array_equal(seq, np.where(after, 0, ref))


def test_vqa_config_errors():
    with pytest.raises(ConfigError, match="fusion.modalities must be"):
        build("vqa", dict(fusion=dict(FUSION, modalities=("image", "audio"))))
    with pytest.raises(ConfigError, match="mode="):
        build("vqa", dict(mode="extract"))
    model = build("vqa", dict(fusion=FUSION))
    with pytest.raises(ValueError, match="mode='generate'"):
        generate_answers(model, {}, np.zeros((1, 32, 32, 3)), np.ones((1, 3), np.int32),
                         max_new_tokens=2)
