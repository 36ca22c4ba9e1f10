"""COCO box mAP through ``pycocotools`` (the reference implementation, not a re-write).

:func:`coco_box_metrics` takes per-image ground truth and scored detections as arrays of
normalised boxes, builds COCO ground-truth and result objects in memory (boxes scaled
to pixels of an ``image_size`` image: only the small/medium/large split depends on it)
and runs ``COCOeval(iouType="bbox")``. :func:`detr_detections` turns DETR outputs into
scored detections (per query: the most likely real class and its probability).
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Sequence

import numpy as np

__all__ = ["coco_box_metrics", "detr_detections", "mean_box_baseline"]


def _xywh_pixels(boxes: np.ndarray, fmt: str, size: tuple[int, int]) -> np.ndarray:
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    if fmt == "cxcywh":
        boxes = np.stack([boxes[:, 0] - boxes[:, 2] / 2, boxes[:, 1] - boxes[:, 3] / 2,
                          boxes[:, 2], boxes[:, 3]], -1)
    elif fmt == "xyxy":
        boxes = np.stack([boxes[:, 0], boxes[:, 1], boxes[:, 2] - boxes[:, 0],
                          boxes[:, 3] - boxes[:, 1]], -1)
    else:
        raise ValueError(f"Unknown box format {fmt!r}; use 'cxcywh' or 'xyxy'.")
    h, w = size
    return boxes * np.array([w, h, w, h])


def detr_detections(logits: np.ndarray, pred_boxes: np.ndarray
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """DETR outputs ``logits`` ``(N, Q, C + 1)``, ``pred_boxes`` ``(N, Q, 4)`` ->
    ``(boxes (N, Q, 4), scores (N, Q), labels (N, Q))``: every query's most likely real
    class (the last class, "no object", excluded) and its softmax probability."""
    logits = np.asarray(logits, np.float64)
    prob = np.exp(logits - logits.max(-1, keepdims=True))
    prob /= prob.sum(-1, keepdims=True)
    real = prob[..., :-1]
    labels = real.argmax(-1)
    return np.asarray(pred_boxes), np.take_along_axis(real, labels[..., None], -1)[..., 0], labels


def coco_box_metrics(
    gt_boxes: Sequence[np.ndarray], gt_labels: Sequence[np.ndarray],
    det_boxes: Sequence[np.ndarray], det_scores: Sequence[np.ndarray],
    det_labels: Sequence[np.ndarray], *, box_format: str = "cxcywh",
    image_size: int | tuple[int, int] = 512, num_classes: int | None = None,
) -> dict[str, float]:
    """COCO box AP of detections against ground truth, one entry per image.

    Args:
      gt_boxes / gt_labels: per image ``(n_i, 4)`` normalised boxes and ``(n_i,)`` int
        classes of the real objects (no padding).
      det_boxes / det_scores / det_labels: per image ``(m_i, 4)``, ``(m_i,)``, ``(m_i,)``
        detections (COCO keeps the 100 best-scored per image).
      box_format: ``"cxcywh"`` or ``"xyxy"``.
      image_size: the pixel size the normalised boxes are scaled to.
      num_classes: classes to average over (default: those seen in either).

    Returns:
      ``{"map", "ap50", "ap75", "map_small", "map_medium", "map_large"}`` as fractions
      (COCOeval's ``-1`` where undefined, e.g. no ground truth of an area range).
    """
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    if not len(gt_boxes) == len(gt_labels) == len(det_boxes) == len(det_scores) \
            == len(det_labels):
        raise ValueError("coco_box_metrics: give one entry per image in every argument.")
    size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    seen = {int(c) for lab in (*gt_labels, *det_labels) for c in np.asarray(lab).reshape(-1)}
    classes = range(num_classes) if num_classes is not None else sorted(seen)
    images, annotations, results = [], [], []
    for i, (gb, gl, db, ds, dl) in enumerate(zip(gt_boxes, gt_labels, det_boxes, det_scores,
                                                 det_labels)):
        images.append({"id": i, "height": size[0], "width": size[1]})
        for box, label in zip(_xywh_pixels(gb, box_format, size), np.asarray(gl).reshape(-1)):
            annotations.append({"id": len(annotations) + 1, "image_id": i,
                                "category_id": int(label), "bbox": box.tolist(),
                                "area": float(box[2] * box[3]), "iscrowd": 0})
        for box, score, label in zip(_xywh_pixels(db, box_format, size),
                                     np.asarray(ds).reshape(-1), np.asarray(dl).reshape(-1)):
            results.append({"image_id": i, "category_id": int(label), "bbox": box.tolist(),
                            "score": float(score)})
    keys = ("map", "ap50", "ap75", "map_small", "map_medium", "map_large")
    if not annotations:
        return dict.fromkeys(keys, -1.0)
    if not results:
        return dict.fromkeys(keys, 0.0)
    gt = COCO()
    gt.dataset = {"images": images, "annotations": annotations,
                  "categories": [{"id": int(c), "name": str(c)} for c in classes]}
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
        gt.createIndex()
        dt = gt.loadRes(results)
        ev = COCOeval(gt, dt, iouType="bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return {k: float(v) for k, v in zip(keys, ev.stats[:6])}


def mean_box_baseline(gt_boxes: Sequence[np.ndarray], gt_labels: Sequence[np.ndarray],
                      num_classes: int, num_images: int
                      ) -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]]:
    """The image-blind detector: on every image, one detection per class seen in the
    (training) ground truth, at that class's mean box, scored by the class's frequency.

    Returns ``(boxes, scores, labels)`` lists of ``num_images`` entries, for
    :func:`coco_box_metrics`.
    """
    boxes = np.concatenate([np.asarray(b, np.float64).reshape(-1, 4) for b in gt_boxes])
    labels = np.concatenate([np.asarray(lab).reshape(-1) for lab in gt_labels]).astype(int)
    seen = [c for c in range(num_classes) if np.any(labels == c)]
    mean = np.array([boxes[labels == c].mean(0) for c in seen]).reshape(-1, 4)
    freq = np.array([np.mean(labels == c) for c in seen])
    cls = np.array(seen, int)
    return [mean] * num_images, [freq] * num_images, [cls] * num_images
