"""Declarative tensor mapping between Hugging Face checkpoints and jaxmm params.

A family converter declares ONE :class:`Table` of rules. Each rule ties a
Hugging Face tensor name to one or more jaxmm param paths (``/``-joined) and
an invertible :class:`Transform`; :func:`import_params` walks the table one
way, :func:`export_params` walks it back, so a layout is written once::

    Table.of(
        Rule("wte.weight", "token_embedding/embedding"),
        stack("h.{i}.", "decoder", num_layers, scan, [
            Rule("attn.c_attn.weight", ("self_attention/query/kernel",
                 "self_attention/key/kernel", "self_attention/value/kernel"),
                 Chain(Split(3), Heads(-1, num_heads))),
            ...]),
        ignore=(r"\\.attn\\.masked_bias$",))

``{i}`` in a rule is the layer index: the rule stands for ``layers`` copies,
``h.0...``, ``h.1...`` <-> ``decoder/layers_0/...``; with ``scan=True`` the
copies are stacked on a new leading axis at ``decoder/layers/...`` (the
``nn.scan`` layout of :class:`~jaxmm.layers.TransformerStack`).

Optional parts (biases, cross-attention, poolers, heads) are present in a
table or not, decided where the table is built from the config. Three rule
kinds cover the rest: :class:`Zeros` (a param Hugging Face lacks, imported as
zeros and dropped on export), :class:`Tied` (a Hugging Face tensor that must
equal a param, e.g. a tied LM head; checked on import, written on export
only if asked) and ``Table.ignore`` (buffers consumed unused).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from typing import Any

import flax.linen as nn
import jax
import numpy as np
from flax import traverse_util

from jaxmm.convert.io import ConversionError, TensorStore

__all__ = [
    "CONV",
    "IDENTITY",
    "TRANSPOSE",
    "Chain",
    "DropAxis",
    "Heads",
    "Reshape",
    "Rule",
    "Split",
    "Table",
    "Tied",
    "Transform",
    "Zeros",
    "export_params",
    "import_params",
    "stack",
    "to_numpy_tree",
]

Values = np.ndarray | tuple[np.ndarray, ...]


# ---------------------------------------------------------------------------
# Transforms: invertible pairs (Hugging Face layout <-> jaxmm layout)
# ---------------------------------------------------------------------------


class Transform:
    """``to_jax(hf_array) -> jaxmm array``; ``to_hf`` is its inverse.

    ``fans_out``: ``to_jax`` returns a tuple (one array per jaxmm path) and
    ``to_hf`` takes one. Other transforms act on each array of a tuple.
    """

    fans_out = False

    def to_jax(self, x: Any) -> Any:
        return x

    def to_hf(self, x: Any) -> Any:
        return x


IDENTITY = Transform()


class _Transpose(Transform):
    """PyTorch ``Linear.weight`` ``(out, in)`` <-> Flax ``Dense`` kernel ``(in, out)``."""

    def to_jax(self, x):
        return _two_d(x).T

    def to_hf(self, x):
        return _two_d(x).T


class _Conv(Transform):
    """PyTorch conv weight ``(out, in, *k)`` <-> Flax kernel ``(*k, in, out)``."""

    def to_jax(self, x):
        return np.moveaxis(x, (0, 1), (-1, -2))

    def to_hf(self, x):
        return np.moveaxis(x, (-1, -2), (0, 1))


TRANSPOSE, CONV = _Transpose(), _Conv()


def _two_d(x: np.ndarray) -> np.ndarray:
    if x.ndim != 2:
        raise ValueError(f"expected a 2-d matrix, got {x.ndim}-d")
    return x


@dataclasses.dataclass(frozen=True)
class Heads(Transform):
    """Axis ``axis`` of size ``H*D`` <-> two axes ``(H, D)`` (``heads=H``).

    ``Heads(-1, H)`` turns a ``(E, H*D)`` kernel into ``(E, H, D)`` and a
    ``(H*D,)`` bias into ``(H, D)``; ``Heads(0, H)`` turns ``(H*D, E)`` into
    ``(H, D, E)`` (an attention output projection).
    """

    axis: int
    heads: int

    def to_jax(self, x):
        axis = self.axis % x.ndim
        if x.shape[axis] % self.heads:
            raise ValueError(f"axis {axis} of size {x.shape[axis]} does not split into "
                             f"{self.heads} heads")
        return x.reshape(x.shape[:axis] + (self.heads, -1) + x.shape[axis + 1:])

    def to_hf(self, x):
        axis = self.axis % (x.ndim - 1)
        return x.reshape(x.shape[:axis] + (-1,) + x.shape[axis + 2:])


@dataclasses.dataclass(frozen=True)
class Split(Transform):
    """One fused tensor <-> ``parts`` equal pieces along ``axis`` (e.g. GPT-2's
    ``c_attn`` holds query, key and value side by side)."""

    parts: int
    axis: int = -1
    fans_out = True

    def to_jax(self, x):
        if x.shape[self.axis] % self.parts:
            raise ValueError(f"axis {self.axis} of size {x.shape[self.axis]} does not split "
                             f"into {self.parts} equal parts")
        return tuple(np.split(x, self.parts, axis=self.axis))

    def to_hf(self, x):
        return np.concatenate(x, axis=self.axis)


@dataclasses.dataclass(frozen=True)
class DropAxis(Transform):
    """A size-1 axis Hugging Face keeps and jaxmm drops (ViT's ``(1, N, D)``
    position table is ``(N, D)`` in jaxmm)."""

    axis: int = 0

    def to_jax(self, x):
        return np.squeeze(x, self.axis)

    def to_hf(self, x):
        return np.expand_dims(x, self.axis)


@dataclasses.dataclass(frozen=True)
class Reshape(Transform):
    """``to_jax`` reshapes to ``ours``, ``to_hf`` to ``theirs`` (e.g. scalars)."""

    ours: tuple[int, ...]
    theirs: tuple[int, ...]

    def to_jax(self, x):
        return x.reshape(self.ours)

    def to_hf(self, x):
        return x.reshape(self.theirs)


class Chain(Transform):
    """Transforms applied in order on import and in reverse order on export."""

    def __init__(self, *steps: Transform):
        self.steps = steps

    @property
    def fans_out(self) -> bool:
        return any(s.fans_out for s in self.steps)

    def to_jax(self, x):
        for step in self.steps:
            x = step.to_jax(x) if step.fans_out else _each(step.to_jax, x)
        return x

    def to_hf(self, x):
        for step in reversed(self.steps):
            x = step.to_hf(x) if step.fans_out else _each(step.to_hf, x)
        return x


def _each(fn, x):
    return tuple(fn(a) for a in x) if isinstance(x, tuple) else fn(x)


# ---------------------------------------------------------------------------
# Rules
# ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Rule:
    """Hugging Face tensor ``hf`` <-> jaxmm param ``path`` (or several paths,
    for a fused tensor) through ``transform``.

    ``layers``: when > 0, ``{i}`` in ``hf`` and ``path`` runs over
    ``range(layers)``; ``scan``: the layers' params are stacked on a leading
    axis at the path with ``layers_{i}`` replaced by ``layers``.
    """

    hf: str
    path: str | tuple[str, ...]
    transform: Transform = IDENTITY
    layers: int = 0
    scan: bool = False

    @property
    def paths(self) -> tuple[str, ...]:
        return (self.path,) if isinstance(self.path, str) else tuple(self.path)

    def under(self, hf_prefix: str, path_prefix: str) -> Rule:
        """The rule with both names prefixed (``path_prefix`` ends with ``/``)."""
        paths = tuple(path_prefix + p for p in self.paths)
        return dataclasses.replace(self, hf=hf_prefix + self.hf if self.hf else "",
                                   path=paths[0] if isinstance(self.path, str) else paths)

    def hf_names(self) -> list[str]:
        return [self.hf.format(i=i) for i in self._indices()] if self.hf else []

    def _indices(self) -> Iterable[int | None]:
        return range(self.layers) if self.layers else (None,)

    def _key(self, path: str, i: int | None) -> str:
        if self.scan:
            return path.replace("layers_{i}", "layers")
        return path.format(i=i) if i is not None else path

    def _pattern(self) -> str:
        return self.hf.replace("{i}", "*")

    def load(self, store: TensorStore, flat: dict, origin: dict) -> None:
        """Takes this rule's tensors from ``store`` into ``flat`` (path -> array)."""
        per_layer = []
        for i in self._indices():
            name = self.hf.format(i=i)
            arr = store.take(name)
            if arr is None:
                return  # recorded by the store; reported by store.finish()
            try:
                values = self.transform.to_jax(arr)
            except ValueError as e:
                store.mismatch(f"{name} {tuple(arr.shape)} -> {self._key(self.paths[0], i)}: {e}")
                return
            per_layer.append(values if isinstance(values, tuple) else (values,))
        for k, path in enumerate(self.paths):
            if self.scan:
                flat[self._key(path, None)] = np.stack([v[k] for v in per_layer])
                origin[self._key(path, None)] = self._pattern()
            else:
                for i, values in zip(self._indices(), per_layer):
                    flat[self._key(path, i)] = values[k]
                    origin[self._key(path, i)] = self.hf.format(i=i)

    def save(self, flat: Mapping[str, np.ndarray], out: dict) -> set[str]:
        """Writes this rule's tensors into ``out``; returns the param paths it read."""
        keys = [self._key(p, None) for p in self.paths] if self.scan else None
        for i in self._indices():
            if not self.scan:
                keys = [self._key(p, i) for p in self.paths]
            arrays = tuple(_param(flat, key, self.hf.format(i=i))[i] if self.scan
                           else _param(flat, key, self.hf.format(i=i)) for key in keys)
            value = self.transform.to_hf(arrays if len(arrays) > 1 else arrays[0])
            out[self.hf.format(i=i)] = np.asarray(value, np.float32)
        return {self._key(p, i) for p in self.paths for i in self._indices()}


def _param(flat: Mapping[str, np.ndarray], key: str, hf: str) -> np.ndarray:
    if key not in flat:
        raise ConversionError(f"Parameter {key} is missing; Hugging Face tensor {hf} needs it.")
    return flat[key]


@dataclasses.dataclass(frozen=True, kw_only=True)
class Zeros(Rule):
    """A jaxmm param with no Hugging Face tensor: zeros of ``shape`` (per layer)
    on import, dropped on export. Exact where the param cannot change the
    outputs (a key bias: softmax ignores a per-query constant)."""

    hf: str = ""
    shape: tuple[int, ...] = ()

    def load(self, store, flat, origin) -> None:
        if self.scan:
            flat[self._key(self.path, None)] = np.zeros((self.layers, *self.shape), np.float32)
        else:
            for i in self._indices():
                flat[self._key(self.path, i)] = np.zeros(self.shape, np.float32)

    def save(self, flat, out) -> set[str]:
        return {self._key(self.path, i) for i in self._indices()}


@dataclasses.dataclass(frozen=True, kw_only=True)
class Tied(Rule):
    """A Hugging Face tensor that holds the same values as the param at ``path``
    (a tied LM head, a shared embedding stored twice).

    Import: optional; when present (after ``transform``) it must equal the
    param (``check``) or the load fails naming ``ref`` (the tensor it copies;
    default: the one the param came from) and ``why``. Export: written only if
    ``write`` (Hugging Face stores some copies and not others).
    """

    ref: str | None = None
    why: str = ""
    check: bool = True
    write: bool = False

    def under(self, hf_prefix: str, path_prefix: str) -> Rule:
        rule = super().under(hf_prefix, path_prefix)
        return dataclasses.replace(rule, ref=hf_prefix + self.ref) if self.ref else rule

    def load(self, store, flat, origin) -> None:
        if self.hf not in store:
            return
        arr = self.transform.to_jax(store.take(self.hf))
        ours = flat.get(self.path)
        if self.check and ours is not None and not np.array_equal(arr, ours):
            ref = self.ref or origin.get(self.path, self.path)
            raise ConversionError(f"{store.source}: {self.hf} differs from {ref}; {self.why}")

    def save(self, flat, out) -> set[str]:
        if self.write:
            out[self.hf] = np.asarray(self.transform.to_hf(_param(flat, self.path, self.hf)),
                                      np.float32)
        return {self.path}


def stack(hf_prefix: str, path: str, layers: int, scan: bool, rules: Iterable[Rule]
          ) -> list[Rule]:
    """Rules of one layer, repeated for a stack of ``layers`` layers.

    ``hf_prefix`` holds ``{i}`` (``"h.{i}."``); ``path`` is the stack's param
    path (``"decoder"``): layer ``i`` lives at ``{path}/layers_{i}/layer/``
    (or stacked at ``{path}/layers/layer/`` with ``scan``).
    """
    return [dataclasses.replace(r.under(hf_prefix, f"{path}/layers_{{i}}/layer/"),
                                layers=layers, scan=scan) for r in rules]


# ---------------------------------------------------------------------------
# Tables and the two walks
# ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Table:
    """A family's rules, plus ``ignore``: regular expressions (``re.search``)
    of Hugging Face tensors to consume unused (buffers, stored copies)."""

    rules: tuple[Rule, ...] = ()
    ignore: tuple[str, ...] = ()

    @classmethod
    def of(cls, *parts: Rule | Table | Iterable[Rule], ignore: Iterable[str] = ()) -> Table:
        """A table from rules, lists of rules and tables (their ignores kept)."""
        rules, ignores = [], list(ignore)
        for part in parts:
            if isinstance(part, Table):
                rules += part.rules
                ignores += part.ignore
            elif isinstance(part, Rule):
                rules.append(part)
            else:
                rules += list(part)
        return cls(tuple(rules), tuple(ignores))

    def __add__(self, other: Table) -> Table:
        return Table.of(self, other)

    def under(self, hf_prefix: str = "", path_prefix: str = "") -> Table:
        """Every rule with its names prefixed (``path_prefix`` like ``"model/"``)."""
        return Table(tuple(r.under(hf_prefix, path_prefix) for r in self.rules), self.ignore)

    def hf_names(self) -> list[str]:
        """Every Hugging Face tensor name the table reads or writes."""
        return [name for rule in self.rules for name in rule.hf_names()]


def to_numpy_tree(params: Any) -> Any:
    """Unboxes logical-partitioning metadata and brings every leaf to host NumPy."""
    if isinstance(params, Mapping) and set(params) == {"params"}:
        params = params["params"]
    params = nn.meta.unbox(params)
    return jax.tree.map(lambda a: np.asarray(jax.device_get(a)), params)


def import_params(table: Table, store: TensorStore, *, into: Mapping | None = None,
                  expected: Any = None, finish: bool = True) -> dict:
    """Builds the nested jaxmm params that ``table`` describes from ``store``.

    Args:
      into: params to add to (e.g. what an earlier table built).
      expected: a params tree (arrays or ``jax.ShapeDtypeStruct``s, e.g. from
        ``jax.eval_shape(model.init, ...)``): every imported leaf must have its
        shape (a mismatch is reported naming the tensor and the path) and is
        cast to its dtype.
      finish: call ``store.finish()``, which raises one error naming every
        missing, unexpected and mis-shaped tensor.

    Returns:
      The params as nested dicts of NumPy arrays.
    """
    store.ignore(*table.ignore)
    flat = traverse_util.flatten_dict(dict(into), sep="/") if into else {}
    origin: dict[str, str] = {}
    for rule in sorted(table.rules, key=lambda r: isinstance(r, Tied)):  # ties last
        rule.load(store, flat, origin)
    if expected is not None:
        want = traverse_util.flatten_dict(nn.meta.unbox(expected), sep="/")
        for path, value in flat.items():
            if path not in want:
                continue
            if tuple(value.shape) != tuple(want[path].shape):
                store.mismatch(f"{origin.get(path, '?')} -> {path}: checkpoint "
                               f"{tuple(value.shape)} vs config {tuple(want[path].shape)}")
            else:
                flat[path] = np.asarray(value, dtype=want[path].dtype)
    if finish:
        store.finish()
    return traverse_util.unflatten_dict(flat, sep="/")


def export_params(table: Table, params: Any) -> dict[str, np.ndarray]:
    """The Hugging Face tensors (float32) that ``table`` describes, from ``params``.

    Every param must be read by some rule, so a table that forgets one fails
    loudly instead of writing an incomplete checkpoint.
    """
    flat = traverse_util.flatten_dict(to_numpy_tree(params), sep="/")
    out: dict[str, np.ndarray] = {}
    used: set[str] = set()
    for rule in table.rules:
        used |= rule.save(flat, out)
    left = sorted(set(flat) - used)
    if left:
        raise ConversionError(
            f"No Hugging Face tensor holds the parameters {', '.join(left[:8])}"
            f"{' ...' if len(left) > 8 else ''}; this model has parts its Hugging Face "
            "format lacks.")
    return out
