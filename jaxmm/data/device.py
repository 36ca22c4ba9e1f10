"""Per-process host batches <-> global sharded ``jax.Array`` batches, with prefetch.

Each process's iterator yields its slice of the global batch;
:func:`make_global_batch` assembles the global arrays with
``jax.make_array_from_process_local_data`` (batch axis sharded over the
mesh's data axes), and :class:`DevicePrefetchIterator` keeps a few of them in
flight on device while still reporting the *consumed* position in
``get_state()``. The training loop feeds every step through it.

For evaluation, :func:`pad_batch` pads a short last batch (``example_mask``
marks the real rows), :func:`any_process` lets every process agree that the
data has ended, and :func:`host_local_rows` turns a batch-sharded model output
back into this process's rows (the inverse of :func:`make_global_batch`).
"""

from __future__ import annotations

import collections
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxmm.config import ConfigError

__all__ = [
    "DevicePrefetchIterator",
    "any_process",
    "batch_axis_size",
    "host_local_rows",
    "local_row_indices",
    "make_global_batch",
    "pad_batch",
    "prefetch_to_device",
]

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


def local_row_indices(rows: int, mesh: Mesh, data_axes: Sequence[str] = DATA_AXES
                      ) -> np.ndarray:
    """Global indices of this process's rows of a ``rows``-row global batch, in the
    order of its local batch (as :func:`make_global_batch` lays them out)."""
    sharding = _sharding(mesh, 1, data_axes)
    spans = {(s[0].start or 0, rows if s[0].stop is None else s[0].stop)
             for s in sharding.addressable_devices_indices_map((rows,)).values()}
    return np.concatenate([np.arange(a, b) for a, b in sorted(spans)])


def host_local_rows(x: Any, mesh: Mesh, data_axes: Sequence[str] = DATA_AXES) -> np.ndarray:
    """This process's rows of a global array whose axis 0 is the batch.

    The rows come in the order of the local batch given to
    :func:`make_global_batch`, so host-side data of that batch (strings, ids)
    lines up with them. With one process this is ``np.asarray(x)``; an array
    every process holds whole (replicated, or a host array) is indexed with
    :func:`local_row_indices`.
    """
    if jax.process_count() == 1:
        return np.asarray(x)
    if not isinstance(x, jax.Array) or x.is_fully_addressable:
        return np.asarray(x)[local_row_indices(len(x), mesh, data_axes)]
    from jax.experimental import multihost_utils

    spec = PartitionSpec(tuple(data_axes))
    x = jax.jit(lambda a: a, out_shardings=NamedSharding(mesh, spec))(x)
    return np.asarray(multihost_utils.global_array_to_host_local_array(x, mesh, spec))


def pad_batch(local: Mapping[str, np.ndarray], rows: int) -> dict[str, np.ndarray]:
    """Pads a short batch to ``rows`` rows and sets ``example_mask`` (1 real, 0 pad).

    An ``example_mask`` already in the batch (padding rows from the data
    iterator) is kept for the real rows. String fields are padded with ``b""``.
    """
    n = len(next(iter(local.values())))
    if n > rows:
        raise ValueError(f"Batch has {n} rows, more than the per-process size {rows}.")

    def pad(v):
        v = np.asarray(v)
        if n == rows:
            return v
        empty = {"O": b"", "S": b"", "U": ""}.get(v.dtype.kind, 0)
        fill = np.full((rows - n, *v.shape[1:]), empty, v.dtype)
        return np.concatenate([v, fill])

    out = {k: pad(v) for k, v in local.items()}
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


class DevicePrefetchIterator(Iterator):
    """Wraps a host iterator (with ``get_state``/``set_state``): yields global
    device batches, ``size`` of them prefetched.

    While the device runs step ``s`` (dispatch is asynchronous), the host reads
    and transfers the batches of the next ``size`` steps, so input work and
    host-to-device copies overlap the computation. ``size=0`` converts each
    batch only when it is asked for (no batch in flight).

    ``get_state()`` is the host state right after the last batch *returned*
    (not the prefetched ones), so saving and restoring neither repeats nor
    skips batches.
    """

    def __init__(self, host: Any, mesh: Mesh, size: int = 2,
                 data_axes: Sequence[str] = DATA_AXES):
        if int(size) < 0:
            raise ConfigError(f"Device prefetch size must be >= 0; got {size}.")
        self.host = host
        self.mesh = mesh
        self.size = int(size)
        self.data_axes = tuple(data_axes)
        self._queue: collections.deque = collections.deque()
        self._state = host.get_state()
        self._exhausted = False

    def _fill(self, count: int) -> None:
        while not self._exhausted and len(self._queue) < count:
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
        self._fill(max(self.size, 1))
        if not self._queue:
            raise StopIteration
        batch, self._state = self._queue.popleft()
        self._fill(self.size)
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
