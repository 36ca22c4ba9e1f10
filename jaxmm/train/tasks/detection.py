"""Object detection with a DETR-style set-prediction model.

The batch carries ``image`` ``(B, H, W, C)``, ``boxes`` ``(B, N, 4)`` (normalised
cxcywh), ``labels`` ``(B, N)`` int in ``[0, num_classes)`` and ``box_mask`` ``(B, N)``
(1 = a real object; an image may have none). The model (default ``detr``) returns
per-query class logits and boxes for every decoder layer; the loss is DETR's set
criterion (:func:`jaxmm.losses.detr_loss`): Hungarian matching inside the jitted step,
then class cross-entropy (``eos_coef`` on "no object"), L1 and GIoU, summed over the
decoder layers when ``aux_loss``. Metrics: the last layer's ``loss_ce``, ``loss_bbox``,
``loss_giou``. The ``coco_map`` evaluator reports COCO mAP / AP50 / AP75.
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp

from jaxmm import losses
from jaxmm.config import ConfigBase, ConfigError
from jaxmm.train.tasks.base import LossOutput, Task, example_weights, register_task

__all__ = ["DetectionOptions", "DetectionTask"]

BOX_FIELDS = ("boxes", "labels", "box_mask")


@dataclasses.dataclass(frozen=True)
class DetectionOptions(ConfigBase):
    """eos_coef: class weight of "no object"; class_weight, bbox_weight, giou_weight:
    weights of the class, L1 and GIoU terms in the matching cost and the loss (DETR's
    1, 5, 2); aux_loss: add every decoder layer's loss; matcher: ``"auto"``, ``"jax"``
    or ``"scipy"`` (:func:`jaxmm.layers.hungarian_match`)."""

    eos_coef: float = 0.1
    class_weight: float = 1.0
    bbox_weight: float = 5.0
    giou_weight: float = 2.0
    aux_loss: bool = True
    matcher: str = "auto"

    def validate(self) -> None:
        self.require_one_of("matcher", ("auto", "jax", "scipy"))
        if self.eos_coef < 0 or min(self.class_weight, self.bbox_weight, self.giou_weight) < 0:
            raise ConfigError("task: eos_coef and the class/bbox/giou weights must be >= 0.")


@register_task
class DetectionTask(Task):
    name = "detection"
    Options = DetectionOptions
    default_model = "detr"
    model_inputs = ("image",)
    layout = "detection"

    def loss(self, variables, batch, *, train, rng, constants=None) -> LossOutput:
        missing = [k for k in BOX_FIELDS if k not in batch]
        if missing:
            raise ConfigError(f"task 'detection': the batch has no {', '.join(missing)} (keys: "
                              f"{', '.join(sorted(batch))}); use detection data with boxes "
                              "[B,N,4] cxcywh, labels [B,N] and box_mask [B,N].")
        out, extra = self.apply(variables, batch, train=train, rng=rng)
        o = self.options
        logits, boxes = ((out.layer_logits, out.layer_pred_boxes) if o.aux_loss
                         else (out.logits, out.pred_boxes))
        total, metrics = losses.detr_loss(
            logits, boxes, batch["labels"], batch["boxes"], batch["box_mask"],
            eos_coef=o.eos_coef, class_weight=o.class_weight, bbox_weight=o.bbox_weight,
            giou_weight=o.giou_weight, solver=o.matcher, image_weights=example_weights(batch))
        one = jnp.ones((), jnp.float32)
        return LossOutput(loss=total, weight=one, extra=extra,
                          metrics={k: (v, one) for k, v in metrics.items()})
