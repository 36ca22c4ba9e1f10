"""Per-process host batches -> global sharded ``jax.Array`` batches, with prefetch.

Each process's iterator yields its slice of the global batch;
:func:`make_global_batch` assembles the global arrays with
``jax.make_array_from_process_local_data`` (batch axis sharded over the
mesh's data axes), and :class:`DevicePrefetchIterator` keeps a few of them in
flight on device while still reporting the *consumed* position in
``get_state()``.
"""

from __future__ import annotations

import collections
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxmm.config import ConfigError

__all__ = ["DevicePrefetchIterator", "batch_axis_size", "make_global_batch", "prefetch_to_device"]

DATA_AXES = ("data", "fsdp")


def batch_axis_size(mesh: Mesh, data_axes: Sequence[str] = DATA_AXES) -> int:
    """Number of shards along the batch axis."""
    size = 1
    for a in data_axes:
        size *= mesh.shape[a]
    return size


def _sharding(mesh: Mesh, ndim: int, data_axes: Sequence[str]) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec(tuple(data_axes), *([None] * (ndim - 1))))


def make_global_batch(local: Mapping[str, Any], mesh: Mesh,
                      data_axes: Sequence[str] = DATA_AXES) -> dict[str, jax.Array]:
    """Global arrays from this process's batch (leading axis = local batch).

    Non-numeric entries (e.g. raw strings kept for evaluation) are dropped;
    keep them from the host batch if you need them.
    """
    shards = batch_axis_size(mesh, data_axes)
    out = {}
    for key, value in local.items():
        value = np.asarray(value)
        if value.dtype.kind not in "biuf":
            continue
        global_batch = value.shape[0] * jax.process_count()
        if global_batch % shards:
            raise ConfigError(
                f"Global batch {global_batch} (key {key!r}) is not divisible by the "
                f"{shards} data-parallel shards of the mesh {dict(mesh.shape)}; choose a "
                "batch size that is a multiple of it."
            )
        sharding = _sharding(mesh, value.ndim, data_axes)
        global_shape = (global_batch,) + value.shape[1:]
        out[key] = jax.make_array_from_process_local_data(sharding, value, global_shape)
    return out


class DevicePrefetchIterator(Iterator):
    """Wraps a host iterator (with ``get_state``/``set_state``): yields global
    device batches, ``size`` of them prefetched.

    ``get_state()`` is the host state right after the last batch *returned*
    (not the prefetched ones), so saving and restoring neither repeats nor
    skips batches.
    """

    def __init__(self, host: Any, mesh: Mesh, size: int = 2,
                 data_axes: Sequence[str] = DATA_AXES):
        self.host = host
        self.mesh = mesh
        self.size = max(int(size), 1)
        self.data_axes = tuple(data_axes)
        self._queue: collections.deque = collections.deque()
        self._state = host.get_state()
        self._exhausted = False

    def _fill(self) -> None:
        while not self._exhausted and len(self._queue) < self.size:
            try:
                batch = next(self.host)
            except StopIteration:
                self._exhausted = True
                break
            state = self.host.get_state()
            self._queue.append((make_global_batch(batch, self.mesh, self.data_axes), state))

    def __iter__(self) -> DevicePrefetchIterator:
        return self

    def __next__(self) -> dict[str, jax.Array]:
        self._fill()
        if not self._queue:
            raise StopIteration
        batch, self._state = self._queue.popleft()
        self._fill()
        return batch

    def get_state(self) -> dict:
        return dict(self._state)

    def set_state(self, state: Mapping[str, Any]) -> None:
        self._queue.clear()
        self._exhausted = False
        self.host.set_state(state)
        self._state = self.host.get_state()


def prefetch_to_device(host: Any, mesh: Mesh, size: int = 2,
                       data_axes: Sequence[str] = DATA_AXES) -> DevicePrefetchIterator:
    """See :class:`DevicePrefetchIterator`."""
    return DevicePrefetchIterator(host, mesh, size, data_axes)
