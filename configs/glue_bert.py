"""Fine-tune BERT on a GLUE task, scored with the task's official metric.

  jaxmm train --config configs/glue_bert.py:sst2,hf=/path/bert-base-uncased --workdir runs/sst2
  jaxmm train --config configs/glue_bert.py:stsb,size=tiny,tokenizer=tok,vocab=8000 --workdir /tmp/g

arg: ``task`` (cola, sst2, mrpc, stsb, qqp, mnli, qnli, rte, wnli; stsb is a regression
with one output), ``size``, ``hf`` (a Hugging Face BERT folder to start from; its
tokenizer is used unless ``tokenizer`` is given), ``tokenizer``, ``vocab`` (the model's
vocabulary when training from scratch), ``seq_len``, ``steps``, ``batch``, ``data``
(``glue``: tfds ``glue/<task>``; ``synthetic``; or your own table built with ``jaxmm data
build-text-labels``: ``data=text_labels/NAME,labels=N`` and ``pair=true`` when it has a
second text), ``data_dir``. The ``glue`` evaluator reports accuracy, F1, Matthews
correlation or Pearson/Spearman, as the task defines; on your own data the
``classification`` evaluator reports accuracy and macro F1.

  jaxmm train --config configs/glue_bert.py:data=text_labels/reviews,labels=3,hf=/path/bert \
      --workdir runs/reviews
"""

import ml_collections

from jaxmm.config import ConfigError
from jaxmm.train.run_config import data_section, parse_config_arg

# labels per GLUE task (stsb: one regression output)
NUM_LABELS = {"cola": 2, "sst2": 2, "mrpc": 2, "stsb": 1, "qqp": 2, "mnli": 3, "qnli": 2,
              "rte": 2, "wnli": 2}


def get_config(arg=None):
    a = parse_config_arg(arg, task="sst2", size="base", hf="", tokenizer="", vocab=0,
                         seq_len=128, steps=3000, batch=32, data="glue", data_dir="", labels=0,
                         pair=False)
    own = a.data.startswith("text_labels")  # a table of your own
    if own and a.labels < 1:
        raise ConfigError(f"data={a.data} needs labels=N, the number of classes (the build "
                          "printed them as 'classes').")
    if not own and a.task not in NUM_LABELS:
        raise ConfigError(f"Unknown GLUE task {a.task!r}; choose one of {', '.join(NUM_LABELS)}.")
    c = ml_collections.ConfigDict()
    c.task = {"name": "classification", "modality": "text"}
    c.model = {"name": "bert_classifier", "size": a.size,
               "config": {"num_labels": a.labels if own else NUM_LABELS[a.task]}}
    if a.vocab:
        c.model.config.vocab_size = a.vocab
    c.init = {"hf": a.hf or None}
    c.tokenizer = a.tokenizer or a.hf or None
    c.num_steps, c.batch_size = a.steps, a.batch
    name = a.data if a.data == "synthetic" or own else f"{a.data}/{a.task}"
    c.data = data_section(name, accepts=("text_classification",),
                          synthetic={"seq_len": a.seq_len}, max_length=a.seq_len,
                          data_dir=a.data_dir or None, **({"pair": a.pair} if own else {}))
    c.optimizer = {"name": "adamw", "learning_rate": 2e-5 if a.hf else 1e-4,
                   "weight_decay": 0.01, "clip_norm": 1.0}
    c.schedule = {"name": "linear", "warmup_steps": a.steps // 10}
    if own:
        metric = "eval/cls/accuracy"
        evaluators = {"cls": {"type": "classification", "prefix": "cls/",
                              "metrics": ("accuracy", "macro_f1")}}
    else:
        metric = "eval/glue/" + ("pearson" if a.task == "stsb" else
                                 "matthews" if a.task == "cola" else "accuracy")
        evaluators = {"glue": {"type": "glue", "task": a.task, "prefix": "glue/"}}
    c.checkpoint = {"every_steps": 1000, "keep": 2, "best_metric": metric, "best_mode": "max"}
    c.eval = {"every_steps": 1000, "num_batches": None, "evaluators": evaluators}
    return c
