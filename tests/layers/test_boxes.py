"""Box ops against hand-computed values and independent NumPy loops."""

import numpy as np
import pytest

from jaxmm.layers import boxes


def np_iou_giou(a, b):
    """One pair at a time, written from the definitions."""
    iou = np.zeros((len(a), len(b)))
    giou = np.zeros((len(a), len(b)))
    for i, (ax0, ay0, ax1, ay1) in enumerate(a):
        for j, (bx0, by0, bx1, by1) in enumerate(b):
            iw = max(0.0, min(ax1, bx1) - max(ax0, bx0))
            ih = max(0.0, min(ay1, by1) - max(ay0, by0))
            inter = iw * ih
            union = (ax1 - ax0) * (ay1 - ay0) + (bx1 - bx0) * (by1 - by0) - inter
            hull = (max(ax1, bx1) - min(ax0, bx0)) * (max(ay1, by1) - min(ay0, by0))
            iou[i, j] = inter / union
            giou[i, j] = inter / union - (hull - union) / hull
    return iou, giou


def test_conversions_round_trip_and_hand_values():
    cxcywh = np.array([[0.5, 0.5, 0.2, 0.4], [0.1, 0.9, 0.2, 0.2]], np.float32)
    xyxy = np.asarray(boxes.box_cxcywh_to_xyxy(cxcywh))
    np.testing.assert_allclose(xyxy, [[0.4, 0.3, 0.6, 0.7], [0.0, 0.8, 0.2, 1.0]], atol=1e-6)
    np.testing.assert_allclose(boxes.box_xyxy_to_cxcywh(xyxy), cxcywh, atol=1e-6)
    np.testing.assert_allclose(boxes.box_area(xyxy), [0.08, 0.04], atol=1e-6)
    np.testing.assert_allclose(boxes.box_area(np.array([[1.0, 1.0, 0.0, 2.0]])), [0.0])


def test_iou_and_giou_hand_values():
    a = np.array([[0.0, 0.0, 2.0, 2.0]])
    b = np.array([[1.0, 1.0, 3.0, 3.0],   # overlap 1, union 7, hull 9
                  [0.0, 0.0, 2.0, 2.0],   # identical
                  [3.0, 0.0, 4.0, 1.0]])  # disjoint: union 5, hull 4 * 2 = 8
    np.testing.assert_allclose(boxes.box_iou(a, b), [[1 / 7, 1.0, 0.0]], atol=1e-6)
    np.testing.assert_allclose(boxes.generalized_box_iou(a, b),
                               [[1 / 7 - 2 / 9, 1.0, -3 / 8]], atol=1e-6)


def test_pairwise_matches_numpy_loops_with_batch_dims(rng):
    def random_boxes(shape):
        cxcywh = np.concatenate([rng.uniform(0.1, 0.9, shape + (2,)),
                                 rng.uniform(0.05, 0.5, shape + (2,))], -1)
        return np.asarray(boxes.box_cxcywh_to_xyxy(cxcywh.astype(np.float32)), np.float64)

    a, b = random_boxes((2, 5)), random_boxes((2, 3))
    iou, giou = boxes.box_iou(a, b), boxes.generalized_box_iou(a, b)
    assert iou.shape == giou.shape == (2, 5, 3)
    for k in range(2):
        ref_iou, ref_giou = np_iou_giou(a[k], b[k])
        np.testing.assert_allclose(iou[k], ref_iou, atol=1e-5)
        np.testing.assert_allclose(giou[k], ref_giou, atol=1e-5)
    assert float(np.min(giou)) >= -1.0 and float(np.max(giou)) <= 1.0 + 1e-6


@pytest.mark.parametrize("fn", [boxes.box_iou, boxes.generalized_box_iou])
def test_empty_boxes_give_finite_values(fn):
    z = np.zeros((1, 4), np.float32)
    assert np.all(np.isfinite(np.asarray(fn(z, z))))
