"""Object detection with a DETR-style set-prediction model.

  jaxmm train --config configs/detr_scenes.py:tiny --workdir runs/detr     # synthetic boxes
  jaxmm train --config configs/detr_scenes.py:r50,res=512 --workdir runs/detr

``tiny``: a 2-stage ResNet (16 wide) and a 2-layer decoder of width 64 with 8 object
queries, for 32x32 images; ``r50``: DETR-R50's sizes (ResNet-50, 6 decoder layers of
256, 100 queries). Options: ``backbone`` (``resnet`` or ``vit``), ``queries``,
``classes``, ``res``, ``steps``, ``batch``, ``lr``, ``matcher`` (``auto``, ``jax``,
``scipy``). The data is the synthetic ``detection`` layout (coloured rectangles, up
to 3 per image). The ``coco_map`` evaluator reports ``eval/coco/map``, ``ap50``, ``ap75``.
"""

import ml_collections

from jaxmm.train.run_config import parse_config_arg

SIZES = {
    # model size, backbone config, default image size, learning rate
    "tiny": ("tiny", "tiny", 32, 1e-3),
    "r50": ("r50", "resnet50", 512, 1e-4),
}


def get_config(arg=None):
    a = parse_config_arg(arg, size="tiny", steps=2000, batch=32, backbone="resnet", queries=0,
                         classes=4, res=0, lr=0.0, matcher="auto")
    if a.size not in SIZES:
        raise ValueError(f"Unknown detr size {a.size!r}; use one of {', '.join(SIZES)}.")
    size, backbone_size, default_res, lr = SIZES[a.size]
    res = a.res or default_res
    backbone = ({"size": backbone_size} if a.backbone == "resnet"
                else {"size": "tiny" if a.size == "tiny" else "B/16", "image_size": res,
                      "patch_size": 4 if a.size == "tiny" else 16})
    c = ml_collections.ConfigDict()
    c.task = {"name": "detection", "matcher": a.matcher}
    model = {"backbone": a.backbone, "backbone_config": backbone, "num_classes": a.classes,
             "dropout_rate": 0.0}
    if a.queries:
        model["num_queries"] = a.queries
    c.model = {"name": "detr", "size": size, "config": model}
    c.num_steps, c.batch_size = a.steps, a.batch
    c.data = {"name": "synthetic", "image_size": res, "num_classes": a.classes,
              "max_objects": 3}
    c.optimizer = {"name": "adamw", "learning_rate": a.lr or lr, "weight_decay": 1e-4,
                   "clip_norm": 0.1}
    c.schedule = {"name": "cosine", "warmup_steps": min(200, a.steps // 10)}
    c.checkpoint = {"every_steps": 1000, "best_metric": "eval/coco/ap50", "best_mode": "max"}
    c.eval = {"every_steps": 1000, "num_batches": 4,
              "evaluators": {"coco": {"type": "coco_map"}, "loss": {"type": "loss", "prefix": ""}}}
    return c
