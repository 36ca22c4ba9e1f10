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
``positions``. Windows are aligned to the example stream, which keeps packed
iteration exactly resumable (see :mod:`jaxmm.data.pipeline`).
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
                   eos_id: int | None = None, pad_id: int = 0) -> dict[str, np.ndarray]:
    """Packs ``sequences`` (1-D int arrays) into ``(rows, length)`` arrays (module docstring)."""
    if length < 1:
        raise ValueError(f"pack length must be >= 1, got {length}.")
    seqs = [np.asarray(s, np.int32).reshape(-1) for s in sequences]
    if mode == "concat":
        parts = []
        for s in seqs:
            parts.append(s)
            if eos_id is not None:
                parts.append(np.array([eos_id], np.int32))
        flat = np.concatenate(parts) if parts else np.zeros([0], np.int32)
        n = max(1, -(-len(flat) // length))
        ids = np.full(n * length, pad_id, np.int32)
        ids[: len(flat)] = flat
        mask = np.arange(n * length) < len(flat)
        return {"input_ids": ids.reshape(n, length),
                "attention_mask": mask.reshape(n, length).astype(np.int32),
                "labels": np.where(mask, ids, IGNORE_INDEX).reshape(n, length).astype(np.int32)}
    if mode != "segments":
        raise ValueError(f"Unknown pack mode {mode!r}; use 'concat' or 'segments'.")
    pieces = []
    for s in seqs:
        for i in range(0, max(len(s), 1), length):
            if len(s[i:i + length]):
                pieces.append(s[i:i + length])
    free: list[int] = []  # remaining space per row
    placed: list[list[np.ndarray]] = []
    for p in pieces:
        for r, space in enumerate(free):
            if len(p) <= space:
                placed[r].append(p)
                free[r] -= len(p)
                break
        else:
            placed.append([p])
            free.append(length - len(p))
    out = _rows(length, max(1, len(placed)), pad_id)
    for r, row in enumerate(placed):
        at = 0
        for segment, p in enumerate(row, start=1):
            out["input_ids"][r, at:at + len(p)] = p
            out["segment_ids"][r, at:at + len(p)] = segment
            out["positions"][r, at:at + len(p)] = np.arange(len(p))
            at += len(p)
    mask = out["segment_ids"] > 0
    out["attention_mask"] = mask.astype(np.int32)
    out["labels"] = np.where(mask & (out["positions"] > 0), out["input_ids"],
                             IGNORE_INDEX).astype(np.int32)
    return out
