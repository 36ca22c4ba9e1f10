"""The DETR-style detector: outputs per decoder layer, both backbones, and it learns."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxmm import losses
from jaxmm.models import build, registry
from jaxmm.models.detr import DetrConfig, DetrForObjectDetection

TINY = dict(num_layers=2, d_model=32, num_heads=2, mlp_dim=64, num_queries=4, num_classes=3,
            dropout_rate=0.0)


def test_outputs_per_layer_with_resnet_and_vit_backbones():
    assert registry.get("detr").module_cls is DetrForObjectDetection
    image = jax.ShapeDtypeStruct((2, 16, 16, 3), jnp.float32)
    for backbone, cfg in (("resnet", "tiny"), ("vit", dict(size="tiny", image_size=16))):
        model = build("detr", "tiny", backbone=backbone, backbone_config=cfg, **TINY)
        assert isinstance(model.config, DetrConfig)
        params = jax.eval_shape(model.init, jax.random.key(0), image)  # shapes only
        out = jax.eval_shape(model.apply, params, image)
        assert out.logits.shape == (2, 4, 4) and out.pred_boxes.shape == (2, 4, 4)
        assert out.layer_logits.shape == (2, 2, 4, 4)
        assert out.layer_pred_boxes.shape == (2, 2, 4, 4)


def test_overfits_two_images_boxes_and_classes():
    rng = np.random.default_rng(0)
    image = jnp.asarray(rng.uniform(size=(2, 16, 16, 3)), jnp.float32)
    labels = jnp.array([[0, 2], [1, 0]])
    boxes = jnp.array([[[0.3, 0.3, 0.2, 0.2], [0.7, 0.6, 0.3, 0.2]],
                       [[0.5, 0.5, 0.4, 0.4], [0.0, 0.0, 0.0, 0.0]]])
    mask = jnp.array([[1, 1], [1, 0]])
    model = build("detr", "tiny", **TINY)
    params = jax.jit(model.init)(jax.random.key(0), image)
    opt = optax.adam(3e-3)

    def loss_fn(p):
        out = model.apply(p, image)
        return losses.detr_loss(out.layer_logits, out.layer_pred_boxes, labels, boxes, mask)

    @jax.jit
    def step(p, s):
        (loss, metrics), g = jax.value_and_grad(loss_fn, has_aux=True)(p)
        updates, s = opt.update(g, s, p)
        return optax.apply_updates(p, updates), s, loss, metrics

    out = jax.jit(model.apply)(params, image)
    np.testing.assert_array_equal(out.layer_logits[-1], out.logits)
    assert bool(jnp.all((out.pred_boxes > 0) & (out.pred_boxes < 1)))
    state = opt.init(params)
    first = None
    for _ in range(150):
        params, state, loss, metrics = step(params, state)
        first = float(loss) if first is None else first
    assert float(loss) < 0.25 * first, (first, float(loss))
    assert float(metrics["loss_bbox"]) < 0.1  # mean L1 over the 4 coordinates of 3 boxes


def test_memory_positions_follow_the_feature_grid():
    from jaxmm.models.detr import memory_positions
    from jaxmm.models.resnet import ResNetConfig
    from jaxmm.models.vit import ViTConfig

    cnn = memory_positions(6, (8, 12), ResNetConfig.from_size("tiny", stage_sizes=(1, 1, 1)),
                           8)  # downsample 4: a 2 x 3 grid
    grid = cnn.reshape(2, 3, 8)
    np.testing.assert_array_equal(grid[0, :, :4], np.broadcast_to(grid[0, :1, :4], (3, 4)))
    np.testing.assert_array_equal(grid[:, 0, 4:], np.broadcast_to(grid[:1, 0, 4:], (2, 4)))
    assert len({tuple(r) for r in cnn}) == 6  # every cell its own position
    vit = memory_positions(1 + 16, (16, 16), ViTConfig.from_size("tiny", image_size=16,
                                                                 patch_size=4), 8)
    assert not vit[0].any() and vit[1:].any()  # the class token gets none


def test_pixel_mask_hides_padding_and_bad_masks_are_refused():
    # positions="attention" with a mask is checked against transformers
    # (tests/convert/test_detr_convert.py); here the default variant with an encoder.
    rng = np.random.default_rng(0)
    image = jnp.asarray(rng.normal(size=(2, 16, 16, 3)), jnp.float32)
    model = build("detr", "tiny", **TINY, encoder_layers=1)
    shapes = jax.eval_shape(model.init, jax.random.key(0), image)  # random params, no init
    params = jax.tree.map(lambda s: jnp.asarray(rng.normal(size=s.shape) * 0.3, s.dtype),
                          shapes)
    apply = jax.jit(model.apply)
    ones = jnp.ones((2, 16, 16), jnp.int32)
    plain = apply(params, image, pixel_mask=ones)  # no padding
    masked = apply(params, image, pixel_mask=ones.at[1, :, 8:].set(0))
    np.testing.assert_allclose(masked.logits[0], plain.logits[0], atol=1e-6)
    assert not np.allclose(masked.logits[1], plain.logits[1], atol=1e-4)
    with pytest.raises(ValueError, match="pixel_mask must have shape"):
        model.apply(params, image, pixel_mask=jnp.ones((2, 8, 8)))
