"""Dual-encoder evaluators: media<->text ``retrieval`` recall@K and ``zero_shot``
classification by text prompts.

``retrieval`` ranks texts against images, videos or audio clips (``modality``;
default: the contrastive task's non-text side); it needs the model's
``encode_<modality>`` and ``encode_text(input_ids, attention_mask)`` methods (CLIP,
``DualEncoder``). ``zero_shot`` needs ``encode_image`` and ``encode_text``.
Embeddings are L2-normalised and compared by cosine similarity.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from jaxmm.config import ConfigBase, ConfigError
from jaxmm.data.device import local_row_indices
from jaxmm.evaluate.evaluators.base import Evaluator, gather_processes, register_evaluator
from jaxmm.evaluate.retrieval import retrieval_recall
from jaxmm.models.specs import audio_to_features

__all__ = ["RetrievalEvaluator", "RetrievalOptions", "ZeroShotEvaluator", "ZeroShotOptions",
           "normalize_rows"]


def normalize_rows(x: np.ndarray) -> np.ndarray:
    """Each row divided by its L2 norm (``(N, D)``)."""
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


# media modality -> (its batch field, the letter of its metric names)
MEDIA = {"image": ("image", "i"), "video": ("video", "v"), "audio": ("input_features", "a")}


def _dual_encoder(evaluator: Evaluator, media: str = "image") -> Any:
    model = evaluator.task.model
    if not (hasattr(model, f"encode_{media}") and hasattr(model, "encode_text")):
        raise ConfigError(f"Evaluator {evaluator.name!r} needs a dual encoder with encode_{media} "
                          f"and encode_text methods (e.g. clip, dual_encoder); "
                          f"{type(model).__name__} lacks one or both.")
    return model


def _media_side(evaluator: Evaluator, wanted: str) -> str:
    """The modality ranked against the texts: ``wanted``, else the task's non-text side,
    else image."""
    if wanted:
        if wanted not in MEDIA:
            raise ConfigError(f"Evaluator {evaluator.name!r}: modality={wanted!r} is not one of "
                              f"{', '.join(MEDIA)}.")
        return wanted
    sides = [m for m in getattr(evaluator.task, "sides", ()) if m != "text"]
    return sides[0] if len(sides) == 1 and sides[0] in MEDIA else "image"


@dataclasses.dataclass(frozen=True)
class RetrievalOptions(ConfigBase):
    """ks: the K of recall@K. modality: ``image``, ``video`` or ``audio`` (``""``: the
    task's non-text side)."""

    ks: tuple[int, ...] = (1, 5, 10)
    modality: str = ""

    def validate(self) -> None:
        if not self.ks or any(int(k) < 1 for k in self.ks):
            raise ConfigError(f"ks must be positive integers; got {self.ks}.")


@register_evaluator("retrieval")
class RetrievalEvaluator(Evaluator):
    """Media->text and text->media recall@K over the whole eval set (images, videos or
    audio clips; below, "image").

    Batches: ``image`` ``(B, H, W, C)`` (or ``video``, or ``audio`` / ``input_features``:
    raw audio becomes the tower's log-mel features), captions ``input_ids`` /
    ``attention_mask`` ``(B, C, T)`` (all captions of each image; a caption
    whose first mask entry is 0 is padding) or ``(B, T)``, and ``image_id``
    (else images are numbered in order). Every caption is ranked against every
    image (:func:`jaxmm.evaluate.retrieval_recall`; ties favour the query).
    Identical captions (same tokens) are embedded once, so they tie exactly
    whatever the batch layout. Metrics: ``i2t_R@K``, ``t2i_R@K``,
    ``mean_recall`` (percent), ``num_images``, ``num_texts`` (video: ``v2t`` /
    ``t2v``; audio: ``a2t`` / ``t2a``; the counts keep their names).
    """

    Options = RetrievalOptions

    def __init__(self, *args: Any):
        super().__init__(*args)
        self.media = _media_side(self, self.options.modality)
        model = _dual_encoder(self, self.media)
        field, self.letter = MEDIA[self.media]
        specs = self.task.input_specs()

        def embed(v, batch):
            if self.media == "audio":
                batch = audio_to_features(batch, specs)
            return model.apply(v, batch[field], method=f"encode_{self.media}")

        self._image = self.jit(embed)
        self._text = self.jit(lambda v, i, m: model.apply(v, i, m, method="encode_text"))

    def _embed_texts(self, variables: Any, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """``(M, D)`` embeddings of ``M`` token rows (the same rows on every process),
        in eval-batch chunks sharded over the mesh."""
        size = self.settings.batch_size
        mine = local_row_indices(size, self.mesh)  # this process's rows of each chunk
        embeddings, index = [], []
        for start in range(0, len(ids), size):
            rows = np.minimum(np.arange(start, start + size), len(ids) - 1)[mine]
            batch = self.global_batch({"input_ids": ids[rows], "attention_mask": mask[rows]})
            embeddings.append(self.host_rows(self._text(variables, batch["input_ids"],
                                                        batch["attention_mask"])))
            index.append(rows)
        every = gather_processes({"emb": np.concatenate(embeddings),
                                  "index": np.concatenate(index)})
        out = np.zeros((len(ids), every["emb"].shape[-1]), every["emb"].dtype)
        out[every["index"]] = every["emb"]
        return out

    def embeddings(self, variables: Any) -> dict[str, np.ndarray]:
        """``image`` ``(N, D)`` and ``image_id`` ``(N,)`` of every eval image;
        ``texts`` ``(M, D)`` and ``text_image_id`` ``(M,)`` of every caption."""

        def step(local, batch):
            ids, mask = local["input_ids"], local["attention_mask"]
            media = {k: batch[k] for k in ("image", "video", "audio", "input_features")
                     if k in batch}
            out = {"image": self.host_rows(self._image(variables, media)),
                   "input_ids": ids if ids.ndim == 3 else ids[:, None],
                   "attention_mask": mask if mask.ndim == 3 else mask[:, None],
                   "mask": local["example_mask"]}
            if "image_id" in local:
                out["image_id"] = local["image_id"]
            return out

        rows = self.collect(step)
        image_ids = rows.get("image_id", np.arange(len(rows["image"])))
        valid = rows["attention_mask"][:, :, 0] > 0
        tokens = np.concatenate([rows["input_ids"][valid], rows["attention_mask"][valid]], -1)
        unique, inverse = np.unique(tokens, axis=0, return_inverse=True)
        length = rows["input_ids"].shape[-1]
        texts = self._embed_texts(variables, unique[:, :length], unique[:, length:])
        return {"image": rows["image"], "image_id": image_ids,
                "texts": texts[inverse.reshape(-1)],
                "text_image_id": np.repeat(image_ids, valid.sum(1))}

    def evaluate(self, variables: Any) -> dict[str, float]:
        rows = self.embeddings(variables)
        images, texts = normalize_rows(rows["image"]), normalize_rows(rows["texts"])
        out = retrieval_recall(images @ texts.T, rows["image_id"], rows["text_image_id"],
                               ks=tuple(int(k) for k in self.options.ks))
        if self.letter != "i":  # v2t / t2v, a2t / t2a
            out = {k.replace("i2t_", f"{self.letter}2t_").replace("t2i_", f"t2{self.letter}_"): v
                   for k, v in out.items()}
        out["num_images"], out["num_texts"] = float(len(images)), float(len(texts))
        return out


@dataclasses.dataclass(frozen=True)
class ZeroShotOptions(ConfigBase):
    """class_names: the classes, in label order. templates: prompts with one ``{}``
    for the class name (a class's text embedding is the normalised mean over its
    prompts). max_length: prompt tokens (padded to it). label_key: the batch's label."""

    class_names: tuple[str, ...] = ()
    templates: tuple[str, ...] = ("a photo of a {}.",)
    max_length: int = 32
    label_key: str = "label"

    def validate(self) -> None:
        bad = [t for t in self.templates if t.count("{}") != 1]
        if not self.templates or bad:
            raise ConfigError(f"templates need exactly one '{{}}' each; got {list(bad) or []}.")


@register_evaluator("zero_shot")
class ZeroShotEvaluator(Evaluator):
    """Zero-shot classification: each image gets the class whose prompt embedding
    is closest (cosine) to its image embedding.

    Batches: ``image`` and the integer label (``label_key``). Needs the run's
    tokenizer. Metrics: ``accuracy`` (fraction) and ``num_images``.
    """

    Options = ZeroShotOptions

    def __init__(self, *args: Any):
        super().__init__(*args)
        if not self.options.class_names:
            raise ConfigError(f"Evaluator {self.name!r}: set class_names (the classes in label "
                              "order).")
        model = _dual_encoder(self)
        self._image = self.jit(lambda v, x: model.apply(v, x, method="encode_image"))
        self._text = jax.jit(lambda v, i, m: model.apply(v, i, m, method="encode_text"),
                             out_shardings=NamedSharding(self.mesh, PartitionSpec()))

    def class_embeddings(self, variables: Any) -> np.ndarray:
        """``(num_classes, D)`` normalised text embeddings of the classes."""
        o = self.options
        prompts = [t.format(name) for name in o.class_names for t in o.templates]
        enc = self.require_tokenizer().encode(prompts, max_length=o.max_length,
                                              padding="max_length")
        emb = np.asarray(self._text(variables, jnp.asarray(enc["input_ids"]),
                                    jnp.asarray(enc["attention_mask"])))
        emb = normalize_rows(emb).reshape(len(o.class_names), len(o.templates), -1)
        return emb[:, 0] if len(o.templates) == 1 else normalize_rows(emb.mean(1))

    def evaluate(self, variables: Any) -> dict[str, float]:
        key = self.options.label_key

        def step(local, batch):
            if key not in local:
                raise ConfigError(f"Evaluator {self.name!r}: the eval batch has no {key!r} "
                                  f"(keys: {sorted(local)}); set label_key or keep the label.")
            return {"image": self.host_rows(self._image(variables, batch["image"])),
                    "label": local[key], "mask": local["example_mask"]}

        rows = self.collect(step)
        scores = normalize_rows(rows["image"]) @ self.class_embeddings(variables).T
        hits = scores.argmax(-1) == rows["label"]
        return {"accuracy": float(np.mean(hits)), "num_images": float(len(hits))}
