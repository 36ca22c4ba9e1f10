"""BERT masked-LM pre-training (dynamic masking on device).

  jaxmm train --config configs/mlm_bert.py:base --workdir runs/bert
  jaxmm train --config configs/mlm_bert.py:tiny,data=synthetic,steps=100 --workdir /tmp/bert

Set ``mask`` to the tokenizer's [MASK] id (103 for the uncased BERT vocabulary).
"""

import ml_collections

from jaxmm.train.run_config import parse_config_arg


def get_config(arg=None):
    a = parse_config_arg(arg, size="base", steps=100000, batch=256, data="synthetic",
                         tokenizer="", mask=103, seq_len=128)
    c = ml_collections.ConfigDict()
    c.task = {"name": "mlm", "mask_token_id": a.mask if a.data != "synthetic" else 3}
    c.model = {"name": "bert_mlm", "size": a.size, "config": {"dtype": "bfloat16"}}
    if a.data == "synthetic":
        c.model.config.vocab_size = 64
    c.num_steps, c.batch_size = a.steps, a.batch
    c.data = {"name": a.data, "seq_len": a.seq_len}
    c.tokenizer = a.tokenizer or None
    c.optimizer = {"name": "adamw", "learning_rate": 1e-4, "weight_decay": 0.01,
                   "eps": 1e-6, "clip_norm": 1.0}
    c.schedule = {"name": "linear", "warmup_steps": min(10000, a.steps // 10)}
    c.checkpoint = {"every_steps": 5000, "keep": 2}
    c.eval = {"every_steps": 5000, "num_batches": 20}
    return c
