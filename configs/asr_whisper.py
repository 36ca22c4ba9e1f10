"""Speech recognition: train or fine-tune Whisper on log-mel features.

  jaxmm train --config configs/asr_whisper.py:whisper-tiny,hf=/path/whisper-tiny --workdir runs/asr
  jaxmm train --config configs/asr_whisper.py:tiny,data=synthetic,steps=100 --workdir /tmp/asr
"""

import ml_collections

from jaxmm.train.run_config import data_section, parse_config_arg


def get_config(arg=None):
    a = parse_config_arg(arg, size="whisper-tiny", steps=5000, batch=32, data="synthetic",
                         hf="", tokenizer="", data_dir="",
                         seq_len=128)
    c = ml_collections.ConfigDict()
    c.task = {"name": "asr"}
    c.model = {"name": "whisper", "size": a.size, "config": {"dtype": "bfloat16"}}
    if a.data == "synthetic":
        c.model.config.update({"vocab_size": 64, "num_mel_bins": 16})
    c.init = {"hf": a.hf or None}
    c.num_steps, c.batch_size = a.steps, a.batch
    c.data = data_section(a.data, accepts=("speech",), synthetic={"seq_len": 16},
                          task="speech", max_length=a.seq_len, data_dir=a.data_dir or None)
    c.tokenizer = a.tokenizer or None
    c.optimizer = {"name": "adamw", "learning_rate": 1e-5 if a.hf else 1e-3, "clip_norm": 1.0}
    c.schedule = {"name": "linear", "warmup_steps": min(500, a.steps // 10)}
    c.checkpoint = {"every_steps": 1000}
    c.eval = {"every_steps": 1000, "num_batches": 10}
    return c
