"""``coco_map``: COCO box mAP, AP50 and AP75 (pycocotools) of a detection model.

The model's last-layer ``logits`` ``(B, Q, C + 1)`` and ``pred_boxes`` ``(B, Q, 4)``
become scored detections (:func:`jaxmm.evaluate.detection.detr_detections`: per query,
the most likely real class and its probability); the prepared batch's ``boxes``,
``labels`` and ``box_mask`` are the ground truth.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax.numpy as jnp
import numpy as np

from jaxmm.config import ConfigBase, ConfigError
from jaxmm.evaluate.detection import coco_box_metrics, detr_detections
from jaxmm.evaluate.evaluators.base import Evaluator, register_evaluator

__all__ = ["COCOMapEvaluator", "COCOMapOptions", "DetectionPredictions"]


@dataclasses.dataclass
class DetectionPredictions:
    """Every real eval image's detections and ground truth (all processes, in order).

    Per image ``i``: ``boxes[i]`` ``(Q, 4)`` normalised cxcywh, ``scores[i]`` ``(Q,)``
    and ``labels[i]`` ``(Q,)`` (every query's most likely real class and its
    probability); ``gt_boxes[i]`` ``(n_i, 4)`` and ``gt_labels[i]`` ``(n_i,)``.
    ``image_ids`` ``(N,)`` (``0..N-1`` when the batches carry none); ``image_size``
    the pixels COCO's area ranges are measured in; ``num_classes`` the real classes.
    """

    image_ids: np.ndarray
    boxes: np.ndarray
    scores: np.ndarray
    labels: np.ndarray
    gt_boxes: list[np.ndarray]
    gt_labels: list[np.ndarray]
    image_size: int
    num_classes: int


@dataclasses.dataclass(frozen=True)
class COCOMapOptions(ConfigBase):
    """image_size: pixels the normalised boxes are scaled to for COCO's area ranges
    (0: the eval images' own size)."""

    image_size: int = 0

    def validate(self) -> None:
        self.require_at_least(0, "image_size")


@register_evaluator("coco_map")
class COCOMapEvaluator(Evaluator):
    """COCO ``map`` (IoU 0.5:0.95), ``ap50``, ``ap75``, ``map_small/medium/large``
    and ``num_images``."""

    Options = COCOMapOptions

    def __init__(self, *args: Any):
        super().__init__(*args)

        def predict(variables, batch):
            prepared = self.prepare(batch)
            out = self.forward(variables, prepared)
            mask = prepared.get("example_mask", jnp.ones(out.logits.shape[0], jnp.float32))
            return {"logits": out.logits, "pred_boxes": out.pred_boxes,
                    "boxes": prepared["boxes"], "labels": prepared["labels"],
                    "box_mask": prepared["box_mask"], "mask": mask}

        self._predict = self.jit(predict)

    def predict(self, variables: Any) -> DetectionPredictions:
        size = [self.options.image_size]

        def step(local, batch):
            missing = [k for k in ("boxes", "labels", "box_mask") if k not in local]
            if missing:
                raise ConfigError(f"Evaluator {self.name!r}: the eval batch has no "
                                  f"{', '.join(missing)} (keys: {sorted(local)}).")
            if not size[0]:
                size[0] = int(local["image"].shape[1]) if "image" in local else 512
            out = {k: self.host_rows(v) for k, v in self._predict(variables, batch).items()}
            if "image_id" in local:
                out["image_id"] = np.asarray(local["image_id"])
            return out

        rows = self.collect(step)
        boxes, scores, labels = detr_detections(rows["logits"], rows["pred_boxes"])
        real = rows["box_mask"] > 0
        return DetectionPredictions(
            image_ids=np.asarray(rows.get("image_id", np.arange(len(real)))),
            boxes=boxes, scores=scores, labels=labels,
            gt_boxes=[b[m] for b, m in zip(rows["boxes"], real)],
            gt_labels=[lab[m] for lab, m in zip(rows["labels"], real)],
            image_size=size[0], num_classes=rows["logits"].shape[-1] - 1)

    def score(self, predictions: DetectionPredictions) -> dict[str, float]:
        p = predictions
        out = coco_box_metrics(p.gt_boxes, p.gt_labels, list(p.boxes), list(p.scores),
                               list(p.labels), image_size=p.image_size,
                               num_classes=p.num_classes)
        out["num_images"] = float(len(p.gt_boxes))
        return out

    def evaluate(self, variables: Any) -> dict[str, float]:
        return self.score(self.predict(variables))
