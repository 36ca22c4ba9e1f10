"""Builders for data in common local formats -> tfds datasets (ArrayRecord).

* ``coco``: COCO-captions JSON (``images`` + ``annotations``) and an image folder;
  one example per image with all its captions.
* ``coco-detection``: COCO instances JSON (``images``, ``annotations`` with pixel
  ``bbox`` ``[x, y, width, height]``, ``categories``) and an image folder; one example
  per image with the features of tfds ``coco/2017`` (``image``, ``image/id``,
  ``image/filename``, ``objects``: ``bbox`` normalised ``(ymin, xmin, ymax, xmax)``,
  ``label`` (the categories in id order), ``area``, ``is_crowd``, ``id``), so the
  ``coco/2017`` preset's preprocessing reads both. Boxes are clipped to the image; an
  annotation with no area left is skipped and counted; images without annotations are
  kept (no objects).
* ``vqa``: VQA v2 questions JSON + annotations JSON + an image folder; one
  example per question with its 10 human answers.
* ``audio``: a JSON-lines manifest ``{"audio": "rel/path.wav", "text": "..."}``;
  audio is decoded, down-mixed and resampled to 16 kHz int16.
* ``text``: plain text (one example per non-empty line) or JSON lines.
* ``chat``: JSON lines of conversations (``{"messages": [{"role", "content"}, ...]}``)
  for instruction / dialogue fine-tuning (``template=NAME`` skips and counts
  conversations with roles that chat template does not format).
* ``karpathy``: Karpathy's caption split files (``dataset_flickr30k.json``,
  ``dataset_flickr8k.json``, ``dataset_coco.json``) and their image folder; jaxmm's
  ``train`` split takes Karpathy's ``train`` (and COCO's ``restval``), ``validation``
  its ``val``, ``test`` its ``test``; the ``coco`` features.
* ``text-labels``: a CSV/TSV/JSON-lines table of ``text`` (and optionally a second
  text, ``text_pair``) with a ``label``: text classification.
* ``image-labels``: an image folder with one sub-folder per class, or a table of
  ``image`` (path) and ``label``: image classification.
* ``image-captions``: a table of ``image`` (path) and ``caption``; the rows of one
  image are grouped into one example with all its captions (the ``coco`` features):
  captioning and retrieval.
* ``audio-labels``: a table of ``audio`` (path) and ``label``: audio classification.
* ``audio-captions``: a table of ``audio`` (path) and ``caption``, grouped per clip like
  ``image-captions`` (AudioCaps / Clotho style; Clotho's five caption columns become
  five rows): audio captioning and audio-text retrieval.
* ``video-labels``: a table of ``video`` (path) and ``label``: video classification.
* ``video-captions``: a table of ``video`` (path) and ``caption``, grouped per video
  like ``image-captions``: video captioning and video-text retrieval. Videos are
  decoded with PyAV (:func:`jaxmm.data.video_io.read_video`) at ``video_fps`` frames
  per second, resized to ``video_size`` squares, at most ``video_max_frames`` frames,
  and stored as PNG frames (tfds ``Video``); the pipeline samples clips from them
  (``sample_frames``).
* ``conll``: CoNLL-2003 style columns (``word POS chunk NER``, whitespace separated;
  sentences separated by blank lines, ``-DOCSTART-`` lines ignored; the tag is
  the last column, so ``word TAG`` files work too). Features as tfds
  ``conll2003``: ``tokens``, ``pos``, ``chunks`` (strings) and ``ner`` (class
  labels named by ``classes``, default the CoNLL-2003 NER tags). A malformed line
  is reported as ``file:line`` and its sentence skipped and counted (or fails the
  build with ``on_corrupt="fail"``); a tag outside ``classes`` always fails, naming
  the tag and the list (a sentence without its entity tags would be wrong data).

Tables name their fields by column (CSV/TSV header) or key (JSON lines);
``columns`` maps the roles above to other names. Labels become a tfds
``ClassLabel`` whose names are ``classes`` when given (a row with another label
is skipped and counted) or else every label found, sorted (numerically when all
are integers). A table without a needed column is refused in one line naming
the columns it has; a row that is not valid JSON, lacks a field, or names a
corrupt file is skipped and counted (or fails the build with ``on_corrupt="fail"``).

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
from collections.abc import Iterator, Mapping
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
    columns: dict = dataclasses.field(default_factory=dict)  # role -> column (tables)
    classes: tuple = ()  # label names (label formats)
    template: str = ""  # chat: the template whose roles a conversation must use
    video: dict = dataclasses.field(default_factory=dict)  # video: fps, size, max_frames


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


def _coco_categories(path: str) -> list[tuple[int, str]]:
    """``(id, name)`` of a COCO instances file's categories, in id order."""
    cats = _load_json(path).get("categories")
    if not cats:
        raise DataError(f"{path} has no 'categories': is it a COCO instances (detection) "
                        "file? Captions files go to build-coco.")
    return sorted((int(c["id"]), str(c["name"])) for c in cats)


class JaxmmLocalCocoDetection(_LocalBuilder):
    """COCO instances JSON + image folder: boxes and classes (tfds ``coco/2017``
    features)."""

    def _features(self):
        return {"image": tfds.features.Image(shape=(None, None, 3)), "image/id": np.int64,
                "image/filename": tfds.features.Text(),
                "objects": tfds.features.Sequence({
                    "bbox": tfds.features.BBoxFeature(), "area": np.int64,
                    "is_crowd": np.bool_, "id": np.int64,
                    "label": tfds.features.ClassLabel(names=self.builder_config.classes)})}

    def _records(self, split, spec):
        root = self.builder_config.root
        path = safe_path(root, spec["annotations"])
        ann = _load_json(path)
        categories = _coco_categories(path)
        names = tuple(name for _, name in categories)
        if names != tuple(self.builder_config.classes):
            raise DataError(f"{path} has the categories {list(names)}, other splits "
                            f"{list(self.builder_config.classes)}; every split needs the same.")
        label_of = {cid: i for i, (cid, _) in enumerate(categories)}
        by_image = collections.defaultdict(list)
        for a in ann.get("annotations", []):
            by_image[a["image_id"]].append(a)
        images_dir = spec.get("images", "")
        for img in ann.get("images", []):
            file = safe_path(root, os.path.join(images_dir, img["file_name"]))
            try:
                data = _image_bytes(file)
                width, height = _image_size(data)
            except (OSError, ValueError, SyntaxError) as e:
                self._corrupt(split, file, e)
                continue
            objects = []
            for a in by_image.get(img["id"], []):
                if a["category_id"] not in label_of:
                    raise DataError(f"{path}: annotation {a.get('id')} has category_id "
                                    f"{a['category_id']}, which 'categories' does not list.")
                x, y, w, h = (float(v) for v in a["bbox"])
                x0, x1 = np.clip([x / width, (x + w) / width], 0.0, 1.0)
                y0, y1 = np.clip([y / height, (y + h) / height], 0.0, 1.0)
                if x1 <= x0 or y1 <= y0:
                    self.skipped[f"{split}/empty_boxes"].append(str(a.get("id")))
                    continue
                objects.append({"bbox": tfds.features.BBox(y0, x0, y1, x1),
                                "area": int(round(float(a.get("area", w * h)))),
                                "is_crowd": bool(a.get("iscrowd", 0)), "id": int(a["id"]),
                                "label": label_of[a["category_id"]]})
            yield img["id"], {"image": data, "image/id": img["id"],
                              "image/filename": img["file_name"], "objects": objects}


def _image_size(data: bytes) -> tuple[int, int]:
    """``(width, height)`` of encoded image bytes."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as img:
        return img.size


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


class JaxmmLocalChat(_LocalBuilder):
    """JSON lines of conversations: ``{"messages": [{"role": ..., "content": ...}, ...]}``
    (a line that is not such an object, or whose roles the ``--template`` does not
    format, is skipped and counted)."""

    def _features(self):
        return {"roles": tfds.features.Sequence(tfds.features.Text()),
                "contents": tfds.features.Sequence(tfds.features.Text()),
                "id": tfds.features.Text()}

    def _records(self, split, spec):
        from jaxmm.data.chat import get_template

        template = self.builder_config.template
        known = set(get_template(template).roles) if template else None
        path = safe_path(self.builder_config.root, spec["input"])
        if not os.path.isfile(path):
            raise DataError(f"Conversation file {path!r} does not exist.")
        with open(path, encoding="utf-8") as f:
            for line_no, line in enumerate(f, 1):
                if not line.strip():
                    continue
                where = f"{path}:{line_no}"
                try:
                    messages = json.loads(line)["messages"]
                    roles = [str(m["role"]) for m in messages]
                    contents = [str(m["content"]) for m in messages]
                except (json.JSONDecodeError, KeyError, TypeError) as e:
                    self._corrupt(split, where, ValueError(
                        f"expected {{\"messages\": [{{\"role\", \"content\"}}, ...]}} ({e})"))
                    continue
                unknown = sorted(set(roles) - known) if known is not None else []
                if not roles or unknown:
                    self._corrupt(split, where, ValueError(
                        f"role(s) {unknown} not in the {template!r} chat template"
                        if unknown else "no messages"))
                    continue
                yield line_no, {"roles": roles, "contents": contents, "id": str(line_no)}

# jaxmm split -> the Karpathy splits it takes
KARPATHY_SPLITS = {"train": ("train", "restval"), "validation": ("val",), "test": ("test",)}


class JaxmmLocalKarpathy(_LocalBuilder):
    """Karpathy's caption splits (Flickr8k/30k, COCO): one example per image."""

    def _features(self):
        return JaxmmLocalCoco._features(self)

    def _records(self, split, spec):
        if split not in KARPATHY_SPLITS:
            raise DataError(f"Split {split!r}: the Karpathy files define "
                            f"{', '.join(KARPATHY_SPLITS)} (train includes restval).")
        root = self.builder_config.root
        path = safe_path(root, spec["annotations"])
        data = _load_json(path)
        if not isinstance(data, dict) or not isinstance(data.get("images"), list):
            raise DataError(f"{path} is not a Karpathy split file (no 'images' list).")
        images_dir = spec.get("images", "")
        wanted = KARPATHY_SPLITS[split]
        for index, entry in enumerate(data["images"]):
            try:
                if entry["split"] not in wanted:
                    continue
                relative = os.path.join(images_dir, entry.get("filepath", ""),
                                        entry["filename"])
                captions = [str(x["raw"]).strip() for x in entry["sentences"]]
                image_id = int(entry.get("cocoid", entry.get("imgid", index)))
            except (KeyError, TypeError, ValueError) as e:
                self._corrupt(split, f"{path} images[{index}]", ValueError(f"missing {e}"))
                continue
            full = safe_path(root, relative)
            try:
                image = _image_bytes(full)
            except (OSError, ValueError, SyntaxError) as e:
                self._corrupt(split, full, e)
                continue
            yield image_id, {"image": image, "image_id": image_id,
                             "file_name": entry["filename"], "captions": captions}

# -- tables: (text | image | audio, label) and (image, caption) -------------------------

_TABLE_SUFFIXES = (".csv", ".tsv", ".jsonl", ".json")


def _table_rows(path: str, needed: tuple[str, ...]
                ) -> Iterator[tuple[int, dict[str, Any] | None, str]]:
    """``(line, row, problem)`` of a CSV/TSV (header row) or JSON-lines table: ``row``
    is ``None`` with a ``problem`` for a line that cannot be read or lacks a needed
    field. A CSV header without a needed column raises :class:`DataError`."""
    import csv

    if not os.path.isfile(path):
        raise DataError(f"Table {path!r} does not exist.")
    if not path.endswith(_TABLE_SUFFIXES):
        raise DataError(f"Table {path!r}: expected a .csv, .tsv or .jsonl file.")
    with open(path, encoding="utf-8", newline="") as f:
        if path.endswith((".jsonl", ".json")):
            for line_no, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as e:
                    yield line_no, None, f"not valid JSON ({e})"
                    continue
                if not isinstance(row, dict):
                    yield line_no, None, "not a JSON object"
                    continue
                lacking = [k for k in needed if row.get(k) in (None, "")]
                yield (line_no, None, f"no {lacking[0]!r} field") if lacking else (
                    line_no, row, "")
            return
        reader = csv.DictReader(f, delimiter="\t" if path.endswith(".tsv") else ",")
        header = reader.fieldnames or []
        missing = [k for k in needed if k not in header]
        if missing:
            raise DataError(f"{path} has no {missing[0]!r} column (its columns: "
                            f"{', '.join(header) or 'none'}).",
                            hint=f"Name the column holding it with --column "
                            f"{missing[0]}=COLUMN.")
        for row in reader:
            line_no = reader.line_num
            lacking = [k for k in needed if not (row.get(k) or "").strip()]
            yield (line_no, None, f"empty {lacking[0]!r}") if lacking else (line_no, row, "")


def _sorted_labels(labels: set[str]) -> tuple[str, ...]:
    if labels and all(re.fullmatch(r"-?\d+", x) for x in labels):
        return tuple(sorted(labels, key=int))
    return tuple(sorted(labels))


class _TableBuilder(_LocalBuilder):
    """A builder reading one table per split (``input``); ``ROLES`` are the fields it
    needs, renamed by ``columns``."""

    ROLES: tuple[str, ...] = ()
    OPTIONAL: tuple[str, ...] = ()

    def column(self, role: str) -> str:
        return self.builder_config.columns.get(role, role)

    def _label_feature(self):
        return tfds.features.ClassLabel(names=list(self.builder_config.classes))

    def rows(self, split: str, spec: Mapping[str, str]) -> Iterator[tuple[int, dict]]:
        """``(line, {role: value})`` of the split's table; bad rows are skipped and
        counted (``_corrupt``), as are labels outside ``classes``."""
        root = self.builder_config.root
        path = safe_path(root, spec["input"])
        needed = tuple(self.column(r) for r in self.ROLES)
        classes = set(self.builder_config.classes)
        for line_no, row, problem in _table_rows(path, needed):
            where = f"{path}:{line_no}"
            if row is None:
                self._corrupt(split, where, ValueError(problem))
                continue
            values = {r: str(row[self.column(r)]).strip() for r in self.ROLES}
            for r in self.OPTIONAL:
                if row.get(self.column(r)) not in (None, ""):
                    values[r] = str(row[self.column(r)]).strip()
            if "label" in values and values["label"] not in classes:
                self._corrupt(split, where, ValueError(
                    f"label {values['label']!r} is not one of the classes "
                    f"{sorted(classes)}"))
                continue
            yield line_no, values

    def grouped(self, split: str, spec: Mapping[str, str], media: str, read
                ) -> Iterator[tuple[int, str, list[str], Any]]:
        """``(id, path, captions, read(path) or None)`` per distinct ``media`` file of a
        (media, caption) table, in first-appearance order (a corrupt file is counted)."""
        captions: dict[str, list[str]] = collections.defaultdict(list)
        first_line: dict[str, int] = {}
        for line_no, v in self.rows(split, spec):
            captions[v[media]].append(v["caption"])
            first_line.setdefault(v[media], line_no)
        for index, (relative, texts) in enumerate(captions.items()):
            where = f"{spec['input']}:{first_line[relative]}"
            yield index, relative, texts, self.file(split, where, relative, read)

    def file(self, split: str, where: str, relative: str, read) -> Any:
        """``read(path)`` of a file the table names (inside the root), or ``None`` after
        counting it as corrupt."""
        path = safe_path(self.builder_config.root, relative)
        try:
            return read(path)
        except (OSError, ValueError, SyntaxError, RuntimeError) as e:
            self._corrupt(split, f"{where} ({path})", e)
            return None


class JaxmmLocalTextLabels(_TableBuilder):
    """(text[, text_pair], label) rows of a CSV/TSV/JSON-lines table."""

    ROLES = ("text", "label")
    OPTIONAL = ("text_pair",)

    def _features(self):
        features = {"text": tfds.features.Text(), "label": self._label_feature(),
                    "id": tfds.features.Text()}
        if "text_pair" in self.builder_config.columns:
            features["text_pair"] = tfds.features.Text()
        return features

    def _records(self, split, spec):
        pair = "text_pair" in self.builder_config.columns
        for line_no, v in self.rows(split, spec):
            if pair and "text_pair" not in v:
                self._corrupt(split, f"{spec['input']}:{line_no}",
                              ValueError(f"no {self.column('text_pair')!r} field"))
                continue
            example = {"text": v["text"], "label": v["label"], "id": str(line_no)}
            if pair:
                example["text_pair"] = v["text_pair"]
            yield line_no, example


class JaxmmLocalImageLabels(_TableBuilder):
    """(image, label) from a folder with one sub-folder per class, or from a table."""

    ROLES = ("image", "label")

    def _features(self):
        return {"image": tfds.features.Image(shape=(None, None, 3)),
                "label": self._label_feature(), "file_name": tfds.features.Text()}

    def _records(self, split, spec):
        root = self.builder_config.root
        source = safe_path(root, spec["input"])
        if os.path.isdir(source):
            entries = ((os.path.relpath(os.path.join(source, label, name), root), label)
                       for label in sorted(os.listdir(source))
                       if os.path.isdir(os.path.join(source, label))
                       for name in sorted(os.listdir(os.path.join(source, label))))
            classes = set(self.builder_config.classes)
            for relative, label in entries:
                if label not in classes:
                    self._corrupt(split, relative, ValueError(
                        f"class folder {label!r} is not one of {sorted(classes)}"))
                    continue
                data = self.file(split, relative, relative, _image_bytes)
                if data is not None:
                    yield relative, {"image": data, "label": label, "file_name": relative}
            return
        for line_no, v in self.rows(split, spec):
            data = self.file(split, f"{spec['input']}:{line_no}", v["image"], _image_bytes)
            if data is not None:
                yield line_no, {"image": data, "label": v["label"], "file_name": v["image"]}


class JaxmmLocalImageCaptions(_TableBuilder):
    """(image, caption) rows; the rows of one image make one example (``coco`` features)."""

    ROLES = ("image", "caption")

    def _features(self):
        return JaxmmLocalCoco._features(self)

    def _records(self, split, spec):
        for image_id, relative, texts, data in self.grouped(split, spec, "image", _image_bytes):
            if data is not None:
                yield relative, {"image": data, "image_id": image_id, "file_name": relative,
                                 "captions": texts}


class JaxmmLocalAudioLabels(_TableBuilder):
    """(audio, label) rows; audio decoded, down-mixed and resampled to 16 kHz int16."""

    ROLES = ("audio", "label")

    def _features(self):
        return {"audio": tfds.features.Tensor(shape=(None,), dtype=np.int16, encoding="bytes"),
                "label": self._label_feature(), "id": tfds.features.Text()}

    def _records(self, split, spec):
        for line_no, v in self.rows(split, spec):
            audio = self.file(split, f"{spec['input']}:{line_no}", v["audio"], _audio_int16)
            if audio is not None:
                yield line_no, {"audio": audio, "label": v["label"], "id": v["audio"]}


class JaxmmLocalAudioCaptions(_TableBuilder):
    """(audio, caption) rows; the rows of one clip make one example with all its captions;
    audio decoded, down-mixed and resampled to 16 kHz int16."""

    ROLES = ("audio", "caption")

    def _features(self):
        return {"audio": tfds.features.Tensor(shape=(None,), dtype=np.int16, encoding="bytes"),
                "audio_id": np.int64, "file_name": tfds.features.Text(),
                "captions": tfds.features.Sequence(tfds.features.Text())}

    def _records(self, split, spec):
        for audio_id, relative, texts, audio in self.grouped(split, spec, "audio", _audio_int16):
            if audio is not None:
                yield relative, {"audio": audio, "audio_id": audio_id, "file_name": relative,
                                 "captions": texts}


class _VideoTable(_TableBuilder):
    """Video tables: the ``video`` column names files decoded with PyAV."""

    def _video_feature(self):
        size = int(self.builder_config.video.get("size", 64))
        return tfds.features.Video(shape=(None, size, size, 3), encoding_format="png")

    def _read(self, path: str) -> np.ndarray:
        from jaxmm.data.video_io import read_video

        v = self.builder_config.video
        return read_video(path, fps=v.get("fps", 8.0), size=int(v.get("size", 64)),
                          max_frames=int(v.get("max_frames", 64)))


class JaxmmLocalVideoLabels(_VideoTable):
    """(video, label) rows: video classification (e.g. actions, emotions)."""

    ROLES = ("video", "label")

    def _features(self):
        return {"video": self._video_feature(), "label": self._label_feature(),
                "id": tfds.features.Text()}

    def _records(self, split, spec):
        for line_no, v in self.rows(split, spec):
            video = self.file(split, f"{spec['input']}:{line_no}", v["video"], self._read)
            if video is not None:
                yield line_no, {"video": video, "label": v["label"], "id": v["video"]}


class JaxmmLocalVideoCaptions(_VideoTable):
    """(video, caption) rows; the rows of one video make one example with all its
    captions (MSR-VTT style)."""

    ROLES = ("video", "caption")

    def _features(self):
        return {"video": self._video_feature(), "video_id": np.int64,
                "file_name": tfds.features.Text(),
                "captions": tfds.features.Sequence(tfds.features.Text())}

    def _records(self, split, spec):
        for video_id, relative, texts, video in self.grouped(split, spec, "video", self._read):
            if video is not None:
                yield relative, {"video": video, "video_id": video_id, "file_name": relative,
                                 "captions": texts}


def _check_tables(fmt: str, root: str, splits: Mapping[str, Mapping[str, str]],
                  columns: Mapping[str, str]) -> None:
    """Refuses, before anything is built, a split whose table is missing or whose CSV/TSV
    header lacks a column the format needs."""
    cls = FORMATS[fmt]
    roles = cls.ROLES + tuple(r for r in cls.OPTIONAL if r in columns)
    needed = tuple(columns.get(r, r) for r in roles)
    for spec in splits.values():
        source = safe_path(root, spec["input"])
        if fmt == "image-labels" and os.path.isdir(source):
            continue
        next(_table_rows(source, needed), None)  # reads the header


def _labels_found(fmt: str, root: str, splits: Mapping[str, Mapping[str, str]],
                  columns: Mapping[str, str]) -> tuple[str, ...]:
    """Every label of the splits (class folders, or the label column of the tables)."""
    found: set[str] = set()
    label = columns.get("label", "label")
    for spec in splits.values():
        source = safe_path(root, spec["input"])
        if fmt == "image-labels" and os.path.isdir(source):
            found.update(n for n in os.listdir(source) if os.path.isdir(os.path.join(source, n)))
            continue
        for _, row, _ in _table_rows(source, (label,)):
            if row is not None:
                found.add(str(row[label]).strip())
    if not found:
        raise DataError(f"No labels found in {dict(splits)} under {root}.")
    return _sorted_labels(found)


# -- CoNLL token tagging ------------------------------------------------------------


class JaxmmLocalConll(_LocalBuilder):
    """CoNLL-format token tagging (NER): one example per sentence."""

    def _features(self):
        return {"tokens": tfds.features.Sequence(tfds.features.Text()),
                "pos": tfds.features.Sequence(tfds.features.Text()),
                "chunks": tfds.features.Sequence(tfds.features.Text()),
                "ner": tfds.features.Sequence(
                    tfds.features.ClassLabel(names=list(self.builder_config.classes)))}

    def _records(self, split, spec):
        path = safe_path(self.builder_config.root, spec["input"])
        if not os.path.isfile(path):
            raise DataError(f"CoNLL file {path!r} does not exist.")
        classes = set(self.builder_config.classes)
        for start, rows, problem in _conll_sentences(path):
            if problem is not None:
                if self.builder_config.on_corrupt == "fail":
                    raise DataError(f"{problem[0]}: {problem[1]}. Fix the line, or build with "
                                    "--on-corrupt skip to drop its sentence.")
                self._corrupt(split, problem[0], ValueError(problem[1]))
                continue
            tags = [r[-1] for r in rows]
            unknown = [(n, t) for n, t in enumerate(tags) if t not in classes]
            if unknown:
                n, tag = unknown[0]
                raise DataError(f"{path}:{start + n}: tag {tag!r} is not in the classes "
                                f"{list(self.builder_config.classes)}; pass the dataset's tags "
                                "with --classes.")
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
    "coco": JaxmmLocalCoco, "coco-detection": JaxmmLocalCocoDetection, "vqa": JaxmmLocalVqa,
    "audio": JaxmmLocalAudio,
    "text": JaxmmLocalText, "chat": JaxmmLocalChat, "karpathy": JaxmmLocalKarpathy,
    "text-labels": JaxmmLocalTextLabels,
    "image-labels": JaxmmLocalImageLabels, "image-captions": JaxmmLocalImageCaptions,
    "audio-labels": JaxmmLocalAudioLabels, "conll": JaxmmLocalConll,
    "video-labels": JaxmmLocalVideoLabels, "video-captions": JaxmmLocalVideoCaptions,
    "audio-captions": JaxmmLocalAudioCaptions,
}
_REQUIRED = {"coco": ("annotations",), "coco-detection": ("annotations",),
             "vqa": ("questions",), "audio": ("manifest",),
             "text": ("input",), "chat": ("input",), "karpathy": ("annotations",),
             "text-labels": ("input",),
             "image-labels": ("input",), "image-captions": ("input",),
             "audio-labels": ("input",), "conll": ("input",), "video-labels": ("input",),
             "video-captions": ("input",), "audio-captions": ("input",)}
_LABELLED = ("text-labels", "image-labels", "audio-labels", "video-labels")
_TABLE_FORMATS = (*_LABELLED, "image-captions", "video-captions", "audio-captions")
_VIDEO_FORMATS = ("video-labels", "video-captions")
VIDEO_DEFAULTS = {"fps": 8.0, "size": 64, "max_frames": 64}


def build_local(fmt: str, root: str, splits: Mapping[str, Mapping[str, str]], data_dir: str,
                name: str = "default", on_corrupt: str = "skip",
                text_field: str = "text", columns: Mapping[str, str] | None = None,
                classes: tuple[str, ...] | list[str] | None = None,
                template: str | None = None,
                video: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Builds ``jaxmm_local_<fmt>/<name>`` (``-`` in ``fmt`` becomes ``_``) in
    ``data_dir`` from files under ``root``.

    ``splits`` maps split names to the files of that split, relative to
    ``root`` (keys: coco ``annotations``, ``images``; vqa ``questions``,
    ``annotations``, ``images``; audio ``manifest``; text and the table formats
    ``input``: a table, or for image-labels also a folder of class folders; conll
    ``input``: a CoNLL file).
    ``columns``: role -> column of the tables (roles: ``text``, ``text_pair``,
    ``label``, ``image``, ``caption``, ``audio``). ``classes``: the label names, in
    class-id order (default: every label found, sorted; conll: the CoNLL-2003 NER
    tags).
    ``video`` (video formats): ``fps``, ``size``, ``max_frames`` of the stored frames
    (default :data:`VIDEO_DEFAULTS`).
    Returns ``{"name", "path", "splits": {split: n}, "skipped": {split: n}}`` and, for
    the labelled formats and conll, ``"classes"``.
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
    columns = dict(columns or {})
    if template and fmt != "chat":
        raise DataError(f"template applies to the chat format, not {fmt}.")
    if template:
        from jaxmm.data.chat import get_template

        get_template(template)  # an unknown name is refused before anything is built
    if video and fmt not in _VIDEO_FORMATS:
        raise DataError(f"video options apply to the video formats, not {fmt}.")
    unknown_video = sorted(set(video or {}) - set(VIDEO_DEFAULTS))
    if unknown_video:
        raise DataError(f"Unknown video option(s) {unknown_video}; the options are "
                        f"{sorted(VIDEO_DEFAULTS)}.")
    if fmt in _VIDEO_FORMATS:
        from jaxmm.data.video_io import require_av

        require_av()  # a missing PyAV fails here, not as every file "corrupt"
    roles = {"text", "text_pair", "label", "image", "caption", "audio", "video"}
    unknown = sorted(set(columns) - roles)
    if unknown:
        raise DataError(f"Unknown column role(s) {unknown}; the roles are {sorted(roles)}.")
    if fmt in _TABLE_FORMATS:
        _check_tables(fmt, os.path.abspath(root), splits, columns)
    if fmt == "conll":
        classes = tuple(str(c).strip() for c in classes or ()) or CONLL2003_NER_TAGS
        if len(set(classes)) != len(classes):
            raise DataError(f"classes {list(classes)} name a tag twice.")
    elif fmt == "coco-detection":
        if classes:
            raise DataError("coco-detection takes its classes from the annotations' "
                            "'categories'; do not pass classes.")
        found = {split: tuple(n for _, n in _coco_categories(
            safe_path(os.path.abspath(root), spec["annotations"])))
            for split, spec in splits.items()}
        classes = next(iter(found.values()))
        if any(names != classes for names in found.values()):
            raise DataError(f"The splits list different categories: {found}; every split "
                            "needs the same.")
    elif fmt in _LABELLED:
        classes = tuple(str(c).strip() for c in classes or ()) or _labels_found(
            fmt, os.path.abspath(root), splits, columns)
        if len(set(classes)) != len(classes):
            raise DataError(f"classes {list(classes)} name a class twice.")
    elif classes:
        raise DataError(f"classes apply to the labelled formats {list(_LABELLED)}, not {fmt}.")
    config = LocalConfig(name=name, splits={k: dict(v) for k, v in splits.items()},
                         root=os.path.abspath(root), on_corrupt=on_corrupt,
                         text_field=text_field, columns=columns, classes=tuple(classes or ()),
                         template=template or "",
                         video={**VIDEO_DEFAULTS, **dict(video or {})}
                         if fmt in _VIDEO_FORMATS else {})
    os.makedirs(data_dir, exist_ok=True)
    builder = cls(config=config, data_dir=data_dir, file_format="array_record")
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
        download_mode=tfds.download.GenerateMode.REUSE_DATASET_IF_EXISTS))
    summary = {
        "name": f"{cls.name}/{name}",
        "path": str(builder.data_dir),
        "splits": {k: v.num_examples for k, v in builder.info.splits.items()},
        "skipped": dict(builder.info.metadata.get("skipped", {})),
    }
    if fmt in (*_LABELLED, "conll", "coco-detection"):
        summary["classes"] = list(classes)
    return summary
