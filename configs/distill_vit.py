"""Distil a ViT classifier (teacher: a jaxmm params export) into a smaller ViT.

  jaxmm train --config configs/distill_vit.py:teacher=runs/vit/export --workdir runs/distill
"""

import ml_collections

from jaxmm.train.run_config import data_section, parse_config_arg


def get_config(arg=None):
    a = parse_config_arg(arg, teacher="", teacher_size="S/16", student_size="Ti/16",
                         steps=20000, batch=256, data="synthetic", classes=10, res=224,
                         data_dir="")
    c = ml_collections.ConfigDict()
    c.task = {"name": "distillation", "student_task": "classification", "alpha": 0.9,
              "temperature": 2.0}
    c.model = {"name": "vit_classifier", "size": a.student_size,
               "config": {"num_labels": a.classes, "image_size": a.res}}
    c.teacher = {"name": "vit_classifier", "size": a.teacher_size,
                 "config": {"num_labels": a.classes, "image_size": a.res},
                 "params": a.teacher or None}
    c.num_steps, c.batch_size = a.steps, a.batch
    c.data = data_section(a.data, accepts=("classification",),
                          synthetic={"image_size": a.res}, task="classification",
                          image_size=a.res, data_dir=a.data_dir or None)
    c.optimizer = {"name": "adamw", "learning_rate": 1e-3, "weight_decay": 0.05}
    c.schedule = {"name": "cosine", "warmup_steps": min(1000, a.steps // 10)}
    c.checkpoint = {"every_steps": 2000}
    c.eval = {"every_steps": 2000, "num_batches": 10}
    return c
