"""Instruction / dialogue fine-tuning (SFT) of a GPT-2-style model on conversations, with
the loss on the assistant replies only.

  jaxmm data build-chat --root ~/dialogues --data-dir data --name help \\
      --split train=train.jsonl --split validation=valid.jsonl --template plain
  jaxmm train --config configs/sft_gpt.py:data=chat/help,hf=/path/gpt2,data_dir=data \\
      --workdir runs/sft

arg: ``data`` (``chat/NAME``, built with ``jaxmm data build-chat``; or ``synthetic``),
``template`` (``plain``, ``llama3`` or ``chatml``: :mod:`jaxmm.data.chat`), ``size``,
``hf`` (a Hugging Face GPT-2 folder to start from; its tokenizer is used unless
``tokenizer`` is given; GPT-2 has no pad token, so padding uses its eos id, masked out),
``tokenizer``, ``vocab`` (the model's vocabulary when training from scratch), ``seq_len``,
``steps``, ``batch``, ``data_dir``, ``pack`` (training rows hold several whole
conversations, cut at turn boundaries, attention kept inside each). The ``loss``
evaluator reports the loss and perplexity of the replies.
"""

import ml_collections

from jaxmm.train.run_config import data_section, parse_config_arg


def get_config(arg=None):
    a = parse_config_arg(arg, data="synthetic", template="plain", size="small", hf="",
                         tokenizer="", vocab=0, seq_len=256, steps=2000, batch=16,
                         data_dir="", pack=False)
    c = ml_collections.ConfigDict()
    c.task = {"name": "lm"}  # labels carry the reply mask: -100 elsewhere
    c.model = {"name": "gpt", "size": a.size, "config": {}}
    if a.vocab:
        c.model.config.vocab_size = a.vocab
    c.init = {"hf": a.hf or None}
    c.tokenizer = a.tokenizer or a.hf or None
    c.num_steps, c.batch_size = a.steps, a.batch
    c.data = data_section(a.data, accepts=("language_modeling",),
                          synthetic={"seq_len": a.seq_len}, max_length=a.seq_len,
                          template=a.template, data_dir=a.data_dir or None,
                          packed=a.pack or None)
    c.optimizer = {"name": "adamw", "learning_rate": 5e-5 if a.hf else 5e-4,
                   "weight_decay": 0.0, "clip_norm": 1.0}
    c.schedule = {"name": "cosine", "warmup_steps": a.steps // 20}
    c.checkpoint = {"every_steps": 500, "keep": 2, "best_metric": "eval/loss"}
    c.eval = {"every_steps": 500, "num_batches": 20}
    return c
