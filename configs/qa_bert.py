"""Fine-tune BERT for extractive question answering (SQuAD), scored by exact match / F1.

  jaxmm train --config configs/qa_bert.py:data=squad,hf=/path/bert-base-uncased --workdir runs/squad
  jaxmm train --config configs/qa_bert.py:size=tiny --workdir /tmp/qa        # synthetic spans

arg: ``size``, ``hf`` (a Hugging Face BERT folder to start from; its tokenizer is used
unless ``tokenizer`` is given), ``tokenizer``, ``vocab`` (the model's vocabulary when
training from scratch), ``seq_len`` (tokens per doc-stride window), ``stride`` (context
tokens shared by consecutive windows), ``windows`` (windows kept per example), ``steps``,
``batch``, ``data`` (``synthetic``, the default; or ``squad``: tfds ``squad``),
``version`` (1: SQuAD v1.1; 2: v2.0, questions may have no answer), ``data_dir``.
With ``data=squad`` the ``squad`` evaluator decodes n-best spans over the windows and
reports ``exact_match`` and ``f1``.
"""

import ml_collections

from jaxmm.config import ConfigError
from jaxmm.train.run_config import data_section, parse_config_arg


def get_config(arg=None):
    a = parse_config_arg(arg, size="base", hf="", tokenizer="", vocab=0, seq_len=384,
                         stride=128, windows=4, steps=3000, batch=32, data="synthetic",
                         version=1, data_dir="")
    if a.version not in (1, 2):
        raise ConfigError(f"version={a.version}: use 1 (SQuAD v1.1) or 2 (v2.0).")
    c = ml_collections.ConfigDict()
    c.task = {"name": "extractive_qa"}
    c.model = {"name": "bert_qa", "size": a.size, "config": {}}
    if a.vocab:
        c.model.config.vocab_size = a.vocab
    c.init = {"hf": a.hf or None}
    c.tokenizer = a.tokenizer or a.hf or None
    c.num_steps, c.batch_size = a.steps, a.batch
    c.data = data_section(a.data, accepts=("extractive_qa",), synthetic={"seq_len": a.seq_len},
                          max_length=a.seq_len, stride=a.stride, max_windows=a.windows,
                          version="v2.0" if a.version == 2 else "v1.1",
                          data_dir=a.data_dir or None)
    c.optimizer = {"name": "adamw", "learning_rate": 3e-5 if a.hf else 1e-4,
                   "weight_decay": 0.01, "clip_norm": 1.0}
    c.schedule = {"name": "linear", "warmup_steps": a.steps // 10}
    evaluators = {"loss": {"type": "loss", "prefix": ""}}
    if a.data != "synthetic":
        evaluators["squad"] = {"type": "squad", "version": a.version, "prefix": "squad/"}
    c.checkpoint = {"every_steps": 1000, "keep": 2,
                    "best_metric": "eval/loss" if a.data == "synthetic" else "eval/squad/f1",
                    "best_mode": "min" if a.data == "synthetic" else "max"}
    c.eval = {"every_steps": 1000, "num_batches": None, "evaluators": evaluators}
    return c
