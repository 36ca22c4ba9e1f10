"""Text-to-text training of T5 (or the original Transformer): summarisation or translation,
evaluated on generated text (beam search) with ROUGE or BLEU.

  jaxmm train --config configs/t5_text2text.py:data=cnn_dailymail,hf=/path/t5-small \
      --workdir runs/sum
  jaxmm train --config configs/t5_text2text.py:data=wmt14_translate/de-en,hf=/path/t5-small \
      --workdir runs/de-en
  jaxmm train --config configs/t5_text2text.py:size=tiny,data=synthetic,steps=300 --workdir /tmp/t

arg: ``data`` (``cnn_dailymail``, ``wmt14_translate/<pair>``, or ``synthetic``: reverse a
token sequence), ``model`` (``t5``, or ``transformer`` with sizes ``transformer-tiny`` /
``-base`` / ``-big``), ``size``, ``hf`` (a Hugging Face T5 folder to start from; its
tokenizer is used unless ``tokenizer`` is given), ``tokenizer``, ``vocab`` (the model's
vocabulary when training from scratch), ``src_len`` / ``tgt_len`` (token lengths),
``prefix`` (T5's task prefix; default the preset's, ``none`` for none), ``start`` /
``eos`` / ``pad`` (decoder start, end and padding ids: T5's 0 / 1 / 0 by default; set
them to your tokenizer's), ``metric`` (``rouge`` or ``bleu``; default ``rouge`` for
summarisation, ``bleu`` otherwise), ``beams``, ``length_penalty``, ``smoothing`` (label
smoothing), ``steps``, ``batch``, ``data_dir``.
"""

import ml_collections

from jaxmm.config import ConfigError
from jaxmm.train.run_config import data_section, parse_config_arg


def get_config(arg=None):
    a = parse_config_arg(arg, data="cnn_dailymail", model="t5", size="t5-small", hf="",
                         tokenizer="", vocab=0, src_len=512, tgt_len=128, prefix="", start=0,
                         eos=1, pad=0, metric="", beams=4, length_penalty=1.0, smoothing=0.1,
                         steps=20000, batch=32, data_dir="")
    if a.model not in ("t5", "transformer"):
        raise ConfigError(f"model must be t5 or transformer; got {a.model!r}.")
    synthetic = a.data == "synthetic"
    c = ml_collections.ConfigDict()
    c.task = {"name": "seq2seq", "label_smoothing": a.smoothing}
    size = a.size if a.model == "t5" or a.size.startswith("transformer") else "transformer-base"
    ids = {"decoder_start_token_id": a.start, "eos_token_id": a.eos, "pad_token_id": a.pad}
    if synthetic:  # the synthetic layout's ids: pad 0, bos 1, eos 2
        ids = {"decoder_start_token_id": 1, "eos_token_id": 2, "pad_token_id": 0}
    c.model = {"name": a.model, "size": size, "config": dict(ids)}
    if a.vocab:
        c.model.config.vocab_size = a.vocab
    c.init = {"hf": a.hf or None}
    c.tokenizer = a.tokenizer or a.hf or None
    c.num_steps, c.batch_size = a.steps, a.batch
    prefix = {"": None, "none": ""}.get(a.prefix, a.prefix)
    c.data = data_section(a.data, accepts=("text2text",), synthetic={"seq_len": a.src_len},
                          max_length=a.src_len, target_length=a.tgt_len, prefix=prefix,
                          start_id=a.start, pad_id=a.pad, data_dir=a.data_dir or None)
    metric = a.metric or ("rouge" if a.data == "cnn_dailymail" else "bleu")
    c.optimizer = {"name": "adamw", "learning_rate": 3e-4 if a.hf else 1e-3,
                   "weight_decay": 0.01, "clip_norm": 1.0}
    c.schedule = {"name": "linear", "warmup_steps": a.steps // 20}
    best = "eval/text/" + ("rougeL" if metric == "rouge" else "bleu")
    c.checkpoint = {"every_steps": 1000, "keep": 2, "best_metric": best, "best_mode": "max"}
    c.eval = {"every_steps": 1000, "num_batches": 20,
              "evaluators": {"text": {"type": "text2text", "metric": metric, "prefix": "text/",
                                      "num_beams": a.beams, "length_penalty": a.length_penalty,
                                      "max_new_tokens": a.tgt_len,
                                      "num_batches": 8}}}
    return c
