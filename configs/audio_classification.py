"""Audio classification with an Audio Spectrogram Transformer (AST) on log-mel features.

  jaxmm train --config configs/audio_classification.py:tiny,data=crema_d,data_dir=DIR \
      --workdir runs/emotions                           # tfds crema_d: 6 speech emotions
  jaxmm train --config configs/audio_classification.py:base,data=audio_labels/NAME,classes=N \
      --config.data.data_dir=DIR --workdir runs/audio   # jaxmm data build-audio-labels
  jaxmm train --config configs/audio_classification.py:tiny --workdir /tmp/ast  # synthetic

The task turns the 16 kHz waveforms into the model's log-mel features on device
(``num_mel_bins`` x ``max_frames`` at a 10 ms hop: ``tiny`` 16 x 64, ``base`` AST's 128 x
1024). Options: ``size`` (``tiny``, ``base``), ``data`` (``crema_d``,
``audio_labels/NAME``, ``synthetic``), ``classes`` (default: crema_d's 6), ``seconds``
(clip length), ``steps``, ``batch``, ``lr``, ``data_dir``.
"""

import ml_collections

from jaxmm.train.run_config import data_section, parse_config_arg

_CLASSES = {"crema_d": 6, "synthetic": 10}


def get_config(arg=None):
    a = parse_config_arg(arg, size="tiny", data="synthetic", classes=0, seconds=5.0,
                         steps=5000, batch=32, lr=0.0, data_dir="")
    classes = a.classes or _CLASSES.get(a.data)
    if not classes:
        raise ValueError(f"data={a.data!r}: pass classes=N (the number of labels; jaxmm data "
                         "build-audio-labels prints them).")
    c = ml_collections.ConfigDict()
    c.task = {"name": "classification", "modality": "audio", "label_smoothing": 0.1}
    c.model = {"name": "ast_classifier", "size": a.size, "config": {"num_labels": classes}}
    c.num_steps, c.batch_size = a.steps, a.batch
    c.data = data_section(a.data, accepts=("audio_classification",),
                          synthetic={"num_classes": classes}, data_dir=a.data_dir or None,
                          audio_seconds=a.seconds)
    c.optimizer = {"name": "adamw", "learning_rate": a.lr or (1e-3 if a.size == "tiny" else 5e-5),
                   "weight_decay": 0.05, "clip_norm": 1.0}
    c.schedule = {"name": "cosine", "warmup_steps": min(500, a.steps // 10)}
    c.checkpoint = {"every_steps": 1000, "best_metric": "eval/accuracy", "best_mode": "max"}
    c.eval = {"every_steps": 1000, "num_batches": 10}
    return c
