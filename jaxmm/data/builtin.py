"""The built-in multimodal dataset ``jaxmm_scenes`` (a tfds GeneratorBasedBuilder).

Generated offline and deterministically from :mod:`jaxmm.data.scenes` and
:mod:`jaxmm.data.speech`. Each example holds a rendered scene image, several
true captions, question-answer pairs, the first caption spoken by the
vocabulary-level synthesiser (16 kHz), a class label (shape of the large
object) and the scene metadata.

Splits never share a scene: a candidate scene's split is a function of its
signature (the shapes, colours, sizes and grid cells of its objects), so two
equal scenes always land in the same split, and each split keeps only one copy.

Build it with ``jaxmm data build-builtin --data-dir DIR --size small`` or
:func:`build`. It is written as ArrayRecord so it supports random access
(exact, resumable iteration; see :mod:`jaxmm.data.pipeline`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import time

import numpy as np
import tensorflow_datasets as tfds

from jaxmm.data import scenes as scenes_lib
from jaxmm.data import speech

log = logging.getLogger(__name__)

__all__ = ["NAME", "SIZES", "JaxmmScenes", "ScenesConfig", "build", "corpus_path", "plan_splits",
           "text_corpus"]

NAME = "jaxmm_scenes"
SPLITS = ("train", "validation", "test")


@dataclasses.dataclass(eq=False)
class ScenesConfig(tfds.core.BuilderConfig):
    """Size and content of the built-in dataset."""

    train_size: int = 2000
    validation_size: int = 250
    test_size: int = 250
    image_size: int = 64
    min_objects: int = 1
    max_objects: int = 4
    num_captions: int = 5
    num_questions: int = 4
    with_audio: bool = True
    seed: int = 0

    def sizes(self) -> dict[str, int]:
        return {"train": self.train_size, "validation": self.validation_size,
                "test": self.test_size}


SIZES: dict[str, dict[str, int]] = {
    "tiny": dict(train_size=256, validation_size=64, test_size=64),
    "small": dict(train_size=2000, validation_size=250, test_size=250),
    "base": dict(train_size=20000, validation_size=1000, test_size=1000),
}


def make_config(size: str = "small", name: str | None = None, **overrides) -> ScenesConfig:
    """A config from a size preset (:data:`SIZES`) plus overrides.

    The config name encodes every non-default value, so differently sized
    datasets live side by side in one data dir.
    """
    if size not in SIZES:
        raise ValueError(f"Unknown built-in dataset size {size!r}; choose one of {list(SIZES)}.")
    values = dict(SIZES[size])
    values.update(overrides)
    fields = {f.name for f in dataclasses.fields(ScenesConfig)} - {
        f.name for f in dataclasses.fields(tfds.core.BuilderConfig)}
    unknown = set(values) - fields
    if unknown:
        raise ValueError(f"Unknown built-in dataset option(s) {sorted(unknown)}; "
                         f"valid: {sorted(fields)}.")
    if name is None:
        extra = {k: v for k, v in overrides.items() if v != SIZES[size].get(k)}
        name = size + "".join(f"-{k}{v}" for k, v in sorted(extra.items()))
    return ScenesConfig(name=name, description=f"jaxmm scenes, {values}", **values)


def _bucket(signature_hash: str, sizes: dict[str, int]) -> str:
    """Split of a signature, proportional to the requested sizes."""
    total = sum(sizes.values())
    u = int(signature_hash[:12], 16) / float(16 ** 12) * total
    acc = 0
    for split in SPLITS:
        acc += sizes[split]
        if u < acc:
            return split
    return SPLITS[-1]


def plan_splits(config: ScenesConfig) -> dict[str, list[tuple[int, scenes_lib.Scene]]]:
    """Deterministic ``split -> [(scene_id, scene)]``; no signature appears twice."""
    sizes = config.sizes()
    if any(v < 0 for v in sizes.values()) or not sum(sizes.values()):
        raise ValueError(f"Split sizes must be >= 0 and not all zero, got {sizes}.")
    out: dict[str, list] = {s: [] for s in SPLITS}
    seen: set[str] = set()
    candidate = 0
    limit = 50 * sum(sizes.values()) + 1000
    while any(len(out[s]) < sizes[s] for s in SPLITS):
        if candidate > limit:
            raise ValueError(
                f"Could not find {sizes} distinct scenes with {config.min_objects}-"
                f"{config.max_objects} objects; ask for fewer examples or more objects."
            )
        rng = np.random.default_rng([config.seed, candidate])
        scene = scenes_lib.sample_scene(rng, config.image_size, config.min_objects,
                                        config.max_objects)
        h = scene.signature_hash
        split = _bucket(h, sizes)
        if h not in seen and len(out[split]) < sizes[split]:
            out[split].append((candidate, scene))
        seen.add(h)
        candidate += 1
    return out


def _example_seed(config: ScenesConfig, scene_id: int, what: str) -> int:
    digest = hashlib.sha256(f"{config.seed}/{scene_id}/{what}".encode()).digest()
    return int.from_bytes(digest[:8], "little")


class JaxmmScenes(tfds.core.GeneratorBasedBuilder):
    """Synthetic scenes with captions, questions, speech and labels."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}
    BUILDER_CONFIGS = [make_config(s) for s in SIZES]
    DEFAULT_CONFIG_NAME = "small"

    def _info(self) -> tfds.core.DatasetInfo:
        c: ScenesConfig = self.builder_config
        features = {
            "image": tfds.features.Image(shape=(c.image_size, c.image_size, 3)),
            "image_id": np.int64,
            "signature": tfds.features.Text(),
            "captions": tfds.features.Sequence(tfds.features.Text(), length=c.num_captions),
            "questions": tfds.features.Sequence(tfds.features.Text(), length=c.num_questions),
            "answers": tfds.features.Sequence(tfds.features.Text(), length=c.num_questions),
            "question_types": tfds.features.Sequence(tfds.features.Text(),
                                                     length=c.num_questions),
            "label": tfds.features.ClassLabel(names=list(scenes_lib.SHAPES)),
            "objects": tfds.features.Sequence({
                "shape": tfds.features.ClassLabel(names=list(scenes_lib.SHAPES)),
                "color": tfds.features.ClassLabel(names=list(scenes_lib.COLORS)),
                "size": tfds.features.ClassLabel(names=list(scenes_lib.SIZES)),
                "row": np.int32,
                "col": np.int32,
                "cx": np.float32,
                "cy": np.float32,
                "radius": np.float32,
            }),
        }
        if c.with_audio:
            # int16 PCM at speech.SAMPLE_RATE, stored as raw bytes (compact).
            features["speech"] = tfds.features.Tensor(shape=(None,), dtype=np.int16,
                                                      encoding="bytes")
            features["speech_text"] = tfds.features.Text()
        return tfds.core.DatasetInfo(
            builder=self,
            description=__doc__,
            features=tfds.features.FeaturesDict(features),
            supervised_keys=("image", "label"),
            metadata=tfds.core.MetadataDict(),
        )

    def _split_generators(self, dl_manager):
        del dl_manager
        plan = plan_splits(self.builder_config)
        return {split: self._generate_examples(split, items) for split, items in plan.items()
                if items}

    def _generate_examples(self, split, items):
        c: ScenesConfig = self.builder_config
        start = time.perf_counter()
        yield from self._examples(items)
        # What `jaxmm data info` reports besides sizes: the build time of each split and
        # where the spoken captions come from.
        meta = self.info.metadata
        meta["generate_seconds"] = {**meta.get("generate_seconds", {}),
                                    split: round(time.perf_counter() - start, 2)}
        meta["speech"] = (speech.SOURCE if c.with_audio else "none (built with --no-audio)")

    def _examples(self, items):
        c: ScenesConfig = self.builder_config
        for scene_id, scene in items:
            captions = scenes_lib.make_captions(scene, _example_seed(c, scene_id, "captions"),
                                                c.num_captions)
            qa = scenes_lib.answer_questions(scene, _example_seed(c, scene_id, "qa"),
                                             c.num_questions)
            example = {
                "image": scenes_lib.render(scene, _example_seed(c, scene_id, "noise")),
                "image_id": scene_id,
                "signature": scene.signature_hash,
                "captions": captions,
                "questions": [q for q, _, _ in qa],
                "answers": [a for _, a, _ in qa],
                "question_types": [t for _, _, t in qa],
                "label": scene.label,
                "objects": [
                    {"shape": o.shape, "color": o.color, "size": o.size, "row": o.row,
                     "col": o.col, "cx": o.cx, "cy": o.cy, "radius": o.radius}
                    for o in scene.objects
                ],
            }
            if c.with_audio:
                wave = speech.synthesize(captions[0], _example_seed(c, scene_id, "speech"))
                example["speech"] = np.round(wave * 32767).astype(np.int16)
                example["speech_text"] = captions[0]
            yield scene_id, example


def text_corpus(config: ScenesConfig, split: str = "train") -> list[str]:
    """All captions and questions of ``split`` (for training a tokenizer), without images."""
    lines = []
    for scene_id, scene in plan_splits(config)[split]:
        lines += scenes_lib.make_captions(scene, _example_seed(config, scene_id, "captions"),
                                          config.num_captions)
        lines += [q for q, _, _ in scenes_lib.answer_questions(
            scene, _example_seed(config, scene_id, "qa"), config.num_questions)]
    return lines


def build(data_dir: str, size: str = "small", name: str | None = None,
          **overrides) -> tfds.core.DatasetBuilder:
    """Generates the dataset into ``data_dir`` (idempotent) and returns its builder.

    Also writes ``<data_dir>/jaxmm_scenes/<config>/train_text.txt`` (captions and
    questions of the train split, one per line) for tokenizer training.
    """
    config = make_config(size, name, **overrides)
    os.makedirs(data_dir, exist_ok=True)
    presets = {c.name: c for c in JaxmmScenes.BUILDER_CONFIGS}
    if config.name in presets:
        if dataclasses.asdict(presets[config.name]) != dataclasses.asdict(config):
            raise ValueError(f"Config name {config.name!r} is a preset; pick another name.")
        config = config.name
    builder = JaxmmScenes(config=config, data_dir=data_dir, file_format="array_record")
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
        download_mode=tfds.download.GenerateMode.REUSE_DATASET_IF_EXISTS))
    corpus = corpus_path(builder)
    if not os.path.exists(corpus):
        resolved = builder.builder_config
        with open(corpus + ".tmp", "w", encoding="utf-8") as f:
            f.write("\n".join(text_corpus(resolved)) + "\n")
        os.replace(corpus + ".tmp", corpus)
    log.info("built %s at %s", builder.info.full_name, builder.data_dir)
    return builder


def corpus_path(builder: tfds.core.DatasetBuilder) -> str:
    """Path of the train-split text corpus written by :func:`build`."""
    return os.path.join(os.path.dirname(str(builder.data_dir)), "train_text.txt")
