"""CLIP-style contrastive image-text training (InfoNCE; ``loss=sigmoid`` for SigLIP).

  jaxmm train --config configs/clip_contrastive.py:base --workdir runs/clip
  # locked-image tuning (LiT): freeze the image tower, train the text tower
  jaxmm train --config configs/clip_contrastive.py:base,lit=true,hf=/path/clip --workdir runs/lit
"""

import ml_collections

from jaxmm.train.run_config import data_section, parse_config_arg


def get_config(arg=None):
    a = parse_config_arg(arg, size="base", steps=20000, batch=256, data="synthetic",
                         loss="infonce", lit=False, hf="", tokenizer="", data_dir="",
                         res=0, seq_len=0)
    c = ml_collections.ConfigDict()
    c.task = {"name": "contrastive", "loss": a.loss}
    c.model = {"name": "clip", "size": a.size, "config": {"dtype": "bfloat16"}}
    c.init = {"hf": a.hf or None}
    c.num_steps, c.batch_size = a.steps, a.batch
    # real data: images at ``res`` and captions of ``seq_len`` tokens (default: the model's)
    c.data = data_section(a.data, accepts=("retrieval",), task="retrieval",
                          image_size=a.res or None, max_length=a.seq_len or None,
                          data_dir=a.data_dir or None)
    c.tokenizer = a.tokenizer or None
    c.optimizer = {"name": "adamw", "learning_rate": 5e-4, "b2": 0.98, "eps": 1e-6,
                   "weight_decay": 0.2, "clip_norm": 1.0,
                   "freeze": ("vision",) if a.lit else (),
                   "lr_multipliers": (("logit_scale", 1.0),)}
    c.schedule = {"name": "cosine", "warmup_steps": min(2000, a.steps // 10)}
    c.checkpoint = {"every_steps": 2000, "best_metric": "eval/i2t_accuracy", "best_mode": "max"}
    c.eval = {"every_steps": 2000, "num_batches": 10}
    return c
