"""A deterministic in-memory data source for tests, benchmarks and smoke runs.

:class:`SyntheticSource` satisfies the training-data contract of
``jaxmm.data.make_iterator``: it yields per-process batches (dicts of NumPy
arrays with the shared field names) and has ``get_state()`` /
``set_state(state)`` that restore its position exactly.

Global batch ``b`` is a pure function of ``(seed, b)``; process ``p`` of ``P``
gets rows ``[p * B/P, (p + 1) * B/P)`` of it, so the global batch is the same
for any process count (a run on 2 processes sees exactly the data of a run on
1). The data is *learnable*, so smoke tests can assert that the loss falls:

* ``text``: arithmetic token sequences ``x_t = start + t * stride (mod V)``
  with random lengths (right padding); ``label`` is the stride class.
* ``tagging``: the ``text`` sequences with per-token ``labels`` ``(B, T)``: the
  token's id mod ``num_classes`` (-100 at padding), as token classification reads.
* ``sentence_pairs``: BERT pre-training pairs: segment A (the first half,
  ``token_type_ids`` 0) has random tokens of one topic (a slice of the vocabulary);
  segment B (1) has tokens of the same topic (``next_sentence_label`` 0) or of
  another one (1).
* ``image``: a per-class prototype image plus noise; ``label`` the class.
* ``image_text``: an image of class ``c`` and a caption determined by ``c``
  (``input_ids``/``attention_mask``), ``label`` and ``image_id``.
* ``vqa``: an image of class ``c``, a question of type ``q`` and
  ``label = (c + q) mod num_answers`` (also as answer text:
  ``decoder_input_ids`` / ``labels``).
* ``qa``: ``[BOS] q [EOS] context``; the answer span (``start_positions``/
  ``end_positions``) has ``1 + q % 3`` tokens, depending on the question token ``q``;
  it starts at a ``MASK`` token and, when longer than one token, ends at a ``BOS``
  (``token_type_ids`` 1 on the context).
* ``audio_text``: log-mel-like ``input_features`` whose frames encode the
  caption tokens of class ``c`` (``input_ids``/``attention_mask``).
* ``inputs``: the inputs a model declares (:mod:`jaxmm.models.specs`, passed as
  ``specs``), whatever their modalities: each float input (image, video, audio
  features...) is a per-class prototype of its declared shape plus noise, text
  inputs the caption of class ``c``; also ``label`` and the caption as
  ``input_ids``/``attention_mask`` (the target of captioning). So any
  combination of encoders gets learnable data without a new layout.
* ``text2text``: the ``text`` sequences as the source (``input_ids`` /
  ``attention_mask``) and the same tokens in reverse order, then eos, as the
  target (``labels``, -100 after eos; ``decoder_input_ids`` = bos + the target
  shifted right, ``decoder_attention_mask``), ``seq_len + 1`` long.
* ``detection``: 1 to ``max_objects`` filled rectangles on a noisy background, each
  drawn in its class's colour; ``boxes`` ``(B, max_objects, 4)`` normalised cxcywh,
  ``labels`` ``(B, max_objects)`` and ``box_mask`` (1 = a real object, later ones
  drawn on top).

Token ids ``0..3`` are reserved (pad, bos, eos, mask); content tokens start at 4.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

from jaxmm.config import ConfigError

__all__ = ["LAYOUTS", "PAD", "BOS", "EOS", "MASK", "SyntheticSource", "make_batch"]

PAD, BOS, EOS, MASK = 0, 1, 2, 3
_FIRST = 4
LAYOUTS = ("text", "tagging", "image", "image_text", "vqa", "audio_text", "text2text", "qa",
           "sentence_pairs", "detection", "inputs")

DEFAULT_DIMS: dict[str, Any] = {
    "seq_len": 16, "vocab_size": 64, "image_size": 16, "channels": 3,
    "num_classes": 4, "n_mels": 16, "frames": 32, "min_len_frac": 0.5, "max_objects": 3,
    "video_frames": 4,
}


def _prototypes(seed: int, n: int, shape: tuple[int, ...]) -> np.ndarray:
    return np.random.default_rng([seed, 7919]).normal(size=(n, *shape)).astype(np.float32)


def _token_seqs(rng, starts, strides, length, vocab):
    content = vocab - _FIRST
    t = np.arange(length)[None, :]
    return (_FIRST + (starts[:, None] + t * strides[:, None]) % content).astype(np.int32)


def _lengths_mask(rng, n, length, min_frac):
    lo = max(2, int(np.ceil(length * min_frac)))
    lengths = rng.integers(lo, length + 1, size=n)
    return (np.arange(length)[None, :] < lengths[:, None]).astype(np.int32)


def _caption(cls, length, vocab):
    """A fixed caption per class: bos, class-dependent tokens, eos, pad."""
    n = cls.shape[0]
    ids = np.full((n, length), PAD, np.int32)
    mask = np.zeros((n, length), np.int32)
    body = max(1, min(length - 2, 6))
    t = np.arange(body)[None, :]
    ids[:, 0] = BOS
    ids[:, 1:1 + body] = _FIRST + (cls[:, None] * 5 + t * (cls[:, None] + 1)) % (vocab - _FIRST)
    ids[:, 1 + body] = EOS
    mask[:, :2 + body] = 1
    return ids, mask


def _reversed_targets(ids: np.ndarray, mask: np.ndarray) -> dict[str, np.ndarray]:
    """Teacher-forcing targets of ``text2text``: each row's tokens reversed, then eos."""
    n, length = ids.shape
    lengths = mask.sum(1)
    labels = np.full((n, length + 1), -100, np.int32)
    for i, m in enumerate(lengths):
        labels[i, :m] = ids[i, :m][::-1]
        labels[i, m] = EOS
    dec_mask = (np.arange(length + 1)[None, :] <= lengths[:, None]).astype(np.int32)
    dec = np.concatenate([np.full((n, 1), BOS, np.int32), labels[:, :-1]], 1)
    return {"labels": labels, "decoder_input_ids": np.where(dec_mask == 1, dec, PAD),
            "decoder_attention_mask": dec_mask}


def make_batch(layout: str, index: int, batch_size: int, seed: int = 0,
               split: str = "train", specs: Mapping[str, Any] | None = None,
               **dims: Any) -> dict[str, np.ndarray]:
    """Global batch number ``index`` of ``layout`` (see the module docstring).

    ``seed`` fixes the underlying task (class prototypes); ``split`` picks an
    independent stream of examples from it (train vs validation). ``specs``: the
    model's declared inputs (``{field: InputSpec}``), which the ``inputs`` layout needs.
    """
    if layout not in LAYOUTS:
        raise ConfigError(
            f"Unknown synthetic layout {layout!r}; choose one of {', '.join(LAYOUTS)}.")
    unknown = set(dims) - set(DEFAULT_DIMS)
    if unknown:
        raise ConfigError(
            f"Unknown synthetic data option(s) {sorted(unknown)}; valid: {sorted(DEFAULT_DIMS)}."
        )
    d = {**DEFAULT_DIMS, **{k: v for k, v in dims.items() if v is not None}}
    if d["vocab_size"] < _FIRST + 2:
        raise ConfigError(f"synthetic data: vocab_size must be >= {_FIRST + 2}.")
    rng = np.random.default_rng([seed, sum(map(ord, split)), index])
    n, length, vocab, k = batch_size, d["seq_len"], d["vocab_size"], d["num_classes"]
    out: dict[str, np.ndarray] = {}
    if layout in ("text", "text2text"):
        strides = rng.integers(1, k + 1, size=n)
        ids = _token_seqs(rng, rng.integers(0, vocab, size=n), strides, length, vocab)
        mask = _lengths_mask(rng, n, length, d["min_len_frac"])
        out = {"input_ids": np.where(mask == 1, ids, PAD).astype(np.int32),
               "attention_mask": mask, "token_type_ids": np.zeros_like(mask),
               "label": (strides - 1).astype(np.int32)}
        if layout == "text2text":
            out.update(_reversed_targets(out["input_ids"], mask))
            del out["token_type_ids"], out["label"]
        return out
    if layout == "sentence_pairs":
        # tokens of topic c come from the c-th slice of the content vocabulary
        width = max(1, (vocab - _FIRST) // k)
        topic = rng.integers(0, k, size=n)
        label = rng.integers(0, 2, size=n).astype(np.int32)
        other = (topic + rng.integers(1, max(k, 2), size=n)) % k
        half = length // 2
        topics = np.concatenate([np.repeat(topic[:, None], half, 1),
                                 np.repeat(np.where(label == 1, other, topic)[:, None],
                                           length - half, 1)], 1)
        ids = _FIRST + topics * width + rng.integers(0, width, size=(n, length))
        types = np.zeros((n, length), np.int32)
        types[:, half:] = 1
        return {"input_ids": ids.astype(np.int32), "attention_mask": np.ones_like(types),
                "token_type_ids": types, "next_sentence_label": label}
    if layout == "tagging":
        strides = rng.integers(1, k + 1, size=n)
        ids = _token_seqs(rng, rng.integers(0, vocab, size=n), strides, length, vocab)
        mask = _lengths_mask(rng, n, length, d["min_len_frac"])
        return {"input_ids": np.where(mask == 1, ids, PAD).astype(np.int32),
                "attention_mask": mask, "token_type_ids": np.zeros_like(mask),
                "labels": np.where(mask == 1, ids % k, -100).astype(np.int32)}
    cls = rng.integers(0, k, size=n).astype(np.int32)
    if layout in ("image", "image_text", "vqa"):
        shape = (d["image_size"], d["image_size"], d["channels"])
        protos = _prototypes(seed, k, shape)
        out["image"] = protos[cls] + 0.5 * rng.normal(size=(n, *shape)).astype(np.float32)
        out["label"] = cls
    if layout == "image_text":
        out["input_ids"], out["attention_mask"] = _caption(cls, length, vocab)
        out["image_id"] = (index * batch_size + np.arange(n)).astype(np.int32)
    elif layout == "vqa":
        qtype = rng.integers(0, k, size=n)
        ids, mask = _caption(qtype, length, vocab)
        answer = ((cls + qtype) % k).astype(np.int32)
        # Generative VQA targets: "<bos> answer" -> "answer <eos>".
        token = (_FIRST + answer % (vocab - _FIRST)).astype(np.int32)
        out.update(input_ids=ids, attention_mask=mask, label=answer,
                   decoder_input_ids=np.stack([np.full(n, BOS, np.int32), token], 1),
                   labels=np.stack([token, np.full(n, EOS, np.int32)], 1))
    elif layout == "audio_text":
        ids, mask = _caption(cls, length, vocab)
        table = _prototypes(seed, vocab, (d["n_mels"],))
        frames = d["frames"]
        pos = np.minimum(np.arange(frames) * length // frames, length - 1)
        feats = table[ids[:, pos]] + 0.3 * rng.normal(size=(n, frames, d["n_mels"]))
        out.update(input_features=np.swapaxes(feats, 1, 2).astype(np.float32),
                   input_ids=ids, attention_mask=mask, label=cls)
    elif layout == "qa":
        out = _qa_batch(rng, n, length, vocab)
    elif layout == "detection":
        out = _detection_batch(rng, seed, n, d["image_size"], d["channels"], k,
                               d["max_objects"])
    elif layout == "inputs":
        out = _inputs_batch(rng, seed, cls, specs, d, index)
    return out


def _inputs_batch(rng, seed: int, cls: np.ndarray, specs: Mapping[str, Any] | None,
                  d: Mapping[str, Any], index: int) -> dict[str, np.ndarray]:
    """The ``inputs`` layout: every declared input determined by the class ``cls``."""
    if not specs:
        raise ConfigError("The synthetic 'inputs' layout needs the model's input specs; this "
                          "model declares none (use a layout such as image_text).")
    n, k = cls.shape[0], d["num_classes"]
    ids, mask = _caption(cls, d["seq_len"], d["vocab_size"])
    out = {"input_ids": ids, "attention_mask": mask, "label": cls,
           "image_id": (index * n + np.arange(n)).astype(np.int32)}
    for i, (name, spec) in enumerate(specs.items()):
        if name.startswith("decoder_") or name in ("input_ids", "attention_mask"):
            continue  # the caption above; decoder inputs come from it (the task shifts it)
        shape = spec.resolve(d)
        if np.dtype(spec.dtype).kind == "f":
            protos = np.random.default_rng([seed, 7919, i]).normal(size=(k, *shape))
            out[name] = (protos[cls] + 0.5 * rng.normal(size=(n, *shape))).astype(spec.dtype)
        else:
            out[name] = np.zeros((n, *shape), spec.dtype)
    return out


def _detection_batch(rng, seed: int, n: int, size: int, channels: int, k: int,
                     max_objects: int) -> dict[str, np.ndarray]:
    """The ``detection`` layout (see the module docstring)."""
    colours = _prototypes(seed, k, (channels,))
    image = 0.2 * rng.normal(size=(n, size, size, channels)).astype(np.float32)
    boxes = np.zeros((n, max_objects, 4), np.float32)
    labels = np.zeros((n, max_objects), np.int32)
    mask = np.zeros((n, max_objects), np.int32)
    for i in range(n):
        for j in range(int(rng.integers(1, max_objects + 1))):
            w, h = rng.integers(max(2, size // 5), max(3, size // 2) + 1, size=2)
            x0, y0 = rng.integers(0, size - w + 1), rng.integers(0, size - h + 1)
            c = int(rng.integers(0, k))
            image[i, y0:y0 + h, x0:x0 + w] = colours[c]
            boxes[i, j] = ((x0 + w / 2) / size, (y0 + h / 2) / size, w / size, h / size)
            labels[i, j], mask[i, j] = c, 1
    return {"image": image, "boxes": boxes, "labels": labels, "box_mask": mask}


def _qa_batch(rng, n: int, length: int, vocab: int) -> dict[str, np.ndarray]:
    """The ``qa`` layout (see the module docstring); needs ``seq_len >= 8``."""
    if length < 8:
        raise ConfigError(f"synthetic qa data needs seq_len >= 8; got {length}.")
    content = vocab - _FIRST
    q = rng.integers(0, content, size=n)
    ctx = _FIRST + rng.integers(0, content, size=(n, length - 3))
    pos = rng.integers(0, length - 5, size=n)  # the answer's first token in the context
    ids = np.concatenate([np.full((n, 1), BOS), (_FIRST + q)[:, None], np.full((n, 1), EOS),
                          ctx], axis=1).astype(np.int32)
    rows = np.arange(n)
    start, end = 3 + pos, 3 + pos + q % 3
    ids[rows, end] = np.where(end > start, BOS, ids[rows, end])
    ids[rows, start] = MASK
    types = np.zeros((n, length), np.int32)
    types[:, 3:] = 1
    return {"input_ids": ids, "attention_mask": np.ones((n, length), np.int32),
            "token_type_ids": types, "start_positions": start.astype(np.int32),
            "end_positions": end.astype(np.int32)}


class SyntheticSource(Iterator):
    """Per-process iterator over synthetic global batches (see module docstring).

    Args:
      layout: one of :data:`LAYOUTS`.
      batch_size: the *global* batch size; each process yields
        ``batch_size // process_count`` rows.
      seed: data seed. ``num_batches``: batches per epoch (``None``: endless).
      repeat: start over after ``num_batches`` (else ``StopIteration``).
      nan_at_batch: fill the float fields of that global batch with NaN (to
        test the non-finite guard of the training loop).
      delay_s: sleep this long per batch (emulates a slow input pipeline).
      specs: the model's declared inputs, for the ``inputs`` layout.
      dims: ``seq_len``, ``vocab_size``, ``image_size``, ``channels``,
        ``num_classes``, ``n_mels``, ``frames``, ``min_len_frac``.
    """

    def __init__(self, layout: str, *, batch_size: int, seed: int = 0,
                 process_index: int = 0, process_count: int = 1,
                 num_batches: int | None = None, repeat: bool = True,
                 nan_at_batch: int | None = None, split: str = "train",
                 delay_s: float = 0.0, specs: Mapping[str, Any] | None = None, **dims: Any):
        if batch_size % process_count:
            raise ConfigError(
                f"batch_size={batch_size} is not divisible by the {process_count} processes."
            )
        self.layout, self.batch_size, self.seed = layout, batch_size, seed
        self.process_index, self.process_count = process_index, process_count
        self.num_batches, self.repeat, self.nan_at_batch = num_batches, repeat, nan_at_batch
        self.dims, self.split, self.delay_s = dims, split, delay_s
        self.specs = specs
        make_batch(layout, 0, 1, seed, split, specs, **dims)  # validates layout and dims early
        self._next = 0

    def __next__(self) -> dict[str, np.ndarray]:
        index = self._next
        if self.num_batches is not None:
            if index >= self.num_batches and not self.repeat:
                raise StopIteration
            index %= self.num_batches
        batch = make_batch(self.layout, index, self.batch_size, self.seed, self.split,
                           self.specs, **self.dims)
        if self.nan_at_batch is not None and self._next == self.nan_at_batch:
            batch = {k: np.full_like(v, np.nan) if v.dtype.kind == "f" else v
                     for k, v in batch.items()}
        self._next += 1
        if self.delay_s:
            time.sleep(self.delay_s)
        per = self.batch_size // self.process_count
        lo = self.process_index * per
        return {k: v[lo:lo + per] for k, v in batch.items()}

    def get_state(self) -> dict[str, Any]:
        return {"next_batch": self._next, "seed": self.seed}

    def set_state(self, state: dict[str, Any]) -> None:
        if state.get("seed", self.seed) != self.seed:
            raise ValueError(
                f"Synthetic data state has seed {state['seed']}, this source has {self.seed}."
            )
        self._next = int(state["next_batch"])
