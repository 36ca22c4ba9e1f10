"""COCO box mAP (pycocotools) on hand-made cases with known answers."""

import numpy as np
import pytest

from jaxmm.evaluate.detection import coco_box_metrics, detr_detections

GT = [np.array([[0.5, 0.5, 0.2, 0.2]]), np.array([[0.3, 0.3, 0.2, 0.2], [0.7, 0.7, 0.2, 0.4]])]
LABELS = [np.array([0]), np.array([1, 0])]
ONES = [np.ones(1), np.ones(2)]


def test_perfect_detections_score_one():
    m = coco_box_metrics(GT, LABELS, GT, ONES, LABELS, num_classes=2)
    assert m["map"] == m["ap50"] == m["ap75"] == pytest.approx(1.0)


def test_a_shifted_box_counts_at_iou_0_5_but_not_0_75():
    shifted = [g.copy() for g in GT]
    shifted[1][0, 0] += 0.045  # 0.2-wide box moved 0.045: IoU = 0.155 / 0.245 = 0.633
    m = coco_box_metrics(GT, LABELS, shifted, ONES, LABELS, num_classes=2)
    # class 0 is perfect (AP 1 at every IoU); class 1 (one box, IoU 0.633) is found at the
    # IoU thresholds 0.50, 0.55, 0.60 of the ten 0.50:0.95: AP 3/10.
    assert m["ap50"] == pytest.approx(1.0)
    assert m["ap75"] == pytest.approx(0.5)
    assert m["map"] == pytest.approx((1.0 + 0.3) / 2)


def test_wrong_class_and_a_lower_scored_false_positive():
    wrong = coco_box_metrics(GT, LABELS, GT, ONES, [np.array([1]), np.array([0, 1])],
                             num_classes=2)
    assert wrong["map"] == pytest.approx(0.0)
    # image 0 gets an extra false positive scored below its true positive: still AP 1
    dets = [np.concatenate([GT[0], [[0.1, 0.1, 0.1, 0.1]]]), GT[1]]
    m = coco_box_metrics(GT, LABELS, dets, [np.array([0.9, 0.1]), np.ones(2)],
                         [np.array([0, 0]), LABELS[1]], num_classes=2)
    assert m["ap50"] == pytest.approx(1.0)
    none = coco_box_metrics(GT, LABELS, [np.zeros((0, 4))] * 2, [np.zeros(0)] * 2,
                            [np.zeros(0, int)] * 2)
    assert none["map"] == 0.0


def test_detr_detections_skip_the_no_object_class():
    logits = np.array([[[0.0, 2.0, 5.0], [3.0, 1.0, 0.0]]])  # 2 classes + no-object
    boxes, scores, labels = detr_detections(logits, np.zeros((1, 2, 4)))
    np.testing.assert_array_equal(labels, [[1, 0]])
    p = np.exp(logits[0]) / np.exp(logits[0]).sum(-1, keepdims=True)
    np.testing.assert_allclose(scores, [[p[0, 1], p[1, 0]]])


def test_mean_box_baseline_predicts_each_class_mean_box():
    from jaxmm.evaluate.detection import mean_box_baseline

    boxes, scores, labels = mean_box_baseline(GT, LABELS, num_classes=3, num_images=2)
    np.testing.assert_array_equal(labels[0], [0, 1])  # class 2 never seen
    np.testing.assert_allclose(boxes[0][0], [0.6, 0.6, 0.2, 0.3])  # mean of the two 0-boxes
    np.testing.assert_allclose(boxes[0][1], GT[1][0])
    np.testing.assert_allclose(scores[1], [2 / 3, 1 / 3])
    # on its own training boxes: the class-1 box is found exactly but also guessed on
    # image 0 (precision 1/2 at recall 1: AP 0.5); the class-0 mean box overlaps neither
    # class-0 box at IoU 0.75 (AP 0)
    m = coco_box_metrics(GT, LABELS, boxes, scores, labels, num_classes=2)
    assert m["ap75"] == pytest.approx(0.25)
