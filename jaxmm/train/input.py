"""Training/eval data sources of a run: this process's iterator over a split.

Every process reads only its own shard (``batch_size // process_count`` rows
per step); :mod:`jaxmm.data.device` turns the per-process NumPy batches into
global ``jax.Array``s sharded along the batch axis over the mesh's ``data`` and
``fsdp`` axes (with device prefetch in training).

``config.data.name == "synthetic"`` selects :class:`~jaxmm.train.synthetic.SyntheticSource`
(options: ``num_batches``, ``nan_at_batch``, ``layout`` and the layout's
dimensions); anything else goes to ``jaxmm.data.make_iterator``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import jax
import numpy as np

from jaxmm.config import ConfigError
from jaxmm.train.tasks.base import Task

__all__ = ["make_source"]

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
            split=split, delay_s=float(data.get("delay_s") or 0.0),
            specs=task.input_specs(), **dims,
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
