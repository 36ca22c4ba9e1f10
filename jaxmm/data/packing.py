"""Sequence packing for language-model training streams.

Packing groups a *window* of consecutive examples (variable-length token ids)
into fixed-length rows:

* ``mode="concat"`` (GPT-style): the sequences, each followed by ``eos_id``
  when given, are concatenated and cut into rows of ``length``; every row is
  full except the window's last, which is padded. Documents may span rows.
* ``mode="segments"`` (T5-style): whole sequences are placed first-fit into
  rows (longer ones are split into ``length`` pieces); rows carry
  ``segment_ids`` (1, 2, ... per sequence, 0 = padding) and ``positions``
  (offset inside each segment) for models that mask attention per segment.

Rows have ``input_ids``, ``attention_mask``, ``labels`` (ids, -100 at padding
and, in segments mode, at the first token of every segment so no token is
predicted across a boundary), and in segments mode ``segment_ids`` and
``positions``. Sequences may bring their own labels (``labels=``, e.g. chat
conversations whose prompts are -100), which are packed alongside the ids.
Windows are aligned to the example stream, which keeps packed iteration exactly
resumable (see :mod:`jaxmm.data.pipeline`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["pack_sequences"]

IGNORE_INDEX = -100


def _rows(length: int, n: int, pad_id: int) -> dict[str, np.ndarray]:
    return {"input_ids": np.full((n, length), pad_id, np.int32),
            "segment_ids": np.zeros((n, length), np.int32),
            "positions": np.zeros((n, length), np.int32)}


def pack_sequences(sequences: Sequence[np.ndarray], length: int, mode: str = "concat",
                   eos_id: int | None = None, pad_id: int = 0,
                   labels: Sequence[np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """Packs ``sequences`` (1-D int arrays) into ``(rows, length)`` arrays (module
    docstring); ``labels``, one array per sequence of the same length, replace the ids as
    labels (an appended ``eos_id`` is labelled with itself)."""
    if length < 1:
        raise ValueError(f"pack length must be >= 1, got {length}.")
    seqs = [np.asarray(s, np.int32).reshape(-1) for s in sequences]
    if labels is None:
        tags = seqs
    else:
        tags = [np.asarray(t, np.int32).reshape(-1) for t in labels]
        if [len(t) for t in tags] != [len(s) for s in seqs]:
            raise ValueError("pack: every sequence needs labels of its own length; got "
                             f"{[len(s) for s in seqs]} ids vs {[len(t) for t in tags]} labels.")
    if mode == "concat":
        parts, label_parts = [], []
        for s, t in zip(seqs, tags):
            parts.append(s)
            label_parts.append(t)
            if eos_id is not None:
                parts.append(np.array([eos_id], np.int32))
                label_parts.append(parts[-1])
        flat = np.concatenate(parts) if parts else np.zeros([0], np.int32)
        flat_labels = np.concatenate(label_parts) if parts else flat
        n = max(1, -(-len(flat) // length))
        ids = np.full(n * length, pad_id, np.int32)
        ids[: len(flat)] = flat
        out_labels = np.full(n * length, IGNORE_INDEX, np.int32)
        out_labels[: len(flat)] = flat_labels
        mask = np.arange(n * length) < len(flat)
        return {"input_ids": ids.reshape(n, length),
                "attention_mask": mask.reshape(n, length).astype(np.int32),
                "labels": out_labels.reshape(n, length)}
    if mode != "segments":
        raise ValueError(f"Unknown pack mode {mode!r}; use 'concat' or 'segments'.")
    pieces = []
    for s, t in zip(seqs, tags):
        for i in range(0, max(len(s), 1), length):
            if len(s[i:i + length]):
                pieces.append((s[i:i + length], t[i:i + length]))
    free: list[int] = []  # remaining space per row
    placed: list[list[tuple[np.ndarray, np.ndarray]]] = []
    for p in pieces:
        for r, space in enumerate(free):
            if len(p[0]) <= space:
                placed[r].append(p)
                free[r] -= len(p[0])
                break
        else:
            placed.append([p])
            free.append(length - len(p[0]))
    out = _rows(length, max(1, len(placed)), pad_id)
    out_labels = np.full((len(out["input_ids"]), length), IGNORE_INDEX, np.int32)
    for r, row in enumerate(placed):
        at = 0
        for segment, (p, t) in enumerate(row, start=1):
            out["input_ids"][r, at:at + len(p)] = p
            out_labels[r, at + 1:at + len(p)] = t[1:]  # never predicted across segments
            out["segment_ids"][r, at:at + len(p)] = segment
            out["positions"][r, at:at + len(p)] = np.arange(len(p))
            at += len(p)
    out["attention_mask"] = (out["segment_ids"] > 0).astype(np.int32)
    out["labels"] = out_labels
    return out
