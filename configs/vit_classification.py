"""Image classification with a ViT (from scratch, or fine-tuning HF weights).

  jaxmm train --config configs/vit_classification.py:S/16 --workdir runs/vit
  jaxmm train --config configs/vit_classification.py:tiny,data=synthetic --workdir /tmp/vit
  # fine-tune a Hugging Face checkpoint (head re-initialised when shapes differ):
  jaxmm train --config configs/vit_classification.py:base,hf=/path/vit --workdir runs/ft
"""

import ml_collections

from jaxmm.train.run_config import data_section, parse_config_arg


def get_config(arg=None):
    a = parse_config_arg(arg, size="S/16", steps=20000, batch=256, data="synthetic",
                         classes=10, hf="", res=224, data_dir="")
    c = ml_collections.ConfigDict()
    c.task = {"name": "classification", "modality": "image", "label_smoothing": 0.1}
    res = 32 if a.size == "tiny" else a.res
    c.model = {"name": "vit_classifier", "size": a.size,
               "config": {"num_labels": a.classes, "image_size": res, "dtype": "bfloat16"}}
    c.init = {"hf": a.hf or None}
    c.num_steps, c.batch_size = a.steps, a.batch
    c.data = data_section(a.data, accepts=("classification",), synthetic={"image_size": res},
                          task="classification", image_size=res, data_dir=a.data_dir or None)
    c.optimizer = {"name": "adamw", "learning_rate": 1e-3, "weight_decay": 0.05,
                   "clip_norm": 1.0}
    c.schedule = {"name": "cosine", "warmup_steps": min(1000, a.steps // 10)}
    c.checkpoint = {"every_steps": 2000, "best_metric": "eval/accuracy", "best_mode": "max"}
    c.eval = {"every_steps": 2000, "num_batches": 10}
    return c
