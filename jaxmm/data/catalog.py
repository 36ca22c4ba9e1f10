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
audio_classification   audio, audio_mask, label
text_classification    input_ids, attention_mask[, token_type_ids], label (float32
                       for the regression task stsb)
extractive_qa          input_ids, attention_mask, token_type_ids, start_positions,
                       end_positions (train: one doc-stride window per row; eval: all
                       windows ``(B, W, T)`` + offsets, id, context, answers/text)
language_modeling      input_ids, attention_mask, labels
masked_lm              input_ids, attention_mask (the MLM task masks them on device)
pretraining            input_ids, attention_mask, token_type_ids, next_sentence_label
                       (BERT sentence pairs built in the pipeline from multi-sentence
                       documents, see jaxmm.data.nsp; MLM masking on device)
text2text              input_ids, attention_mask (source), decoder_input_ids,
                       decoder_attention_mask, labels (target); eval also references
                       (the target text)
token_classification   input_ids, attention_mask[, token_type_ids], labels (word tag on
                       each word's first sub-word, -100 elsewhere)
detection              image, boxes (B, N, 4) normalised cxcywh, labels (B, N),
                       box_mask (B, N) (1 = a real object), image_id
video_classification   video (float32 (T, H, W, 3), [-1, 1]), label
video_captioning,      as captioning and retrieval with ``video`` for ``image``
video_retrieval
audio_captioning,      as captioning and retrieval with ``audio``, ``audio_mask`` for ``image``
audio_retrieval
=====================  ===============================================================

Catalog datasets are never downloaded: prepare them where you have the data
(``tfds build NAME --file_format array_record``) and point ``data_dir`` at it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

import ml_collections

from jaxmm.config import ConfigError, nearest
from jaxmm.data import scenes as scenes_lib
from jaxmm.registry import Registry

__all__ = ["CONLL2003_NER_TAGS", "PRESETS", "data_config", "names"]

# Dataset presets by name: each returns a data config (``jaxmm.data.make_iterator``).
PRESETS: Registry[Callable[..., ml_collections.ConfigDict]] = Registry(
    "dataset preset", config_key="data.name")

# The CoNLL-2003 NER tags in the class-id order of tfds ``conll2003`` (IOB2).
CONLL2003_NER_TAGS = ("O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC",
                      "I-MISC")
_SCENES_TASKS = ("classification", "captioning", "retrieval", "vqa", "speech", "audio_text",
                 "detection")
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
              num_eval_captions: int, foils: Sequence[str] = (), media: str = "image") -> str:
    """The captioning/retrieval pipeline after ``image`` (the pixels' ops); ``media``:
    the pixel field (``image`` or ``video``)."""
    return _captions_pp(image, captions_key, max_length, train, task, num_eval_captions,
                        foils).replace("keep('image'", f"keep('{media}'")


def _captions_pp(image: str, captions_key: str, max_length: int, train: bool, task: str,
                 num_eval_captions: int, foils: Sequence[str]) -> str:
    if train or task == "captioning":
        text = (f"choose('{captions_key}', 'text')" if train
                else f"select('{captions_key}', 0, 'text')")
        pp = f"{image}|{text}|tokenize({max_length}, key='text')"
        if task == "captioning":
            pp += "|lm_labels"
            return pp + "|keep('image', 'input_ids', 'attention_mask', 'labels', 'image_id')"
        keep = "'image', 'input_ids', 'attention_mask', 'image_id'"
        if train and foils:  # hard-negative captions for task.hard_negatives='foil_'
            pp += (f"|swap_words({tuple(foils)!r})"
                   f"|tokenize({max_length}, key='foil_text', prefix='foil_')")
            keep += ", 'foil_input_ids', 'foil_attention_mask'"
        return pp + f"|keep({keep})"
    return (f"{image}|pad_to('{captions_key}', {num_eval_captions}, value='')"
            f"|tokenize({max_length}, key='{captions_key}')"
            "|keep('image', 'input_ids', 'attention_mask', 'image_id')")


@PRESETS.register('scenes')
def scenes(task: str = "captioning", size: str = "small", data_dir: str | None = None,
           image_size: int = 64, max_length: int = 24, audio_seconds: float = 3.0,
           foils: Sequence[str] = (), **_: Any) -> ml_collections.ConfigDict:
    """The built-in ``jaxmm_scenes`` dataset for one of :data:`_SCENES_TASKS`.

    ``foils`` (retrieval): words such as the shape names whose swap makes a hard-negative
    caption of each training example (``foil_input_ids``, ``foil_attention_mask``; the
    ``swap_words`` op), for the contrastive task's ``hard_negatives='foil_'``."""
    if foils and task != "retrieval":
        raise ConfigError(f"scenes: foils apply to the retrieval task, not {task!r}.")
    if task not in _SCENES_TASKS:
        raise ConfigError(f"Unknown scenes task {task!r}; choose one of {_SCENES_TASKS}.")
    image = f"resize({image_size})|value_range(-1, 1)"
    image_train = f"resize({image_size})|flip_lr|value_range(-1, 1)" if task in (
        "classification",) else image
    if task == "classification":
        keep = "|keep('image', 'label')"
        train, evaluate = image_train + keep, image + keep
    elif task == "detection":  # boxes from the objects' geometry, before the resize
        train = evaluate = (f"scene_boxes(9)|{image}"
                            "|keep('image', 'boxes', 'labels', 'box_mask', 'image_id')")
    elif task in ("captioning", "retrieval"):
        train = _captions(image, "captions", max_length, True, task, 5, foils)
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
        "build-coco --root DIR --split train=captions.json:images --data-dir {data_dir}",
    )


def _detection(name: str, image_size: int, max_objects: int, data_dir: str | None,
               prepare: str, description: str) -> ml_collections.ConfigDict:
    """Detection from tfds-style objects: boxes made before the (square) resize, flipped
    with the image in training."""
    boxes = f"decode|tfds_boxes({max_objects})"
    image = f"resize({image_size})|value_range(-1, 1)|rename(image_id='image/id')"
    keep = "|keep('image', 'boxes', 'labels', 'box_mask', 'image_id')"
    return _cfg(name, f"{boxes}|flip_lr(boxes='boxes')|{image}{keep}", f"{boxes}|{image}{keep}",
                data_dir=data_dir, task="detection", prepare=prepare, description=description)


@PRESETS.register('coco')
def coco(version: str = "2017", task: str = "detection", data_dir: str | None = None,
         image_size: int = 512, max_objects: int = 100, **_: Any) -> ml_collections.ConfigDict:
    """tfds ``coco/<version>`` (``2017``, ``2014``) object detection: 80 classes, boxes as
    the detection task reads them, images resized to ``image_size`` squares (normalised
    boxes are unchanged by the resize), random flips in training."""
    if version not in ("2017", "2014"):
        raise ConfigError(f"Unknown coco version {version!r}; use coco/2017 or coco/2014.")
    if task != "detection":
        raise ConfigError(f"coco/{version} is a detection dataset, not {task!r}; "
                          "captions are coco_captions.")
    return _detection(f"coco/{version}", image_size, max_objects, data_dir,
                      _TFDS_HINT.format(name=f"coco/{version}") + "; or from local files: "
                      "jaxmm data build-coco-detection --root DIR --data-dir {data_dir} "
                      "--name NAME --split train=instances_train2017.json:train2017, then "
                      "data=coco_detection/NAME", f"COCO {version} detection")


@PRESETS.register('coco_detection')
def coco_detection(dataset: str | None = None, task: str = "detection",
                   data_dir: str | None = None, image_size: int = 512, max_objects: int = 100,
                   **_: Any) -> ml_collections.ConfigDict:
    """A COCO-format detection dataset built with ``jaxmm data build-coco-detection``."""
    if not dataset:
        raise ConfigError("coco_detection needs the name of a dataset built with 'jaxmm data "
                          "build-coco-detection': data=coco_detection/NAME.")
    if task != "detection":
        raise ConfigError(f"coco_detection/{dataset} is a detection dataset, not {task!r}.")
    return _detection(f"jaxmm_local_coco_detection/{dataset}", image_size, max_objects,
                      data_dir, "jaxmm data build-coco-detection --root DIR --data-dir "
                      f"{{data_dir}} --name {dataset} --split train=INSTANCES.json:IMAGES",
                      f"local COCO detection dataset {dataset}")


@PRESETS.register('flickr30k')
def flickr30k(task: str = "captioning", data_dir: str | None = None, image_size: int = 224,
              max_length: int = 32, **_: Any) -> ml_collections.ConfigDict:
    """Flickr30k with Karpathy's splits (29k/1k/1k images, 5 captions each), built from
    ``dataset_flickr30k.json`` and the images with ``jaxmm data build-karpathy``:
    captioning or retrieval."""
    if task not in ("captioning", "retrieval"):
        raise ConfigError(f"flickr30k supports captioning/retrieval, not {task!r}.")
    return _cfg(
        "jaxmm_local_karpathy/flickr30k",
        _captions(_image_pp(image_size, True), "captions", max_length, True, task, 5),
        _captions(_image_pp(image_size, False), "captions", max_length, False, task, 5),
        data_dir=data_dir, task=task,
        prepare="jaxmm data build-karpathy --root DIR --data-dir {data_dir} --name flickr30k "
        + " ".join(f"--split {s}=dataset_flickr30k.json:flickr30k-images"
                   for s in ("train", "validation", "test")),
        description="Flickr30k, Karpathy splits")


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

    Training takes every window of every example as a row (``(B, T)`` rows, through
    ``explode``; the windows of one example are adjacent in the stream); evaluation keeps
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
    train = f"{windows}|keep({_QA_KEYS}, 'num_windows')"
    evaluate = (f"{windows}|pad_to('answers/text', {max_answers}, value='')"
                f"|keep({_QA_KEYS}, 'offsets', 'id', 'context', 'answers/text')")
    name = "squad" if version == "v1.1" else f"squad/{version}"
    c = _cfg(name, train, evaluate, data_dir=data_dir, task="extractive_qa",
             prepare=_TFDS_HINT.format(name=name))
    # training rows: every window of every example (the rows of one example adjacent)
    c.explode = {"count": "num_windows", "keys": [k.strip(" '") for k in _QA_KEYS.split(",")]}
    return c


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


@PRESETS.register('crema_d')
def crema_d(data_dir: str | None = None, audio_seconds: float = 5.0,
            **_: Any) -> ml_collections.ConfigDict:
    """tfds ``crema_d``: speech emotion recognition (6 emotions, 16 kHz clips padded or cut
    to ``audio_seconds``, random crops in training)."""
    samples = int(audio_seconds * 16000)
    keep = "|keep('audio', 'audio_mask', 'label')"
    return _cfg("crema_d", f"audio_to_float|crop_or_pad({samples}, mask_key='audio_mask')" + keep,
                f"audio_to_float|crop_or_pad({samples}, random=False, mask_key='audio_mask')"
                + keep, data_dir=data_dir, task="audio_classification",
                prepare=_TFDS_HINT.format(name="crema_d") + "; or from local files: jaxmm data "
                "build-audio-labels --root DIR --split train=TABLE --data-dir {data_dir}",
                description="CREMA-D speech emotions")


@PRESETS.register('ucf101')
def ucf101(data_dir: str | None = None, num_frames: int = 8, image_size: int = 112,
           **_: Any) -> ml_collections.ConfigDict:
    """tfds ``ucf101``: action recognition (101 classes), clips of ``num_frames`` frames
    (random start and flips in training, centred for evaluation)."""
    keep = "|keep('video', 'label')"
    return _cfg("ucf101", _frames(num_frames, image_size, True) + keep,
                _frames(num_frames, image_size, False) + keep, data_dir=data_dir,
                task="video_classification",
                prepare=_TFDS_HINT.format(name="ucf101") + "; or from local files: jaxmm data "
                "build-video-labels --root DIR --split train=TABLE --data-dir {data_dir}",
                description="UCF101 actions")


def _lm(name: str, task: str, data_dir: str | None, max_length: int, prepare: str,
        splits: dict | None = None, key: str = "text") -> ml_collections.ConfigDict:
    """Causal (``language_modeling``), masked (``masked_lm``: no labels; the MLM task
    masks on device) language-model batches of the text field ``key``, or BERT
    pre-training sentence pairs (``pretraining``: each example one document)."""
    if task == "pretraining":
        c = _cfg(name, f"keep({key!r})", f"keep({key!r})", data_dir=data_dir, task=task,
                 splits=splits, prepare=prepare)
        c.nsp = {"length": max_length, "key": key}
        return c
    if task == "language_modeling":
        pp = (f"tokenize({max_length}, key={key!r})|lm_labels"
              "|keep('input_ids', 'attention_mask', 'labels')")
    elif task == "masked_lm":
        pp = f"tokenize({max_length}, key={key!r})|keep('input_ids', 'attention_mask')"
    else:
        raise ConfigError(f"{name} supports language_modeling, masked_lm and pretraining, "
                          f"not {task!r}.")
    return _cfg(name, pp, pp, data_dir=data_dir, task=task, splits=splits, prepare=prepare)


@PRESETS.register('lm1b')
def lm1b(task: str = "language_modeling", data_dir: str | None = None, max_length: int = 128,
         **_: Any) -> ml_collections.ConfigDict:
    """tfds ``lm1b``: one-billion-word sentences for causal (``language_modeling``)
    or masked (``masked_lm``: no labels; the MLM task masks on device) language
    modelling."""
    return _lm("lm1b", task, data_dir, max_length, splits={"validation": "test"},
               prepare=_TFDS_HINT.format(name="lm1b") + "; or from local text: jaxmm data "
               "build-text --root DIR --split train=corpus.txt --data-dir {data_dir}")


_C4 = ("en", "en.noclean", "realnewslike", "webtextlike")


@PRESETS.register('c4')
def c4(variant: str = "en", task: str = "language_modeling", data_dir: str | None = None,
       max_length: int = 512, **_: Any) -> ml_collections.ConfigDict:
    """tfds ``c4/<variant>`` (Colossal Clean Crawled Corpus, ``en`` by default): web text
    for causal or masked language modelling."""
    if variant not in _C4:
        raise ConfigError(f"Unknown c4 variant {variant!r}; choose one of {', '.join(_C4)}.")
    return _lm(f"c4/{variant}", task, data_dir, max_length,
               prepare=_TFDS_HINT.format(name=f"c4/{variant}") + " (with the Common Crawl "
               "files in --manual_dir, as tfds's c4 instructions say)")


@PRESETS.register('text')
def text(dataset: str | None = None, task: str = "language_modeling",
         data_dir: str | None = None, max_length: int = 128,
         **_: Any) -> ml_collections.ConfigDict:
    """``text/<name>``: a text corpus built with ``jaxmm data build-text --name <name>``
    (one example per line, or JSON lines), for causal or masked language modelling."""
    if not dataset:
        raise ConfigError("text needs the name of a dataset built with 'jaxmm data "
                          "build-text': data=text/NAME.")
    return _lm(f"jaxmm_local_text/{dataset}", task, data_dir, max_length,
               prepare="jaxmm data build-text --root DIR --data-dir {data_dir} "
               f"--name {dataset} --split train=train.txt --split validation=valid.txt")


@PRESETS.register('chat')
def chat(dataset: str | None = None, template: Any = "plain", data_dir: str | None = None,
         max_length: int = 256, packed: bool = False, pad_id: int = 0,
         **_: Any) -> ml_collections.ConfigDict:
    """``chat/<name>``: conversations built with ``jaxmm data build-chat --name <name>``,
    rendered with a chat template (``plain``, ``llama3``, ``chatml`` or a ``{role:
    format}`` dict) into causal-LM batches whose labels are the assistant replies only.
    ``packed``: training rows hold several whole conversations (each cut at a turn
    boundary to ``max_length``), with ``segment_ids`` and ``positions`` so attention
    stays inside each one (padding with ``pad_id``); evaluation stays one per row."""
    if not dataset:
        raise ConfigError("chat needs the name of a dataset built with 'jaxmm data "
                          "build-chat': data=chat/NAME.")
    from jaxmm.data.chat import get_template

    get_template(template)  # one line now for an unknown template, not inside tf.data
    pp = (f"chat({max_length}, template={template!r})"
          "|keep('input_ids', 'attention_mask', 'labels')")
    pp_train = (f"chat({max_length}, template={template!r}, pad=False)"
                "|keep('input_ids', 'labels')") if packed else pp
    c = _cfg(f"jaxmm_local_chat/{dataset}", pp_train, pp, data_dir=data_dir,
             task="language_modeling",
             prepare="jaxmm data build-chat --root DIR --data-dir {data_dir} "
             f"--name {dataset} --split train=train.jsonl --split validation=valid.jsonl")
    if packed:
        c.pack = {"length": max_length, "mode": "segments", "labels_key": "labels",
                  "pad_id": pad_id}
    return c


@PRESETS.register('wikitext103')
def wikitext103(task: str = "language_modeling", data_dir: str | None = None,
                max_length: int = 128, **_: Any) -> ml_collections.ConfigDict:
    """WikiText-103 (raw), built from its released files with ``jaxmm data build-text``
    (one example per non-empty line, article headings included)."""
    return _lm("jaxmm_local_text/wikitext103", task, data_dir, max_length,
               prepare="jaxmm data build-text --root wikitext-103-raw --data-dir {data_dir} "
               "--name wikitext103 --split train=wiki.train.raw --split "
               "validation=wiki.valid.raw --split test=wiki.test.raw")


def _tagging(name: str, task: str, max_length: int, data_dir: str | None, prepare: str,
             splits: dict | None = None) -> ml_collections.ConfigDict:
    if task != "token_classification":
        raise ConfigError(f"{name} supports token_classification, not {task!r}.")
    pp = (f"tokenize_words({max_length}, key='tokens', tags_key='ner')"
          "|keep('input_ids', 'attention_mask', 'token_type_ids', 'labels')")
    c = _cfg(name, pp, pp, data_dir=data_dir, task="token_classification", splits=splits,
             prepare=prepare, description="named-entity recognition (IOB2 tags)")
    return c


@PRESETS.register('conll2003')
def conll2003(task: str = "token_classification", data_dir: str | None = None,
              max_length: int = 128, **_: Any) -> ml_collections.ConfigDict:
    """tfds ``conll2003``: English NER, tags :data:`CONLL2003_NER_TAGS` (``ner`` feature)."""
    return _tagging("conll2003", task, max_length, data_dir, splits={"validation": "dev"},
                    prepare=_TFDS_HINT.format(name="conll2003") + "; or from local CoNLL "
                    "files: jaxmm data build-conll --root DIR --split train=train.txt "
                    "--split validation=valid.txt --data-dir {data_dir}")


@PRESETS.register('conll')
def conll(dataset: str = "default", task: str = "token_classification",
          data_dir: str | None = None, max_length: int = 128,
          **_: Any) -> ml_collections.ConfigDict:
    """A local CoNLL-format dataset built by ``jaxmm data build-conll --name NAME``
    (``conll/NAME``; ``conll``: the build's default name, ``default``)."""
    return _tagging(f"jaxmm_local_conll/{dataset}", task, max_length, data_dir,
                    prepare="jaxmm data build-conll --root DIR --split train=train.txt "
                    f"--split validation=valid.txt --name {dataset} --data-dir {{data_dir}}")


def _text2text(name: str, source: str, target: str, *, data_dir: str | None,
               max_length: int, target_length: int, prefix: str, start_id: int, pad_id: int,
               splits: dict | None = None, description: str = "") -> ml_collections.ConfigDict:
    """Source ``source`` -> target ``target`` batches for the ``seq2seq`` task."""
    if min(max_length, target_length) < 2:
        raise ConfigError(f"{name}: max_length and target_length must be >= 2; got "
                          f"{max_length}, {target_length}.")
    head = f"prepend_text({prefix!r}, key={source!r})|" if prefix else ""
    pp = (f"{head}tokenize({max_length}, key={source!r})"
          f"|tokenize({target_length}, key={target!r}, prefix='target_')"
          f"|decoder_targets({start_id}, key='target_input_ids', "
          f"mask_key='target_attention_mask', pad_id={pad_id})")
    fields = ("'input_ids', 'attention_mask', 'decoder_input_ids', 'decoder_attention_mask', "
              "'labels'")
    return _cfg(name, f"{pp}|keep({fields})",
                f"{pp}|copy({target!r}, 'references')|keep({fields}, 'references')",
                data_dir=data_dir, task="text2text", splits=splits,
                prepare=_TFDS_HINT.format(name=name), description=description)


@PRESETS.register('cnn_dailymail')
def cnn_dailymail(data_dir: str | None = None, max_length: int = 512, target_length: int = 128,
                  prefix: str = "summarize: ", start_id: int = 0, pad_id: int = 0,
                  **_: Any) -> ml_collections.ConfigDict:
    """tfds ``cnn_dailymail``: summarise ``article`` into ``highlights`` (the eval's
    references). ``prefix``: T5's task prefix (``""`` for none); ``start_id`` /
    ``pad_id``: the decoder start and padding ids (T5: both 0)."""
    return _text2text("cnn_dailymail", "article", "highlights", data_dir=data_dir,
                      max_length=max_length, target_length=target_length, prefix=prefix,
                      start_id=start_id, pad_id=pad_id, description="summarisation")


_WMT14 = {"cs-en": "Czech", "de-en": "German", "fr-en": "French", "hi-en": "Hindi",
          "ru-en": "Russian"}


@PRESETS.register('wmt14_translate')
def wmt14_translate(task: str = "de-en", data_dir: str | None = None, max_length: int = 128,
                    target_length: int = 128, prefix: str | None = None, start_id: int = 0,
                    pad_id: int = 0, **_: Any) -> ml_collections.ConfigDict:
    """tfds ``wmt14_translate/<pair>`` (``de-en``, ``fr-en``, ...): translate the
    pair's first language into English. ``prefix``: T5's task prefix (default
    ``"translate German to English: "``; ``""`` for none)."""
    if task not in _WMT14:
        raise ConfigError(f"Unknown wmt14_translate pair {task!r}; choose one of "
                          f"{', '.join(_WMT14)}.")
    source = task.split("-")[0]
    if prefix is None:
        prefix = f"translate {_WMT14[task]} to English: "
    return _text2text(f"wmt14_translate/{task}", source, "en", data_dir=data_dir,
                      max_length=max_length, target_length=target_length, prefix=prefix,
                      start_id=start_id, pad_id=pad_id, description="translation")


# Datasets built from local files (jaxmm data build-<format>), named "<preset>/<dataset>".
_LOCAL = {"text_labels": "text-labels", "image_labels": "image-labels",
          "image_captions": "image-captions", "audio_labels": "audio-labels", "conll": "conll",
          "video_labels": "video-labels", "video_captions": "video-captions",
          "audio_captions": "audio-captions"}


def _local(preset: str, dataset: str | None, data_dir: str | None, task: str, train: str,
           evaluate: str) -> ml_collections.ConfigDict:
    fmt = _LOCAL[preset]
    if not dataset:
        raise ConfigError(f"{preset} needs the name of a dataset built with 'jaxmm data "
                          f"build-{fmt}': data={preset}/NAME.")
    return _cfg(f"jaxmm_local_{fmt.replace('-', '_')}/{dataset}", train, evaluate,
                data_dir=data_dir, task=task,
                prepare=f"jaxmm data build-{fmt} --root DIR --data-dir {{data_dir}} "
                f"--name {dataset} --split train=TABLE --split validation=TABLE",
                description=f"local {fmt} dataset {dataset}")


@PRESETS.register('text_labels')
def text_labels(dataset: str | None = None, data_dir: str | None = None, max_length: int = 128,
                pair: bool = False, **_: Any) -> ml_collections.ConfigDict:
    """A (text[, text_pair], label) table built with ``jaxmm data build-text-labels``
    (``pair``: it has a second text)."""
    second = ", pair_key='text_pair'" if pair else ""
    pp = (f"tokenize({max_length}, key='text'{second})"
          "|keep('input_ids', 'attention_mask', 'token_type_ids', 'label')")
    return _local("text_labels", dataset, data_dir, "text_classification", pp, pp)


@PRESETS.register('image_labels')
def image_labels(dataset: str | None = None, data_dir: str | None = None, image_size: int = 224,
                 **_: Any) -> ml_collections.ConfigDict:
    """An (image, label) dataset built with ``jaxmm data build-image-labels``."""
    keep = "|keep('image', 'label')"
    return _local("image_labels", dataset, data_dir, "classification",
                  _image_pp(image_size, True) + keep, _image_pp(image_size, False) + keep)


@PRESETS.register('image_captions')
def image_captions(dataset: str | None = None, task: str = "captioning",
                   data_dir: str | None = None, image_size: int = 224, max_length: int = 32,
                   **_: Any) -> ml_collections.ConfigDict:
    """An (image, captions) dataset built with ``jaxmm data build-image-captions``:
    captioning or retrieval."""
    if task not in ("captioning", "retrieval"):
        raise ConfigError(f"image_captions supports captioning/retrieval, not {task!r}.")
    return _local("image_captions", dataset, data_dir, task,
                  _captions(_image_pp(image_size, True), "captions", max_length, True, task, 5),
                  _captions(_image_pp(image_size, False), "captions", max_length, False, task,
                            5))


@PRESETS.register('audio_labels')
def audio_labels(dataset: str | None = None, data_dir: str | None = None,
                 audio_seconds: float = 10.0, **_: Any) -> ml_collections.ConfigDict:
    """An (audio, label) dataset built with ``jaxmm data build-audio-labels``: 16 kHz
    audio padded or cut to ``audio_seconds``, with its mask."""
    samples = int(audio_seconds * 16000)
    pp = (f"audio_to_float|crop_or_pad({samples}, random=False, mask_key='audio_mask')"
          "|keep('audio', 'audio_mask', 'label')")
    return _local("audio_labels", dataset, data_dir, "audio_classification", pp, pp)


def _frames(num_frames: int, size: int, train: bool) -> str:
    """A clip of ``num_frames`` (random in training, centred in evaluation), resized."""
    flip = "|flip_lr(key='video')" if train else ""
    return (f"sample_frames({num_frames}, random={train})|resize({size}, key='video')"
            f"{flip}|value_range(-1, 1, key='video')")


@PRESETS.register('audio_captions')
def audio_captions(dataset: str | None = None, task: str = "captioning",
                   data_dir: str | None = None, audio_seconds: float = 10.0,
                   max_length: int = 32, **_: Any) -> ml_collections.ConfigDict:
    """An (audio, captions) dataset built with ``jaxmm data build-audio-captions``
    (AudioCaps / Clotho style): audio captioning or audio-text retrieval (``task``); 16
    kHz clips padded or cut to ``audio_seconds`` with their mask, and the captioning and
    retrieval text layouts."""
    if task not in ("captioning", "retrieval"):
        raise ConfigError(f"audio_captions supports captioning/retrieval, not {task!r}.")
    samples = int(audio_seconds * 16000)
    audio = (f"rename(image_id='audio_id')|audio_to_float|crop_or_pad({samples}, "
             "random=False, mask_key='audio_mask')")
    return _local("audio_captions", dataset, data_dir, f"audio_{task}", *(
        _captions(audio, "captions", max_length, train, task, 5, media="audio").replace(
            "keep('audio'", "keep('audio', 'audio_mask'") for train in (True, False)))


@PRESETS.register('video_labels')
def video_labels(dataset: str | None = None, data_dir: str | None = None,
                 num_frames: int = 8, image_size: int = 64,
                 **_: Any) -> ml_collections.ConfigDict:
    """A (video, label) dataset built with ``jaxmm data build-video-labels``: clips of
    ``num_frames`` stored frames, ``image_size`` squares."""
    keep = "|keep('video', 'label')"
    return _local("video_labels", dataset, data_dir, "video_classification",
                  _frames(num_frames, image_size, True) + keep,
                  _frames(num_frames, image_size, False) + keep)


@PRESETS.register('video_captions')
def video_captions(dataset: str | None = None, task: str = "captioning",
                   data_dir: str | None = None, num_frames: int = 8, image_size: int = 64,
                   max_length: int = 32, **_: Any) -> ml_collections.ConfigDict:
    """A (video, captions) dataset built with ``jaxmm data build-video-captions``
    (MSR-VTT style): video captioning or video-text retrieval (``task``); the batch
    layouts are captioning's and retrieval's with ``video`` for ``image``."""
    if task not in ("captioning", "retrieval"):
        raise ConfigError(f"video_captions supports captioning/retrieval, not {task!r}.")
    pre = "rename(image_id='video_id')|"
    return _local("video_captions", dataset, data_dir, f"video_{task}", *(
        pre + _captions(_frames(num_frames, image_size, train), "captions", max_length, train,
                        task, 5, media="video") for train in (True, False)))


# What ``<preset>/<sub>`` names: the argument the sub-name is passed as (default ``task``).
_SUB_ARG = {**dict.fromkeys(_LOCAL, "dataset"), "text": "dataset", "chat": "dataset",
            "c4": "variant", "coco": "version", "coco_detection": "dataset"}


def names() -> list[str]:
    return (PRESETS.names() + ["coco/2017", "coco/2014"] + [f"glue/{t}" for t in sorted(_GLUE)]
            + [f"wmt14_translate/{p}" for p in _WMT14] + [f"c4/{v}" for v in _C4])


def data_config(name: str, **kwargs: Any) -> ml_collections.ConfigDict:
    """A data config by name: ``scenes``, ``coco_captions``, ``coco/2017`` (detection),
    ``imagenet2012``, ``crema_d``, ``ucf101``,
    ``glue/<task>``, ``squad``, ``librispeech``, ``lm1b``, ``cnn_dailymail``,
    ``wmt14_translate/<pair>``, ``c4/<variant>``, ``wikitext103``, ``flickr30k``,
    ``conll2003``, and datasets built from local files: ``text/<name>``,
    ``text_labels/<name>``, ``image_labels/<name>``, ``image_captions/<name>``,
    ``audio_labels/<name>``, ``conll/<name>``, ``coco_detection/<name>``,
    ``video_labels/<name>``, ``video_captions/<name>``, ``audio_captions/<name>``;
    ``kwargs`` as each preset's function takes (``task``, ``size``, ``data_dir``,
    ``max_length``, ...).
    """
    base, _, sub = name.partition("/")
    if base not in PRESETS:
        close = nearest(name, names())
        hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
        raise ConfigError(f"Unknown dataset {name!r}.{hint} Known: {', '.join(names())}.")
    if sub:  # glue/<task>, wmt14_translate/<pair>, c4/<variant>; a local dataset's name
        kwargs = {_SUB_ARG.get(base, "task"): sub, **kwargs}
    return PRESETS.get(base)(**kwargs)
