"""Named-entity recognition: BERT token classification, scored with seqeval entity F1.

  # CoNLL-2003 from tfds (prepared with `tfds build conll2003 --file_format array_record`),
  # fine-tuning a Hugging Face BERT folder (its tokenizer is used):
  jaxmm train --config configs/ner_bert.py:base,hf=/ckpt/bert-base-cased --workdir runs/ner \\
      --config.data.data_dir=/data/tfds
  # your own CoNLL files (`jaxmm data build-conll ... --name mine --classes O,B-X,I-X`),
  # a model trained from scratch with its own tokenizer:
  jaxmm train --config configs/ner_bert.py:tiny,data=conll/mine,labels=O+B-X+I-X,tokenizer=tok,\\
vocab=8000,data_dir=data --workdir /tmp/ner
  # no data at all (per-token synthetic tags; checks the plumbing):
  jaxmm train --config configs/ner_bert.py:tiny,data=synthetic,steps=50 --workdir /tmp/ner

arg: ``size``, ``hf`` (a Hugging Face BERT folder to start from; its tokenizer is used
unless ``tokenizer`` is given), ``tokenizer``, ``vocab`` (the model's vocabulary when
training from scratch: the tokenizer's size), ``data`` (``conll2003``, ``conll/NAME``
for a local CoNLL dataset, or ``synthetic``), ``data_dir``, ``labels`` (the dataset's
tags in class-id order, ``+``-separated; default: the CoNLL-2003 tags; the model gets
one class per tag and the ``ner`` evaluator names entities with them), ``seq_len``,
``steps``, ``batch``, ``lr``.
"""

import ml_collections

from jaxmm.data.catalog import CONLL2003_NER_TAGS
from jaxmm.train.run_config import data_section, parse_config_arg


def get_config(arg=None):
    a = parse_config_arg(arg, size="base", hf="", tokenizer="", vocab=0, data="conll2003",
                         data_dir="", labels="+".join(CONLL2003_NER_TAGS), seq_len=128,
                         steps=3000, batch=32, lr=0.0)
    labels = tuple(t for t in a.labels.split("+") if t)
    c = ml_collections.ConfigDict()
    c.task = {"name": "token_classification"}
    c.model = {"name": "bert_token_classifier", "size": a.size,
               "config": {"num_labels": len(labels)}}
    if a.data == "synthetic" or a.vocab:
        c.model.config.vocab_size = a.vocab or 64
    c.init = {"hf": a.hf or None}
    c.num_steps, c.batch_size = a.steps, a.batch
    c.tokenizer = a.tokenizer or a.hf or None
    c.data = data_section(a.data, accepts=("token_classification",),
                          synthetic={"seq_len": a.seq_len}, max_length=a.seq_len,
                          data_dir=a.data_dir or None)
    c.optimizer = {"name": "adamw", "learning_rate": a.lr or (5e-5 if a.hf else 1e-4),
                   "weight_decay": 0.01, "clip_norm": 1.0}
    c.schedule = {"name": "linear", "warmup_steps": a.steps // 10}
    c.checkpoint = {"every_steps": 1000, "keep": 2, "best_metric": "eval/ner/f1",
                    "best_mode": "max"}
    c.eval = {"every_steps": 1000, "num_batches": 8 if a.data == "synthetic" else None,
              "evaluators": {"ner": {"type": "ner", "label_names": labels}}}
    return c
