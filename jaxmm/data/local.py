"""Builders for data in common local formats -> tfds datasets (ArrayRecord).

* ``coco``: COCO-captions JSON (``images`` + ``annotations``) and an image folder;
  one example per image with all its captions.
* ``vqa``: VQA v2 questions JSON + annotations JSON + an image folder; one
  example per question with its 10 human answers.
* ``audio``: a JSON-lines manifest ``{"audio": "rel/path.wav", "text": "..."}``;
  audio is decoded, down-mixed and resampled to 16 kHz int16.
* ``text``: plain text (one example per non-empty line) or JSON lines.
* ``conll``: CoNLL-2003 style columns (``word POS chunk NER``, space separated;
  sentences separated by blank lines, ``-DOCSTART-`` lines ignored; the tag is
  the last column, so ``word TAG`` files work too). Features as tfds
  ``conll2003``: ``tokens``, ``pos``, ``chunks`` (strings) and ``ner`` (class
  labels named by ``labels``). A malformed line is reported as ``file:line`` and
  its sentence skipped and counted (or fails the build with ``on_corrupt="fail"``);
  a tag outside ``labels`` always fails, naming the tag and the list.

Each becomes ``<data_dir>/jaxmm_local_<format>/<name>/<version>``, read back
with ``data_config.name = "jaxmm_local_<format>/<name>"``. Paths in annotation
files and manifests must stay inside the dataset folder: absolute paths,
``..`` components and symlinks that leave it are refused. Corrupt images or
audio are skipped and counted (``on_corrupt="skip"``, counts in the dataset's
metadata and the returned summary) or fail the build (``on_corrupt="fail"``).
"""

from __future__ import annotations

import abc
import collections
import dataclasses
import io
import json
import logging
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import tensorflow_datasets as tfds

from jaxmm.data.catalog import CONLL2003_NER_TAGS
from jaxmm.data.sources import DataError

log = logging.getLogger(__name__)

__all__ = ["FORMATS", "build_local", "safe_path"]

SAMPLE_RATE = 16000


def safe_path(root: str, relative: str) -> str:
    """``root/relative``, refusing paths that leave ``root`` (absolute, ``..``, symlinks)."""
    if not isinstance(relative, str) or not relative:
        raise DataError(f"Empty or non-string path {relative!r} in the dataset files.")
    if os.path.isabs(relative) or re.match(r"^[a-zA-Z]:[\\/]", relative):
        raise DataError(f"Path {relative!r} is absolute; paths must be relative to {root}.")
    if ".." in re.split(r"[\\/]", relative):
        raise DataError(f"Path {relative!r} contains '..'; it must stay inside {root}.")
    real_root = os.path.realpath(root)
    full = os.path.realpath(os.path.join(real_root, relative))
    if os.path.commonpath([real_root, full]) != real_root:
        raise DataError(f"Path {relative!r} resolves to {full}, outside {root} "
                        "(symlink escape); refusing it.")
    return full


def _load_json(path: str) -> Any:
    if not os.path.isfile(path):
        raise DataError(f"Annotation file {path!r} does not exist.")
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise DataError(f"{path} is not valid JSON: {e}") from None


def _image_bytes(path: str) -> bytes:
    """Validated encoded image (JPEG/PNG kept as is, other formats -> PNG)."""
    from PIL import Image

    with open(path, "rb") as f:
        data = f.read()
    with Image.open(io.BytesIO(data)) as img:
        fmt = img.format
        img.load()
        if fmt in ("JPEG", "PNG") and img.mode in ("RGB", "L", "RGBA", "P"):
            return data
        out = io.BytesIO()
        img.convert("RGB").save(out, format="PNG")
        return out.getvalue()


def _audio_int16(path: str) -> np.ndarray:
    """Decoded audio, mono, resampled to 16 kHz, int16."""
    import soundfile as sf

    from jaxmm.audio_features import resample

    wave, rate = sf.read(path, dtype="float32", always_2d=True)
    wave = resample(wave.mean(axis=1), int(rate), SAMPLE_RATE)
    if wave.size == 0:
        raise ValueError("empty audio")
    return np.round(np.clip(wave, -1.0, 1.0) * 32767).astype(np.int16)


def _trailing_id(name: str) -> int | None:
    m = re.search(r"(\d+)$", os.path.splitext(name)[0])
    return int(m.group(1)) if m else None


@dataclasses.dataclass(eq=False)
class LocalConfig(tfds.core.BuilderConfig):
    """``splits``: split name -> {"annotations"/"questions"/"manifest"/"input": path, ...}."""

    splits: dict = dataclasses.field(default_factory=dict)
    root: str = ""
    on_corrupt: str = "skip"
    text_field: str = "text"
    labels: tuple = ()


class _LocalBuilder(tfds.core.GeneratorBasedBuilder):
    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.skipped: dict[str, list[str]] = collections.defaultdict(list)

    @abc.abstractmethod
    def _features(self) -> dict:
        """The tfds feature specs of one example."""

    @abc.abstractmethod
    def _records(self, split: str, spec: Mapping[str, str]) -> Iterator[tuple[Any, dict]]:
        """``(key, example)`` pairs of ``split`` from its ``spec`` paths."""

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(builder=self, description=__doc__,
                                     features=tfds.features.FeaturesDict(self._features()),
                                     metadata=tfds.core.MetadataDict(),
                                     # Keep the files' order (the pipeline shuffles if asked).
                                     disable_shuffling=True)

    def _split_generators(self, dl_manager):
        del dl_manager
        return {split: self._generate_examples(split, spec)
                for split, spec in self.builder_config.splits.items()}

    def _corrupt(self, split: str, path: str, error: Exception) -> None:
        if self.builder_config.on_corrupt == "fail":
            raise DataError(f"Corrupt file {path}: {type(error).__name__}: {error}. "
                            "Fix or remove it, or build with --on-corrupt skip.")
        log.warning("skipping corrupt file %s (%s)", path, error)
        self.skipped[split].append(path)

    def _generate_examples(self, split: str, spec: Mapping[str, str]):
        count = 0
        for key, example in self._records(split, spec):
            count += 1
            yield key, example
        if count == 0:
            raise DataError(f"Split {split!r} has no usable examples ({spec}).")
        self.info.metadata["skipped"] = {k: len(v) for k, v in self.skipped.items()}


class JaxmmLocalCoco(_LocalBuilder):
    """COCO-captions JSON + image folder."""

    def _features(self):
        return {"image": tfds.features.Image(shape=(None, None, 3)), "image_id": np.int64,
                "file_name": tfds.features.Text(),
                "captions": tfds.features.Sequence(tfds.features.Text())}

    def _records(self, split, spec):
        root = self.builder_config.root
        ann = _load_json(safe_path(root, spec["annotations"]))
        images_dir = spec.get("images", "")
        captions = collections.defaultdict(list)
        for a in ann.get("annotations", []):
            captions[a["image_id"]].append(str(a["caption"]).strip())
        for img in ann.get("images", []):
            path = safe_path(root, os.path.join(images_dir, img["file_name"]))
            if not captions.get(img["id"]):
                continue
            try:
                data = _image_bytes(path)
            except (OSError, ValueError, SyntaxError) as e:
                self._corrupt(split, path, e)
                continue
            yield img["id"], {"image": data, "image_id": img["id"],
                              "file_name": img["file_name"], "captions": captions[img["id"]]}


class JaxmmLocalVqa(_LocalBuilder):
    """VQA v2 questions + annotations JSON + image folder (one example per question)."""

    def _features(self):
        return {"image": tfds.features.Image(shape=(None, None, 3)), "image_id": np.int64,
                "question_id": np.int64, "question": tfds.features.Text(),
                "answers": tfds.features.Sequence(tfds.features.Text()),
                "multiple_choice_answer": tfds.features.Text(),
                "answer_type": tfds.features.Text()}

    def _records(self, split, spec):
        root = self.builder_config.root
        questions = _load_json(safe_path(root, spec["questions"]))["questions"]
        answers = {}
        if spec.get("annotations"):
            for a in _load_json(safe_path(root, spec["annotations"]))["annotations"]:
                answers[a["question_id"]] = a
        images_dir = safe_path(root, spec.get("images", "."))
        by_id = {}
        for name in sorted(os.listdir(images_dir)):
            image_id = _trailing_id(name)
            if image_id is not None:
                by_id[image_id] = os.path.relpath(os.path.join(images_dir, name),
                                                  os.path.realpath(root))
        cache: dict[int, bytes | None] = {}
        for q in questions:
            image_id = q["image_id"]
            if image_id not in by_id:
                raise DataError(f"No image for image_id {image_id} in {images_dir}.")
            if image_id not in cache:
                path = safe_path(root, by_id[image_id])
                try:
                    cache = {image_id: _image_bytes(path)}
                except (OSError, ValueError, SyntaxError) as e:
                    self._corrupt(split, path, e)
                    cache = {image_id: None}
            if cache[image_id] is None:
                continue
            a = answers.get(q["question_id"], {})
            yield q["question_id"], {
                "image": cache[image_id], "image_id": image_id, "question_id": q["question_id"],
                "question": q["question"],
                "answers": [x["answer"] for x in a.get("answers", [])],
                "multiple_choice_answer": a.get("multiple_choice_answer", ""),
                "answer_type": a.get("answer_type", ""),
            }


class JaxmmLocalAudio(_LocalBuilder):
    """JSON-lines manifest of audio files (relative paths) with transcripts."""

    def _features(self):
        return {"audio": tfds.features.Tensor(shape=(None,), dtype=np.int16, encoding="bytes"),
                "text": tfds.features.Text(), "id": tfds.features.Text()}

    def _records(self, split, spec):
        root = self.builder_config.root
        manifest = safe_path(root, spec["manifest"])
        if not os.path.isfile(manifest):
            raise DataError(f"Manifest {manifest!r} does not exist.")
        with open(manifest, encoding="utf-8") as f:
            for line_no, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    entry = json.loads(line)
                except json.JSONDecodeError as e:
                    raise DataError(f"{manifest}:{line_no} is not valid JSON: {e}") from None
                if "audio" not in entry or "text" not in entry:
                    raise DataError(f"{manifest}:{line_no} needs 'audio' and 'text' fields.")
                path = safe_path(root, entry["audio"])
                try:
                    audio = _audio_int16(path)
                except (OSError, ValueError, RuntimeError) as e:
                    self._corrupt(split, path, e)
                    continue
                key = str(entry.get("id", f"{line_no}"))
                yield key, {"audio": audio, "text": entry["text"], "id": key}


class JaxmmLocalText(_LocalBuilder):
    """Plain text (one example per non-empty line) or JSON lines (``text_field``)."""

    def _features(self):
        return {"text": tfds.features.Text()}

    def _records(self, split, spec):
        root = self.builder_config.root
        path = safe_path(root, spec["input"])
        if not os.path.isfile(path):
            raise DataError(f"Text file {path!r} does not exist.")
        jsonl = path.endswith((".jsonl", ".json"))
        field = self.builder_config.text_field
        with open(path, encoding="utf-8") as f:
            for line_no, line in enumerate(f, 1):
                if not line.strip():
                    continue
                if jsonl:
                    try:
                        text = json.loads(line)[field]
                    except (json.JSONDecodeError, KeyError, TypeError):
                        raise DataError(f"{path}:{line_no}: expected a JSON object with a "
                                        f"{field!r} field.") from None
                else:
                    text = line.rstrip("\n")
                yield line_no, {"text": text}


class JaxmmLocalConll(_LocalBuilder):
    """CoNLL-format token tagging (NER): one example per sentence."""

    def _features(self):
        return {"tokens": tfds.features.Sequence(tfds.features.Text()),
                "pos": tfds.features.Sequence(tfds.features.Text()),
                "chunks": tfds.features.Sequence(tfds.features.Text()),
                "ner": tfds.features.Sequence(
                    tfds.features.ClassLabel(names=list(self.builder_config.labels)))}

    def _records(self, split, spec):
        path = safe_path(self.builder_config.root, spec["input"])
        if not os.path.isfile(path):
            raise DataError(f"CoNLL file {path!r} does not exist.")
        labels = set(self.builder_config.labels)
        for start, rows, problem in _conll_sentences(path):
            if problem is not None:
                if self.builder_config.on_corrupt == "fail":
                    raise DataError(f"{problem[0]}: {problem[1]}. Fix the line, or build with "
                                    "--on-corrupt skip to drop its sentence.")
                self._corrupt(split, problem[0], ValueError(problem[1]))
                continue
            tags = [r[-1] for r in rows]
            unknown = [(n, t) for n, t in enumerate(tags) if t not in labels]
            if unknown:
                n, tag = unknown[0]
                raise DataError(f"{path}:{start + n}: tag {tag!r} is not in the label list "
                                f"{list(self.builder_config.labels)}; pass the dataset's tags "
                                "with --labels.")
            yield start, {"tokens": [r[0] for r in rows],
                          "pos": [r[1] if len(r) > 2 else "" for r in rows],
                          "chunks": [r[2] if len(r) > 3 else "" for r in rows],
                          "ner": tags}


def _conll_sentences(path: str) -> Iterator[tuple[int, list[list[str]], tuple | None]]:
    """``(first line number, rows of columns, (file:line, problem) or None)`` per sentence.

    Every token line of a file must have the same number of columns (2 or more)
    as its first token line.
    """
    width = None
    rows: list[list[str]] = []
    start, problem = 0, None
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            cols = line.split()
            if not cols or cols[0] == "-DOCSTART-":
                if rows or problem:
                    yield start, rows, problem
                rows, problem = [], None
                continue
            if not rows and problem is None:
                start = line_no
            width = width or (len(cols) if len(cols) >= 2 else None)
            if problem is None and (len(cols) < 2 or len(cols) != width):
                problem = (f"{path}:{line_no}", f"expected {width or '2+'} whitespace-separated "
                           f"columns, found {len(cols)}: {line.strip()!r}")
            rows.append(cols)
    if rows or problem:
        yield start, rows, problem


FORMATS: dict[str, type[_LocalBuilder]] = {
    "coco": JaxmmLocalCoco, "vqa": JaxmmLocalVqa, "audio": JaxmmLocalAudio,
    "text": JaxmmLocalText, "conll": JaxmmLocalConll,
}
_REQUIRED = {"coco": ("annotations",), "vqa": ("questions",), "audio": ("manifest",),
             "text": ("input",), "conll": ("input",)}


def build_local(fmt: str, root: str, splits: Mapping[str, Mapping[str, str]], data_dir: str,
                name: str = "default", on_corrupt: str = "skip",
                text_field: str = "text", labels: Sequence[str] | None = None
                ) -> dict[str, Any]:
    """Builds ``jaxmm_local_<fmt>/<name>`` in ``data_dir`` from files under ``root``.

    ``splits`` maps split names to the files of that split, relative to
    ``root`` (keys: coco ``annotations``, ``images``; vqa ``questions``,
    ``annotations``, ``images``; audio ``manifest``; text ``input``; conll
    ``input``). ``labels``: the conll tag list, in class-id order (default: the
    CoNLL-2003 NER tags).
    Returns ``{"name", "path", "splits": {split: n}, "skipped": {split: n}}``.
    """
    if fmt not in FORMATS:
        raise DataError(f"Unknown local format {fmt!r}; choose one of {sorted(FORMATS)}.")
    if on_corrupt not in ("skip", "fail"):
        raise DataError(f"on_corrupt must be 'skip' or 'fail', got {on_corrupt!r}.")
    if not os.path.isdir(root):
        raise DataError(f"Dataset folder {root!r} does not exist.")
    if not splits:
        raise DataError("No splits given; pass at least one, e.g. --split train=....")
    for split, spec in splits.items():
        missing = [k for k in _REQUIRED[fmt] if not spec.get(k)]
        if missing:
            raise DataError(f"Split {split!r} of the {fmt} dataset needs {missing}.")
    if not re.fullmatch(r"[a-zA-Z0-9_.-]+", name):
        raise DataError(f"Dataset name {name!r} may only use letters, digits, '_', '-', '.'.")
    cls = FORMATS[fmt]
    if fmt == "conll":
        labels = tuple(labels or CONLL2003_NER_TAGS)
        if len(set(labels)) != len(labels):
            raise DataError(f"The label list {list(labels)} repeats a tag.")
    config = LocalConfig(name=name, splits={k: dict(v) for k, v in splits.items()},
                         root=os.path.abspath(root), on_corrupt=on_corrupt,
                         text_field=text_field, labels=tuple(labels or ()))
    os.makedirs(data_dir, exist_ok=True)
    builder = cls(config=config, data_dir=data_dir, file_format="array_record")
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
        download_mode=tfds.download.GenerateMode.REUSE_DATASET_IF_EXISTS))
    return {
        "name": f"{cls.name}/{name}",
        "path": str(builder.data_dir),
        "splits": {k: v.num_examples for k, v in builder.info.splits.items()},
        "skipped": dict(builder.info.metadata.get("skipped", {})),
    }
