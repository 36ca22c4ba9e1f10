"""Video encoder: tubelet embedding = 3-D conv, frame counts, padded clips, learning check."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxmm.config import ConfigError
from jaxmm.models import build
from jaxmm.models.video import VideoConfig, VideoEncoder


@pytest.fixture(scope="module")
def tiny():
    cfg = VideoConfig.from_size("tiny")
    model = VideoEncoder(cfg)
    video = np.random.default_rng(0).normal(size=(2, 8, 16, 16, 3)).astype(np.float32)
    params = nn.meta.unbox(jax.jit(model.init)(jax.random.key(0), video)["params"])
    return cfg, model, params, video


@pytest.mark.slow
def test_tubelet_embedding_equals_3d_convolution(tiny):
    cfg, model, params, video = tiny
    out, state = jax.jit(lambda p, v: model.apply({"params": p}, v, capture_intermediates=True))(
        params, video)
    assert out.last_hidden_state.shape == (2, 1 + 4, 32)
    assert out.pooler_output.shape == (2, 32)
    emb = state["intermediates"]["frames"]["embeddings"]["patch"]["__call__"][0]
    kernel2d = params["frames"]["embeddings"]["patch"]["kernel"]  # (p, p, t*C, D)
    kernel3d = kernel2d.reshape(8, 8, 2, 3, 32).transpose(2, 0, 1, 3, 4)  # (t, p, p, C, D)
    want = jax.lax.conv_general_dilated(
        video, kernel3d, (2, 8, 8), "VALID", dimension_numbers=("NDHWC", "DHWIO", "NDHWC"),
        precision=jax.lax.Precision.HIGHEST,
    ) + params["frames"]["embeddings"]["patch"]["bias"]
    np.testing.assert_allclose(emb, np.asarray(want).reshape(8, 2, 2, 32), atol=1e-4)


@pytest.mark.slow
def test_frame_counts_and_padded_clips(tiny):
    cfg, model, params, video = tiny
    apply = jax.jit(lambda v, m: model.apply({"params": params}, v, m))
    short = jax.jit(lambda v: model.apply({"params": params}, v))(video[:, :4])  # first positions
    assert short.last_hidden_state.shape == (2, 3, 32)
    # A 4-frame clip padded to 8 frames with garbage + mask == the 4-frame clip.
    padded = video.copy()
    padded[:, 4:] = 50.0
    mask = np.zeros((2, 8), np.int32)
    mask[:, :4] = 1
    out = apply(padded, mask)
    np.testing.assert_allclose(out.last_hidden_state[:, :3], short.last_hidden_state, atol=1e-4)
    np.testing.assert_allclose(out.pooler_output, short.pooler_output, atol=1e-4)
    for frames, msg in [(5, "multiples of tubelet_size=2"), (10, "1..8 frames")]:
        with pytest.raises(ValueError, match=msg):
            model.apply({"params": params}, np.zeros((1, frames, 16, 16, 3), np.float32))
    with pytest.raises(ValueError, match="expects 3"):
        model.apply({"params": params}, np.zeros((1, 8, 16, 16, 1), np.float32))
    with pytest.raises(ValueError, match="does not match the model's 16x16"):
        model.apply({"params": params}, np.zeros((1, 8, 24, 24, 3), np.float32))
    with pytest.raises(ConfigError, match="multiple of tubelet_size"):
        VideoConfig.from_size("tiny", num_frames=7)


@pytest.mark.slow
def test_per_frame_mode_uses_an_image_vit_per_frame(rng):
    cfg = VideoConfig.from_size("tiny", tubelet_size=1, pool_type="mean")
    model = VideoEncoder(cfg)
    video = rng.normal(size=(1, 3, 16, 16, 3)).astype(np.float32)
    params = jax.jit(model.init)(jax.random.key(0), video)["params"]
    out, state = jax.jit(lambda p, v: model.apply({"params": p}, v, capture_intermediates=True))(
        params, video)
    assert out.last_hidden_state.shape == (1, 4, 32)
    # The frame encoder is a plain image ViT: frame 1's feature = ViT(frame 1).
    vit = build("vit", cfg.frame_encoder)
    frame1 = jax.jit(vit.apply)({"params": params["frames"]}, video[:, 1]).pooler_output
    feats = state["intermediates"]["frames"]["__call__"][0].pooler_output
    np.testing.assert_allclose(feats[1], frame1[0], atol=1e-5)
    np.testing.assert_allclose(out.pooler_output, out.last_hidden_state[:, 1:].mean(1),
                               atol=1e-5)


@pytest.mark.slow
def test_learns_temporal_order(rng):
    """Class = whether the bright frames come first or last: needs temporal positions."""
    model = build("video_classifier", "tiny", num_labels=2)
    labels = rng.integers(0, 2, size=16).astype(np.int32)
    video = rng.normal(size=(16, 8, 16, 16, 3)).astype(np.float32) * 0.2
    video[labels == 0, :4] += 1.0
    video[labels == 1, 4:] += 1.0
    params = jax.jit(model.init)(jax.random.key(0), video[:1])["params"]
    tx = optax.adam(3e-3)
    opt = tx.init(params)

    @jax.jit
    def step(params, opt):
        def loss_fn(p):
            logits = model.apply({"params": p}, video).logits
            return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt = tx.update(grads, opt)
        return optax.apply_updates(params, updates), opt, loss

    losses = []
    for _ in range(30):
        params, opt, loss = step(params, opt)
        losses.append(float(loss))
    logits = model.apply({"params": params}, video).logits
    assert losses[-1] < 0.2 * losses[0]
    assert (np.asarray(jnp.argmax(logits, -1)) == labels).mean() == 1.0
