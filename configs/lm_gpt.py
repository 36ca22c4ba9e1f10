"""Causal LM pre-training of a GPT-2-style model.

  jaxmm train --config configs/lm_gpt.py:small --workdir runs/gpt
  jaxmm train --config configs/lm_gpt.py:tiny,data=synthetic,steps=200 --workdir /tmp/gpt

arg: ``size`` (model size), ``steps``, ``batch``, ``data`` (``synthetic`` or a
catalog dataset of causal-LM batches: ``lm1b``, ``c4``, ``wikitext103``, or
``text/NAME`` built with ``jaxmm data build-text``), ``data_dir``, ``tokenizer``
(path), ``vocab`` (the model's vocabulary size; set it to the tokenizer's), ``seq_len``.
"""

import ml_collections

from jaxmm.train.run_config import data_section, parse_config_arg


def get_config(arg=None):
    a = parse_config_arg(arg, size="small", steps=10000, batch=64, data="synthetic",
                         tokenizer="", seq_len=128, vocab=0, data_dir="")
    c = ml_collections.ConfigDict()
    c.task = {"name": "lm"}
    c.model = {"name": "gpt", "size": a.size,
               "config": {"dtype": "bfloat16", "remat_policy": "dots"}}
    c.num_steps, c.batch_size = a.steps, a.batch
    if a.vocab:
        c.model.config.vocab_size = a.vocab
    c.data = data_section(a.data, accepts=("language_modeling",),
                          synthetic={"seq_len": a.seq_len}, max_length=a.seq_len,
                          data_dir=a.data_dir or None)
    c.tokenizer = a.tokenizer or None
    c.optimizer = {"name": "adamw", "learning_rate": 6e-4, "b2": 0.95, "weight_decay": 0.1,
                   "clip_norm": 1.0}
    c.schedule = {"name": "cosine", "warmup_steps": min(2000, a.steps // 10),
                  "end_value_ratio": 0.1}
    c.mesh = {"data": -1, "fsdp": 1, "tensor": 1}
    c.checkpoint = {"every_steps": 1000, "keep": 3, "best_metric": "eval/loss"}
    c.eval = {"every_steps": 1000, "num_batches": 20}
    c.log = {"every_steps": 50}
    return c
