"""Attention maps, rollout and plots."""

import json

import numpy as np
import pytest
from PIL import Image

from jaxmm import viz


def test_attention_to_grid_and_upsample():
    w = np.zeros((2, 1 + 6))
    w[:, 0] = 0.5  # [CLS]
    w[0, 1 + 4] = 0.5  # head 0 looks at patch (1, 1)
    w[1, 1 + 4] = 0.25
    w[1, 1 + 0] = 0.25
    grid = viz.attention_to_grid(w, (2, 3), num_prefix_tokens=1)
    np.testing.assert_allclose(grid.sum(), 1.0)
    np.testing.assert_allclose(grid, np.array([[1, 0, 0], [0, 3, 0]]) / 4)
    up = viz.upsample_map(grid, (20, 30))
    assert up.shape == (20, 30) and up.min() == 0 and up.max() == pytest.approx(1.0)
    assert np.unravel_index(up.argmax(), up.shape)[0] >= 10  # brightest in the lower half
    with pytest.raises(ValueError, match="do not fill a 3x3 grid"):
        viz.attention_to_grid(w, (3, 3), num_prefix_tokens=1)


def test_rollout_matches_manual_product():
    rs = np.random.default_rng(0)
    layers = [rs.random((1, 2, 3, 3)) for _ in range(2)]
    layers = [a / a.sum(-1, keepdims=True) for a in layers]
    got = viz.attention_rollout(layers)
    mats = []
    for a in layers:
        m = 0.5 * a.mean(1)[0] + 0.5 * np.eye(3)
        mats.append(m / m.sum(-1, keepdims=True))
    np.testing.assert_allclose(got[0], mats[1] @ mats[0])
    np.testing.assert_allclose(got.sum(-1), 1.0)


def test_figures_are_written(tmp_path):
    img = np.random.default_rng(0).random((32, 32, 3))
    maps = [np.eye(4), np.ones((4, 4))]
    p = viz.save_attention_figure(str(tmp_path / "a.png"), img, ["a", "cat"], maps)
    assert Image.open(p).size[0] > 100
    p = viz.save_sample_grid(str(tmp_path / "g.png"), [img, img], ["x", "y"],
                             attention=[np.eye(4), None])
    assert Image.open(p).size[1] > 100
    p = viz.save_caption_comparison(str(tmp_path / "d.png"), img,
                                    {"greedy": "a a a", "beam": "a red circle"}, ["a circle"])
    assert Image.open(p).size[0] > 300
    with pytest.raises(ValueError, match="No captions"):
        viz.save_caption_comparison(str(tmp_path / "e.png"), img, {})
    # Detected boxes are drawn where they are: yellow edges inside the box's part of the
    # image (a grey image has no yellow of its own), none in its other half.
    grey = np.full((40, 40, 3), 0.5)
    p = viz.save_sample_grid(str(tmp_path / "b.png"), [grey], ["boxes"], columns=1,
                             boxes=[[((0.25, 0.5, 0.3, 0.6), "circle 0.90")]])
    rgb = np.asarray(Image.open(p).convert("RGB")).astype(int)
    yellow = (rgb[..., 0] > 200) & (rgb[..., 1] > 200) & (rgb[..., 2] < 80)
    plain = np.asarray(Image.open(viz.save_sample_grid(
        str(tmp_path / "n.png"), [grey], ["boxes"], columns=1)).convert("RGB")).astype(int)
    image_cols = np.flatnonzero(np.all(np.abs(plain - 127) < 3, -1).any(0))  # the grey axes
    left, right = image_cols.min(), image_cols.max()
    cols = np.flatnonzero(yellow.any(0))
    assert cols.size and cols.max() < (left + right) / 2, (cols, left, right)
    with pytest.raises(ValueError, match="1 images but 2 lists of boxes"):
        viz.save_sample_grid(str(tmp_path / "x.png"), [grey], ["x"], boxes=[[], []])
    metrics = tmp_path / "m.jsonl"
    metrics.write_text("\n".join(json.dumps({"step": s, "loss": 1 / (s + 1)}) for s in range(5))
                       + "\n{broken")
    recs = viz.read_metrics(str(metrics))
    assert [r["step"] for r in recs] == list(range(5))
    p = viz.plot_training_curves({"run": recs}, str(tmp_path / "c.png"))
    assert Image.open(p).size[0] > 100
    with pytest.raises(ValueError, match="No numeric metrics"):
        viz.plot_training_curves({"run": [{"step": 1}]}, str(tmp_path / "d.png"))
