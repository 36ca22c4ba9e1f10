"""Object detection with a DETR-style set-prediction model.

  # the built-in scenes (jaxmm data build-builtin --data-dir DIR): a box per shape
  jaxmm train --config configs/detr_scenes.py:tiny,data=scenes,data_dir=DIR --workdir runs/detr
  jaxmm train --config configs/detr_scenes.py:tiny --workdir runs/detr     # synthetic boxes
  jaxmm train --config configs/detr_scenes.py:r50,data=coco/2017,data_dir=DIR --workdir runs/coco

``tiny``: a 2-stage ResNet (16 wide) and a 2-layer decoder of width 64 with 10 object
queries (a scene has at most 9 objects), for 32x32 images; ``r50``: DETR-R50's sizes
(ResNet-50, 6 decoder layers of 256, 100 queries); ``detr_resnet50``: DETR-R50's
architecture (6 + 6 post-LN layers, positions in every attention, frozen-BatchNorm
ResNet-50), which loads facebook/detr-resnet-50 with ``--config.init.hf=FOLDER`` (a
class head of another size stays randomly initialised). Options: ``backbone`` (``resnet`` or
``vit``), ``queries``, ``classes``, ``res``, ``steps``, ``batch``, ``lr``, ``matcher``
(``auto``, ``jax``, ``scipy``), ``data`` (``scenes``; ``synthetic``: coloured
rectangles, up to 3 per image; ``coco/2017``: tfds COCO, 80 classes;
``coco_detection/NAME``: built with ``jaxmm data build-coco-detection``, pass
``classes``), ``data_dir``, ``data_size`` (the scenes build). On the scenes the classes
are the 4 shapes. A COCO image keeps at most ``queries`` objects. The ``coco_map`` evaluator reports
``eval/coco/map``, ``ap50``, ``ap75``.

Measured (2-core CPU, tiny scenes without speech: 256 train / 64 validation images,
``tiny,steps=800,batch=32,data=scenes``): validation AP50 0.018 / 0.103 / 0.168 / 0.176
after 200 / 400 / 600 / 800 steps (mAP 0.087 at 800), against 0.011 for the image-blind
baseline that predicts each class's mean training box
(:func:`jaxmm.evaluate.detection.mean_box_baseline`). DETR learns slowly: 400 steps of a
400-step cosine schedule reach only AP50 0.016.
"""

import ml_collections

from jaxmm.train.run_config import data_section, parse_config_arg

# Default number of classes per data source (coco: the 80 COCO object categories).
_CLASSES = {"synthetic": 4, "scenes": 4, "coco": 80}
SIZES = {
    # model size, backbone config, default image size, learning rate
    "tiny": ("tiny", "tiny", 32, 2e-3),
    "r50": ("r50", "resnet50", 512, 1e-4),
    # facebook/detr-resnet-50's architecture: fine-tune it with --config.init.hf=FOLDER.
    "detr_resnet50": ("detr_resnet50", {"size": "resnet50", "norm": "frozen_batch"}, 512, 1e-4),
}


def get_config(arg=None):
    a = parse_config_arg(arg, size="tiny", steps=2000, batch=32, backbone="resnet", queries=0,
                         classes=0, res=0, lr=0.0, matcher="auto", data="synthetic",
                         data_dir="", data_size="")
    classes = a.classes or _CLASSES.get(a.data.split("/")[0])
    if not classes:
        raise ValueError(f"data={a.data!r}: pass classes=N (the dataset's number of classes; "
                         "jaxmm data build-coco-detection prints them).")
    if a.size not in SIZES:
        raise ValueError(f"Unknown detr size {a.size!r}; use one of {', '.join(SIZES)}.")
    size, backbone_size, default_res, lr = SIZES[a.size]
    res = a.res or default_res
    if a.backbone == "resnet":
        backbone = (dict(backbone_size) if isinstance(backbone_size, dict)
                    else {"size": backbone_size})
    else:
        backbone = {"size": "tiny" if a.size == "tiny" else "B/16", "image_size": res,
                    "patch_size": 4 if a.size == "tiny" else 16}
    c = ml_collections.ConfigDict()
    c.task = {"name": "detection", "matcher": a.matcher}
    model = {"backbone": a.backbone, "backbone_config": backbone, "num_classes": classes,
             "dropout_rate": 0.0}
    model["num_queries"] = a.queries or (10 if a.size == "tiny" else 100)
    c.model = {"name": "detr", "size": size, "config": model}
    c.num_steps, c.batch_size = a.steps, a.batch
    c.data = data_section(a.data, accepts=("detection",), task="detection", image_size=res,
                          data_dir=a.data_dir or None, size=a.data_size or None,
                          max_objects=model["num_queries"],
                          synthetic={"image_size": res, "num_classes": classes,
                                     "max_objects": 3})
    c.optimizer = {"name": "adamw", "learning_rate": a.lr or lr, "weight_decay": 1e-4,
                   "clip_norm": 0.1}
    c.schedule = {"name": "cosine", "warmup_steps": min(200, a.steps // 10)}
    c.checkpoint = {"every_steps": 1000, "best_metric": "eval/coco/ap50", "best_mode": "max"}
    c.eval = {"every_steps": 1000, "num_batches": 4,
              "evaluators": {"coco": {"type": "coco_map"}, "loss": {"type": "loss", "prefix": ""}}}
    return c
