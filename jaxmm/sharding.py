"""Device meshes, logical-axis rules, and shardings for parameters and batches.

Every parameter and block-boundary activation in jaxmm carries *logical* axis
names (``("embed", "mlp")``, ``("batch", "length", "embed")``). A small rules
table maps them to the *mesh* axes ``data``, ``fsdp`` and ``tensor``:

* ``data``: pure data parallelism (params replicated);
* ``fsdp``: data parallelism with params/optimizer state sharded (ZeRO-3);
* ``tensor``: Megatron-style tensor parallelism (heads, MLP width, vocab).

Rules are tried in order and a mesh axis is used at most once per array, so
``batch -> (data, fsdp)`` wins over ``embed -> fsdp`` on activations while
parameters (which have no batch axis) get ``embed`` sharded over ``fsdp``.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

from jaxmm.config import ConfigError

log = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_RULES",
    "MESH_AXES",
    "REPLICATION_WARNING_BYTES",
    "ReplicationWarning",
    "batch_sharding",
    "init_sharded",
    "logical_shardings",
    "logical_to_spec",
    "make_mesh",
    "mesh_shape",
    "param_shardings",
    "replicated",
    "shard_params",
    "shardings_like",
]

MESH_AXES = ("data", "fsdp", "tensor")

# Logical axis -> mesh axis (or axes). Order matters: earlier rules win.
DEFAULT_RULES: tuple[tuple[str, Any], ...] = (
    ("batch", ("data", "fsdp")),
    ("heads", "tensor"),
    ("kv_heads", "tensor"),
    ("mlp", "tensor"),
    ("vocab", "tensor"),
    ("embed", "fsdp"),
    ("length", None),
    ("kv", None),
    ("layers", None),
    ("position", None),
    ("relpos_buckets", None),
)


def mesh_shape(
    data: int = -1, fsdp: int = 1, tensor: int = 1, num_devices: int | None = None
) -> tuple[int, int, int]:
    """Resolves a mesh shape; one axis may be ``-1`` (all remaining devices)."""
    n = jax.device_count() if num_devices is None else num_devices
    sizes = {"data": data, "fsdp": fsdp, "tensor": tensor}
    free = [k for k, v in sizes.items() if v == -1]
    if len(free) > 1:
        raise ConfigError(
            f"mesh: at most one axis may be -1; got {', '.join(f'{k}=-1' for k in free)}."
        )
    for k, v in sizes.items():
        if v == 0 or v < -1:
            raise ConfigError(f"mesh.{k}={v} is invalid; use a positive size or -1.")
    fixed = math.prod(v for v in sizes.values() if v != -1)
    if free:
        if n % fixed:
            raise ConfigError(
                f"mesh: {n} devices cannot be split with "
                f"{', '.join(f'{k}={v}' for k, v in sizes.items() if v != -1)} "
                f"(product {fixed} does not divide {n})."
            )
        sizes[free[0]] = n // fixed
    elif fixed != n:
        raise ConfigError(
            f"mesh: data*fsdp*tensor = {sizes['data']}*{sizes['fsdp']}*{sizes['tensor']} = "
            f"{fixed}, but there are {n} devices. Set one axis to -1 to use all devices."
        )
    return sizes["data"], sizes["fsdp"], sizes["tensor"]


def make_mesh(
    config: Mapping[str, int] | Any | None = None,
    *,
    devices: Sequence[jax.Device] | None = None,
    **sizes: int,
) -> Mesh:
    """Builds a ``(data, fsdp, tensor)`` mesh with Auto axis types.

    ``config`` may be a mapping / ConfigDict with keys ``data``, ``fsdp``,
    ``tensor`` (missing ones default to ``data=-1, fsdp=1, tensor=1``), or pass
    them as keyword arguments.
    """
    values = {"data": -1, "fsdp": 1, "tensor": 1}
    if config is not None:
        keys = list(config.keys()) if hasattr(config, "keys") else []
        for k in keys:
            if k not in values:
                raise ConfigError(
                    f"Unknown mesh axis {k!r}; the mesh axes are {', '.join(MESH_AXES)}."
                )
            values[k] = int(config[k])
    for k, v in sizes.items():
        if k not in values:
            raise ConfigError(f"Unknown mesh axis {k!r}; the mesh axes are {', '.join(MESH_AXES)}.")
        values[k] = int(v)
    devices = list(jax.devices() if devices is None else devices)
    shape = mesh_shape(**values, num_devices=len(devices))
    try:
        from jax.experimental import mesh_utils

        device_array = mesh_utils.create_device_mesh(shape, devices=devices)
    except Exception:  # pragma: no cover - exotic topologies
        device_array = np.asarray(devices).reshape(shape)
    return Mesh(device_array, MESH_AXES, axis_types=(AxisType.Auto,) * len(MESH_AXES))


def logical_to_spec(
    logical: Sequence[str | None] | None, rules: Sequence[tuple[str, Any]] = DEFAULT_RULES
) -> PartitionSpec:
    """Logical axis names of one array -> mesh ``PartitionSpec``."""
    if logical is None:
        return PartitionSpec()
    return nn.logical_to_mesh_axes(tuple(logical), rules)


# An array at least this large that cannot be split as its logical axes ask (a
# mesh axis does not divide a dimension) is reported with a ReplicationWarning.
REPLICATION_WARNING_BYTES = 4 << 20


class ReplicationWarning(UserWarning):
    """Arrays that the sharding rules would split are replicated instead."""


def _fit_spec(spec: PartitionSpec, shape: tuple[int, ...], mesh: Mesh,
              dropped: list[str] | None = None) -> PartitionSpec:
    """Drops mesh axes that do not divide the dimension they would shard.

    Each drop is described in ``dropped`` (when given) as ``"dim i (n) over
    axes"``.
    """
    out = []
    for i, (dim, axes) in enumerate(zip(shape, tuple(spec) + (None,) * (len(shape) - len(spec)))):
        if axes is None:
            out.append(None)
            continue
        names = (axes,) if isinstance(axes, str) else tuple(axes)
        kept = []
        size = 1
        for name in names:
            if dim % (size * mesh.shape[name]) == 0:
                kept.append(name)
                size *= mesh.shape[name]
        if len(kept) < len(names) and dropped is not None:
            lost = [f"{n}={mesh.shape[n]}" for n in names if n not in kept]
            dropped.append(f"dim {i} ({dim}) is not divisible by {', '.join(lost)}")
        out.append(None if not kept else (kept[0] if len(kept) == 1 else tuple(kept)))
    return PartitionSpec(*out)


def logical_shardings(
    abstract_tree: Any,
    mesh: Mesh,
    rules: Sequence[tuple[str, Any]] = DEFAULT_RULES,
) -> Any:
    """``NamedSharding`` for every leaf of a tree of *boxed* (logically annotated) values.

    ``abstract_tree`` is what ``model.init`` (or ``jax.eval_shape`` of it)
    returns: leaves wrapped in ``nn.LogicallyPartitioned``. Unannotated leaves
    are replicated. A mesh axis that does not divide a dimension is dropped
    for that dimension (the array is replicated along it) instead of failing;
    arrays of :data:`REPLICATION_WARNING_BYTES` or more that lose an axis this
    way are named in one :class:`ReplicationWarning`, since each device then
    holds all of them.
    """
    specs = nn.get_partition_spec(abstract_tree)
    unboxed = nn.meta.unbox(abstract_tree)
    replicated_arrays: list[tuple[str, int, str]] = []

    def to_sharding(path, spec, leaf):
        logical = tuple(spec) if spec is not None else ()
        mesh_spec = logical_to_spec(logical, rules) if logical else PartitionSpec()
        dropped: list[str] = []
        shape = tuple(np.shape(leaf))
        fitted = _fit_spec(mesh_spec, shape, mesh, dropped)
        nbytes = math.prod(shape) * np.dtype(getattr(leaf, "dtype", np.float32)).itemsize
        if dropped and nbytes >= REPLICATION_WARNING_BYTES:
            name = "/".join(_tree_key_str(k) for k in path)
            replicated_arrays.append((f"{name} {shape}", nbytes, "; ".join(dropped)))
        return NamedSharding(mesh, fitted)

    out = jax.tree_util.tree_map_with_path(
        to_sharding, specs, unboxed, is_leaf=lambda x: isinstance(x, PartitionSpec)
    )
    if replicated_arrays:
        _warn_replicated(replicated_arrays, mesh)
    return out


def _warn_replicated(arrays: list[tuple[str, int, str]], mesh: Mesh) -> None:
    total = sum(n for _, n, _ in arrays)
    lines = "; ".join(f"{name}: {why}" for name, _, why in arrays[:8])
    more = f"; and {len(arrays) - 8} more" if len(arrays) > 8 else ""
    warnings.warn(
        f"{len(arrays)} array(s) ({total / 2**20:.1f} MiB in all) cannot be split over the "
        f"mesh {dict(mesh.shape)} as their logical axes ask and are replicated on those axes "
        f"instead: {lines}{more}. Pad the dimension to a multiple of the mesh axis size "
        "(e.g. vocab_size), change the mesh shape, or map the logical axis to another mesh "
        "axis in config.sharding_rules.", ReplicationWarning, stacklevel=3)


def param_shardings(
    model: nn.Module, mesh: Mesh, *init_args, rules=DEFAULT_RULES, **init_kwargs
) -> Any:
    """Shardings of ``model.init(...)`` variables, computed without allocating them."""
    abstract = jax.eval_shape(
        lambda: model.init(jax.random.key(0), *init_args, **init_kwargs)
    )
    return logical_shardings(abstract, mesh, rules)


def init_sharded(
    model: nn.Module, rng: jax.Array, *init_args, mesh: Mesh, rules=DEFAULT_RULES,
    **init_kwargs,
) -> tuple[Any, Any]:
    """Initialises ``model`` directly into sharded memory (no host copy of the params).

    Returns ``(variables, shardings)``: plain (unboxed) variables laid out as
    the logical rules say, and the matching tree of ``NamedSharding``.
    """
    init = lambda r: model.init(r, *init_args, **init_kwargs)  # noqa: E731
    shardings = logical_shardings(jax.eval_shape(init, rng), mesh, rules)
    with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
        variables = jax.jit(lambda r: nn.meta.unbox(init(r)), out_shardings=shardings)(rng)
    return variables, shardings


def shard_params(params: Any, shardings: Any) -> Any:
    """Places (unboxed) ``params`` onto ``shardings`` (a tree of NamedSharding)."""
    return jax.tree.map(lambda x, s: jax.device_put(x, s), nn.meta.unbox(params), shardings)


def batch_sharding(mesh: Mesh, ndim: int = 2) -> NamedSharding:
    """Sharding of a batch array: leading axis over ``data`` and ``fsdp``."""
    return NamedSharding(mesh, PartitionSpec(("data", "fsdp"), *([None] * (ndim - 1))))


def replicated(mesh: Mesh) -> NamedSharding:
    """Fully replicated sharding on ``mesh``."""
    return NamedSharding(mesh, PartitionSpec())


def _tree_key_str(key: Any) -> str:
    for attr in ("key", "name", "idx"):
        if hasattr(key, attr):
            return str(getattr(key, attr))
    return str(key)


def shardings_like(tree: Any, params: Any, param_shards: Any, mesh: Mesh) -> Any:
    """Shardings for a tree whose leaves mirror parameters (e.g. optimizer state).

    ``params`` (arrays or ``ShapeDtypeStruct``) and ``param_shards`` (matching
    ``NamedSharding``) are the parameters; ``tree`` (e.g. ``jax.eval_shape`` of
    ``tx.init(params)``) holds leaves whose tree path *ends with* a parameter's
    path. A leaf with that parameter's shape gets its sharding (Adam moments);
    a leaf with one dimension fewer gets it with that dimension dropped
    (Adafactor's factored row/column statistics); anything else (step
    counters, unmatched leaves) is replicated.
    """
    flat_p = jax.tree_util.tree_flatten_with_path(params)[0]
    flat_s = jax.tree.leaves(param_shards, is_leaf=lambda x: isinstance(x, NamedSharding))
    by_path = {
        tuple(_tree_key_str(k) for k in path): (tuple(np.shape(leaf)), sh.spec)
        for (path, leaf), sh in zip(flat_p, flat_s)
    }
    repl = NamedSharding(mesh, PartitionSpec())

    def pick(path, leaf):
        keys = tuple(_tree_key_str(k) for k in path)
        shape = tuple(np.shape(leaf))
        for start in range(len(keys)):
            hit = by_path.get(keys[start:])
            if hit is None:
                continue
            pshape, spec = hit
            entries = tuple(spec) + (None,) * (len(pshape) - len(spec))
            if shape == pshape:
                return NamedSharding(mesh, _fit_spec(PartitionSpec(*entries), shape, mesh))
            if len(shape) == len(pshape) - 1:
                for drop in reversed(range(len(pshape))):
                    if pshape[:drop] + pshape[drop + 1:] == shape:
                        kept = entries[:drop] + entries[drop + 1:]
                        return NamedSharding(mesh, _fit_spec(PartitionSpec(*kept), shape, mesh))
            return repl
        return repl

    return jax.tree_util.tree_map_with_path(pick, tree)
