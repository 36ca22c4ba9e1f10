"""The ``detection`` task: synthetic boxes agree with the pixels, bad batches are refused,
and the task's loss is :func:`jaxmm.losses.detr_loss` of the model's per-layer outputs."""

import jax
import numpy as np
import pytest

from jaxmm import losses
from jaxmm.config import ConfigError
from jaxmm.train import build_task, resolve_config
from jaxmm.train.synthetic import make_batch

TINY = {"num_layers": 1, "d_model": 32, "num_heads": 2, "mlp_dim": 64, "num_queries": 4,
        "num_classes": 3, "dropout_rate": 0.0}


def test_synthetic_detection_boxes_cover_the_drawn_rectangles():
    b = make_batch("detection", 0, 8, image_size=20, num_classes=3, max_objects=3)
    assert b["image"].shape == (8, 20, 20, 3) and b["boxes"].shape == (8, 3, 4)
    assert np.all(b["box_mask"].sum(1) >= 1)
    colours = np.random.default_rng([0, 7919]).normal(size=(3, 3)).astype(np.float32)
    for i in range(8):
        last = int(b["box_mask"][i].sum()) - 1  # drawn last: nothing covers it
        cx, cy, w, h = b["boxes"][i, last] * 20
        x0, y0 = int(round(cx - w / 2)), int(round(cy - h / 2))
        patch = b["image"][i, y0:y0 + int(round(h)), x0:x0 + int(round(w))]
        np.testing.assert_array_equal(patch, np.broadcast_to(colours[b["labels"][i, last]],
                                                              patch.shape))
        assert np.all(b["labels"][i][b["box_mask"][i] == 0] == 0)


def test_task_loss_is_detr_loss_and_bad_batches_are_refused():
    config = resolve_config({"task": {"name": "detection", "eos_coef": 0.2},
                             "model": {"name": "detr", "size": "tiny", "config": TINY}})
    task = build_task(config)
    batch = make_batch("detection", 0, 2, image_size=16, num_classes=3)
    batch["example_mask"] = np.array([1.0, 0.0])  # a padding row counts for nothing
    variables = jax.jit(task.init)(jax.random.key(0), batch)

    @jax.jit  # one compilation for both
    def both(v, b):
        out = task.loss(v, b, train=False, rng=jax.random.key(1))
        model_out = task.model.apply(v, b["image"][:1])  # the real row alone
        ref, _ = losses.detr_loss(model_out.layer_logits, model_out.layer_pred_boxes,
                                  b["labels"][:1], b["boxes"][:1], b["box_mask"][:1],
                                  eos_coef=0.2)
        return out, ref

    out, ref = both(variables, batch)
    assert float(out.loss / out.weight) == pytest.approx(float(ref), rel=1e-5)
    assert set(out.metrics) == {"loss_ce", "loss_bbox", "loss_giou"}
    with pytest.raises(ConfigError, match="no boxes, box_mask"):
        task.loss(variables, {"image": batch["image"], "labels": batch["labels"]},
                  train=False, rng=jax.random.key(1))
