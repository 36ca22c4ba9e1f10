"""Data configs: the built-in scenes and catalog datasets, with task batch layouts.

``data_config(name, **kwargs)`` returns an ``ml_collections.ConfigDict`` for
:func:`jaxmm.data.make_iterator`. Each preset picks the preprocessing that
yields its task's batch layout (keys as in the team data contract):

=====================  ===============================================================
task                   batch keys
=====================  ===============================================================
classification         image (float32, [-1, 1]), label
captioning             image, input_ids, attention_mask, labels (-100 at padding), image_id
retrieval              image, input_ids, attention_mask, image_id (eval: all captions,
                       ``(B, C, T)`` ids)
vqa                    image, input_ids, attention_mask (question), label (answer index
                       in ``scenes.ANSWERS``); eval: ``(B, Q, T)`` questions, label ``(B, Q)``
speech                 audio (float32, 16 kHz, padded), audio_mask, input_ids,
                       attention_mask, labels (transcript)
audio_text             audio, audio_mask, input_ids, attention_mask, image_id
text_classification    input_ids, attention_mask[, token_type_ids], label (float32
                       for the regression task stsb)
extractive_qa          input_ids, attention_mask, token_type_ids, start_positions,
                       end_positions (train: one doc-stride window per row; eval: all
                       windows ``(B, W, T)`` + offsets, id, context, answers/text)
language_modeling      input_ids, attention_mask, labels
masked_lm              input_ids, attention_mask (the MLM task masks them on device)
=====================  ===============================================================

Catalog datasets are never downloaded: prepare them where you have the data
(``tfds build NAME --file_format array_record``) and point ``data_dir`` at it.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import ml_collections

from jaxmm.config import ConfigError, nearest
from jaxmm.data import scenes as scenes_lib
from jaxmm.registry import Registry

__all__ = ["PRESETS", "data_config", "names"]

# Dataset presets by name: each returns a data config (``jaxmm.data.make_iterator``).
PRESETS: Registry[Callable[..., ml_collections.ConfigDict]] = Registry(
    "dataset preset", config_key="data.name")

_SCENES_TASKS = ("classification", "captioning", "retrieval", "vqa", "speech", "audio_text")
_TFDS_HINT = ("tfds build {name} --data_dir {{data_dir}} --file_format array_record "
              "(run it where the source files are; jaxmm never downloads)")


def _default_data_dir() -> str | None:
    return os.environ.get("JAXMM_DATA_DIR") or None


def _cfg(name: str, pp_train: str, pp_eval: str, *, data_dir: str | None, task: str,
         prepare: str, splits: dict | None = None,
         description: str = "") -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.name = name
    c.data_dir = data_dir if data_dir is not None else _default_data_dir()
    c.task = task
    c.pp_train = pp_train
    c.pp_eval = pp_eval
    c.splits = dict(splits or {})
    c.prepare = prepare
    c.read_chunk = 64
    c.description = description
    return c


def _image_pp(size: int, train: bool, crop: str = "resize") -> str:
    if crop == "inception" and train:
        return f"decode|inception_crop({size})|flip_lr|value_range(-1, 1)"
    if crop == "inception":
        return f"decode|resize_small({int(size * 1.143)})|central_crop({size})|value_range(-1, 1)"
    return f"decode|resize({size})|value_range(-1, 1)"


def _captions(image: str, captions_key: str, max_length: int, train: bool, task: str,
              num_eval_captions: int) -> str:
    if train or task == "captioning":
        text = (f"choose('{captions_key}', 'text')" if train
                else f"select('{captions_key}', 0, 'text')")
        pp = f"{image}|{text}|tokenize({max_length}, key='text')"
        if task == "captioning":
            pp += "|lm_labels"
            return pp + "|keep('image', 'input_ids', 'attention_mask', 'labels', 'image_id')"
        return pp + "|keep('image', 'input_ids', 'attention_mask', 'image_id')"
    return (f"{image}|pad_to('{captions_key}', {num_eval_captions}, value='')"
            f"|tokenize({max_length}, key='{captions_key}')"
            "|keep('image', 'input_ids', 'attention_mask', 'image_id')")


@PRESETS.register('scenes')
def scenes(task: str = "captioning", size: str = "small", data_dir: str | None = None,
           image_size: int = 64, max_length: int = 24, audio_seconds: float = 3.0,
           **_: Any) -> ml_collections.ConfigDict:
    """The built-in ``jaxmm_scenes`` dataset for one of :data:`_SCENES_TASKS`."""
    if task not in _SCENES_TASKS:
        raise ConfigError(f"Unknown scenes task {task!r}; choose one of {_SCENES_TASKS}.")
    image = f"resize({image_size})|value_range(-1, 1)"
    image_train = f"resize({image_size})|flip_lr|value_range(-1, 1)" if task in (
        "classification",) else image
    if task == "classification":
        keep = "|keep('image', 'label')"
        train, evaluate = image_train + keep, image + keep
    elif task in ("captioning", "retrieval"):
        train = _captions(image, "captions", max_length, True, task, 5)
        evaluate = _captions(image, "captions", max_length, False, task, 5)
    elif task == "vqa":
        answers = "'" + "', '".join(scenes_lib.ANSWERS) + "'"
        train = (f"{image}|choose(('questions', 'answers'), ('question', 'answer'))"
                 f"|tokenize({max_length}, key='question')"
                 f"|lookup('answer', [{answers}], 'label')"
                 "|keep('image', 'input_ids', 'attention_mask', 'label', 'image_id')")
        evaluate = (f"{image}|tokenize({max_length}, key='questions')"
                    f"|lookup('answers', [{answers}], 'label')"
                    "|keep('image', 'input_ids', 'attention_mask', 'label', 'image_id',"
                    " 'answers', 'question_types')")
    else:
        samples = int(audio_seconds * 16000)
        audio = (f"rename(audio='speech')|audio_to_float"
                 f"|crop_or_pad({samples}, random=False, mask_key='audio_mask')")
        text = f"tokenize({max_length}, key='speech_text')"
        if task == "speech":
            keep = "|lm_labels|keep('audio', 'audio_mask', 'input_ids', 'attention_mask', 'labels')"
        else:
            keep = "|keep('audio', 'audio_mask', 'input_ids', 'attention_mask', 'image_id')"
        train = evaluate = f"{audio}|{text}{keep}"
    name = f"jaxmm_scenes/{size}"
    return _cfg(name, train, evaluate, data_dir=data_dir, task=task,
                prepare=f"jaxmm data build-builtin --data-dir {{data_dir}} --size {size}",
                description=f"built-in scenes, {task}")


@PRESETS.register('coco_captions')
def coco_captions(task: str = "captioning", data_dir: str | None = None, image_size: int = 224,
                  max_length: int = 32, **_: Any) -> ml_collections.ConfigDict:
    """tfds ``coco_captions`` (Karpathy splits): captioning or retrieval."""
    if task not in ("captioning", "retrieval"):
        raise ConfigError(f"coco_captions supports captioning/retrieval, not {task!r}.")
    image = _image_pp(image_size, False)
    pre = "rename(image_id='image/id')|"
    return _cfg(
        "coco_captions",
        pre + _captions(_image_pp(image_size, True), "captions/text", max_length, True, task, 5),
        pre + _captions(image, "captions/text", max_length, False, task, 5),
        data_dir=data_dir, task=task,
        prepare=_TFDS_HINT.format(name="coco_captions") + "; or from local files: jaxmm data "
        "build-coco --images DIR --annotations captions.json --data-dir {data_dir}",
    )


@PRESETS.register('imagenet2012')
def imagenet2012(data_dir: str | None = None, image_size: int = 224,
                 **_: Any) -> ml_collections.ConfigDict:
    keep = "|keep('image', 'label')"
    return _cfg("imagenet2012", _image_pp(image_size, True, "inception") + keep,
                _image_pp(image_size, False, "inception") + keep, data_dir=data_dir,
                task="classification",
                prepare=_TFDS_HINT.format(name="imagenet2012") + " with the ImageNet tar files "
                "in --manual_dir")


_GLUE = {
    "sst2": ("sentence", None),
    "cola": ("sentence", None),
    "mrpc": ("sentence1", "sentence2"),
    "stsb": ("sentence1", "sentence2"),
    "qqp": ("question1", "question2"),
    "mnli": ("premise", "hypothesis"),
    "qnli": ("question", "sentence"),
    "rte": ("sentence1", "sentence2"),
    "wnli": ("sentence1", "sentence2"),
}


@PRESETS.register('glue')
def glue(task: str = "sst2", data_dir: str | None = None, max_length: int = 128,
         **_: Any) -> ml_collections.ConfigDict:
    """tfds ``glue/<task>``: sentence (pair) classification; stsb is regression."""
    if task not in _GLUE:
        raise ConfigError(f"Unknown GLUE task {task!r}; choose one of {sorted(_GLUE)}.")
    first, second = _GLUE[task]
    pair = f", pair_key='{second}'" if second else ""
    label = "cast('label', 'float32')|" if task == "stsb" else ""
    pp = (f"tokenize({max_length}, key='{first}'{pair})|{label}"
          "keep('input_ids', 'attention_mask', 'token_type_ids', 'label')")
    splits = {"validation": "validation_matched", "test": "test_matched"} if task == "mnli" else {}
    return _cfg(f"glue/{task}", pp, pp, data_dir=data_dir, task="text_classification",
                splits=splits, prepare=_TFDS_HINT.format(name=f"glue/{task}"))


_QA_KEYS = "'input_ids', 'attention_mask', 'token_type_ids', 'start_positions', 'end_positions'"


@PRESETS.register('squad')
def squad(data_dir: str | None = None, max_length: int = 384, stride: int | None = None,
          max_windows: int = 4, max_answers: int = 8, version: str = "v1.1",
          **_: Any) -> ml_collections.ConfigDict:
    """tfds ``squad`` (``version`` v1.1, or v2.0 with unanswerable questions): doc-stride
    windows of ``max_length`` tokens overlapping by ``stride`` (default ``max_length // 3``,
    Hugging Face's 128 for 384; :mod:`jaxmm.data.qa`).

    Training takes one random window per example (``(B, T)`` rows); evaluation keeps
    all ``max_windows`` windows (``(B, W, T)``) with their character ``offsets``, the
    example ``id``, ``context`` and up to ``max_answers`` gold ``answers/text``
    (``''``-padded) for the ``squad`` evaluator.
    """
    if version not in ("v1.1", "v2.0"):
        raise ConfigError(f"Unknown SQuAD version {version!r}; use 'v1.1' or 'v2.0'.")
    stride = max_length // 3 if stride is None else stride
    if not 0 <= stride < max_length // 2:
        raise ConfigError(f"squad: stride={stride} must be in [0, max_length // 2) = "
                          f"[0, {max_length // 2}) so each window holds new context.")
    windows = f"squad_windows({max_length}, stride={stride}, max_windows={max_windows})"
    train = f"{windows}|choose_window|keep({_QA_KEYS})"
    evaluate = (f"{windows}|pad_to('answers/text', {max_answers}, value='')"
                f"|keep({_QA_KEYS}, 'offsets', 'id', 'context', 'answers/text')")
    name = "squad" if version == "v1.1" else f"squad/{version}"
    return _cfg(name, train, evaluate, data_dir=data_dir, task="extractive_qa",
                prepare=_TFDS_HINT.format(name=name))


@PRESETS.register('librispeech')
def librispeech(data_dir: str | None = None, max_length: int = 128, audio_seconds: float = 16.0,
                **_: Any) -> ml_collections.ConfigDict:
    """tfds ``librispeech``: 16 kHz speech and transcripts (lower-cased)."""
    samples = int(audio_seconds * 16000)
    pp = (f"rename(audio='speech')|audio_to_float|crop_or_pad({samples}, random=False, "
          f"mask_key='audio_mask')|lowercase('text')|tokenize({max_length}, key='text')|lm_labels"
          "|keep('audio', 'audio_mask', 'input_ids', 'attention_mask', 'labels')")
    return _cfg("librispeech", pp, pp, data_dir=data_dir, task="speech",
                splits={"train": "train_clean100", "validation": "dev_clean",
                        "test": "test_clean"},
                prepare=_TFDS_HINT.format(name="librispeech") + "; or from local files: jaxmm "
                "data build-audio --manifest manifest.jsonl --data-dir {data_dir}")


@PRESETS.register('lm1b')
def lm1b(task: str = "language_modeling", data_dir: str | None = None, max_length: int = 128,
         **_: Any) -> ml_collections.ConfigDict:
    """tfds ``lm1b``: one-billion-word sentences for causal (``language_modeling``)
    or masked (``masked_lm``: no labels; the MLM task masks on device) language
    modelling."""
    if task == "language_modeling":
        pp = (f"tokenize({max_length}, key='text')|lm_labels"
              "|keep('input_ids', 'attention_mask', 'labels')")
    elif task == "masked_lm":
        pp = f"tokenize({max_length}, key='text')|keep('input_ids', 'attention_mask')"
    else:
        raise ConfigError(f"lm1b supports language_modeling/masked_lm, not {task!r}.")
    return _cfg("lm1b", pp, pp, data_dir=data_dir, task=task,
                splits={"validation": "test"},
                prepare=_TFDS_HINT.format(name="lm1b") + "; or from local text: jaxmm data "
                "build-text --input corpus.txt --data-dir {data_dir}")


def names() -> list[str]:
    return PRESETS.names() + [f"glue/{t}" for t in sorted(_GLUE)]


def data_config(name: str, **kwargs: Any) -> ml_collections.ConfigDict:
    """A data config by name: ``scenes``, ``coco_captions``, ``imagenet2012``,
    ``glue/<task>``, ``squad``, ``librispeech``, ``lm1b``; ``kwargs`` as each
    preset's function takes (``task``, ``size``, ``data_dir``, ``max_length``, ...).
    """
    base, _, sub = name.partition("/")
    if base not in PRESETS:
        close = nearest(name, names())
        hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
        raise ConfigError(f"Unknown dataset {name!r}.{hint} Known: {', '.join(names())}.")
    if sub:
        kwargs = {"task": sub, **kwargs}
    return PRESETS.get(base)(**kwargs)
