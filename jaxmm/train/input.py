"""Training/eval data for the loop: per-process iterators -> global sharded batches.

Every process reads only its own shard (``batch_size // process_count`` rows
per step); :func:`to_global` assembles the per-process NumPy batches into
global ``jax.Array``s sharded along the batch axis over the mesh's ``data`` and
``fsdp`` axes (``jax.make_array_from_process_local_data``).

``config.data.name == "synthetic"`` selects :class:`~jaxmm.train.synthetic.SyntheticSource`
(options: ``num_batches``, ``nan_at_batch``, ``layout`` and the layout's
dimensions); anything else goes to ``jaxmm.data.make_iterator``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh

from jaxmm.config import ConfigError
from jaxmm.sharding import batch_sharding
from jaxmm.train.tasks.base import Task

__all__ = ["any_process", "make_source", "pad_batch", "to_global"]

_SYNTHETIC_OPTIONS = ("name", "num_batches", "nan_at_batch", "layout", "seed", "delay_s")


def make_source(data: Mapping[str, Any] | None, *, task: Task, split: str, batch_size: int,
                seed: int, shuffle: bool, repeat: bool, tokenizer: Any = None,
                num_batches: int | None = None) -> Iterator[dict[str, np.ndarray]]:
    """This process's iterator over ``split`` (global ``batch_size``)."""
    data = dict(data or {"name": "synthetic"})
    pi, pc = jax.process_index(), jax.process_count()
    if data.get("name") == "synthetic":
        from jaxmm.train.synthetic import SyntheticSource

        dims = {**task.synthetic_dims(),
                **{k: v for k, v in data.items() if k not in _SYNTHETIC_OPTIONS}}
        return SyntheticSource(
            data.get("layout") or task.layout, batch_size=batch_size,
            seed=int(data.get("seed") or 0), process_index=pi, process_count=pc,
            num_batches=num_batches or data.get("num_batches"), repeat=repeat,
            nan_at_batch=data.get("nan_at_batch") if split == "train" else None,
            split=split, delay_s=float(data.get("delay_s") or 0.0), **dims,
        )
    try:
        from jaxmm.data import make_iterator
    except ImportError as e:
        raise ConfigError(
            f"data.name={data.get('name')!r} needs the jaxmm.data package ({e}). "
            "Use data.name='synthetic' for a synthetic run."
        ) from None
    return make_iterator(data, split=split, batch_size=batch_size, seed=seed, shuffle=shuffle,
                         repeat=repeat, process_index=pi, process_count=pc,
                         tokenizer=tokenizer)


def to_global(local: Mapping[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
    """Per-process batch -> global arrays sharded over (data, fsdp) on axis 0.

    Non-numeric entries (e.g. answer strings for host-side metrics) are dropped.
    """
    out = {}
    for key, value in local.items():
        value = np.asarray(value)
        if value.dtype.kind not in "biuf":  # strings kept for host-side metrics
            continue
        out[key] = jax.make_array_from_process_local_data(
            batch_sharding(mesh, value.ndim), value)
    return out


def pad_batch(local: Mapping[str, np.ndarray], rows: int) -> dict[str, np.ndarray]:
    """Pads a short batch to ``rows`` rows and sets ``example_mask`` (1 real, 0 pad).

    An ``example_mask`` already in the batch (padding rows from the data
    iterator) is kept for the real rows.
    """
    n = len(next(iter(local.values())))
    if n > rows:
        raise ValueError(f"Batch has {n} rows, more than the per-process size {rows}.")
    out = {k: np.concatenate([v, np.zeros((rows - n, *np.shape(v)[1:]), np.asarray(v).dtype)])
           if n < rows else np.asarray(v) for k, v in local.items()}
    mask = np.zeros((rows,), np.float32)
    # Keep the iterator's own mask (jaxmm.data pads eval streams itself).
    mask[:n] = np.asarray(local["example_mask"], np.float32) if "example_mask" in local else 1.0
    out["example_mask"] = mask
    return out


def any_process(flag: bool) -> bool:
    """True if ``flag`` is True on any process (a tiny all-gather when multi-process)."""
    if jax.process_count() == 1:
        return bool(flag)
    from jax.experimental import multihost_utils

    return bool(np.any(multihost_utils.process_allgather(np.asarray([flag]))))
