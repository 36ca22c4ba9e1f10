"""BERT pre-training: masked LM (dynamic masking on device), or with ``nsp=true`` the
full BERT recipe, MLM + next-sentence prediction on sentence pairs built in the input
pipeline from multi-sentence documents (50% random next sentences, documents apart).

  jaxmm train --config configs/mlm_bert.py:base --workdir runs/bert
  jaxmm train --config configs/mlm_bert.py:tiny,data=synthetic,steps=100 --workdir /tmp/bert
  jaxmm train --config configs/mlm_bert.py:base,nsp=true,data=wikitext103,tokenizer=vocab.txt \
      --workdir runs/bert_nsp

arg: ``size``, ``steps``, ``batch``, ``nsp`` (add next-sentence prediction), ``data``
(``synthetic`` or a catalog text dataset: ``lm1b``, ``c4``, ``wikitext103``, or
``text/NAME`` built with ``jaxmm data build-text``; for ``nsp`` one example per
multi-sentence document, e.g. JSON lines), ``data_dir``, ``tokenizer`` (path), ``vocab``
(the model's vocabulary size; set it to the tokenizer's), ``mask`` (the tokenizer's [MASK]
id: 103 for the uncased BERT vocabulary), ``seq_len``.
"""

import ml_collections

from jaxmm.train.run_config import data_section, parse_config_arg


def get_config(arg=None):
    a = parse_config_arg(arg, size="base", steps=100000, batch=256, data="synthetic",
                         tokenizer="", mask=103, seq_len=128, vocab=0, data_dir="", nsp=False)
    c = ml_collections.ConfigDict()
    c.task = {"name": "pretraining" if a.nsp else "mlm",
              "mask_token_id": a.mask if a.data != "synthetic" else 3}
    c.model = {"name": "bert_pretraining" if a.nsp else "bert_mlm", "size": a.size,
               "config": {"dtype": "bfloat16"}}
    if a.data == "synthetic" or a.vocab:
        c.model.config.vocab_size = a.vocab or 64
    c.num_steps, c.batch_size = a.steps, a.batch
    layout = "pretraining" if a.nsp else "masked_lm"
    c.data = data_section(a.data, accepts=(layout,), synthetic={"seq_len": a.seq_len},
                          task=layout, max_length=a.seq_len, data_dir=a.data_dir or None)
    c.tokenizer = a.tokenizer or None
    c.optimizer = {"name": "adamw", "learning_rate": 1e-4, "weight_decay": 0.01,
                   "eps": 1e-6, "clip_norm": 1.0}
    c.schedule = {"name": "linear", "warmup_steps": min(10000, a.steps // 10)}
    c.checkpoint = {"every_steps": 5000, "keep": 2}
    c.eval = {"every_steps": 5000, "num_batches": 20}
    return c
