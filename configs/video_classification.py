"""Video classification with a factorised video Transformer (ViT per frame tubelet, then a
temporal Transformer).

  jaxmm train --config configs/video_classification.py:tiny,data=ucf101,data_dir=DIR \
      --workdir runs/ucf101                                       # tfds ucf101: 101 actions
  jaxmm train --config configs/video_classification.py:tiny,data=video_labels/NAME,classes=N \
      --config.data.data_dir=DIR --workdir runs/video             # jaxmm data build-video-labels
  jaxmm train --config configs/video_classification.py:tiny --workdir /tmp/video  # synthetic

Options: ``size`` (``tiny``: 16 px frames, 1+1 layers of 32; ``base``: ViT-B frames),
``data`` (``ucf101``, ``video_labels/NAME``, ``synthetic``), ``classes`` (default:
ucf101's 101), ``frames`` (clip length), ``res`` (frame size), ``steps``, ``batch``,
``lr``, ``data_dir``. Training clips start at a random frame and are flipped at random.
"""

import ml_collections

from jaxmm.train.run_config import data_section, parse_config_arg

_CLASSES = {"ucf101": 101, "synthetic": 5}


def get_config(arg=None):
    a = parse_config_arg(arg, size="tiny", data="synthetic", classes=0, frames=8, res=0,
                         steps=5000, batch=32, lr=0.0, data_dir="")
    classes = a.classes or _CLASSES.get(a.data.split("/")[0])
    if not classes:
        raise ValueError(f"data={a.data!r}: pass classes=N (the number of labels; jaxmm data "
                         "build-video-labels prints them).")
    res = a.res or (16 if a.size == "tiny" else 224)
    c = ml_collections.ConfigDict()
    c.task = {"name": "classification", "modality": "video", "label_smoothing": 0.1}
    c.model = {"name": "video_classifier", "size": a.size,
               "config": {"num_labels": classes, "num_frames": a.frames,
                          "spatial": {"image_size": res}}}
    c.num_steps, c.batch_size = a.steps, a.batch
    c.data = data_section(a.data, accepts=("video_classification",),
                          synthetic={"num_classes": classes}, data_dir=a.data_dir or None,
                          num_frames=a.frames, image_size=res)
    c.optimizer = {"name": "adamw", "learning_rate": a.lr or (1e-3 if a.size == "tiny" else 1e-4),
                   "weight_decay": 0.05, "clip_norm": 1.0}
    c.schedule = {"name": "cosine", "warmup_steps": min(500, a.steps // 10)}
    c.checkpoint = {"every_steps": 1000, "best_metric": "eval/accuracy", "best_mode": "max"}
    c.eval = {"every_steps": 1000, "num_batches": 10}
    return c
