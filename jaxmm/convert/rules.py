"""Declarative tensor mapping between Hugging Face checkpoints and jaxmm params.

A family declares ONE :class:`Table`: rules that tie a Hugging Face tensor name
to one or more jaxmm param paths (``/``-joined) through an invertible
:class:`Transform`. :func:`params_from_hf` walks the table one way and
:func:`params_to_hf` the other, so each layout is written once::

    Table.of(
        Rule("wte.weight", "token_embedding/embedding"),
        stack("h.{i}.", "decoder", num_layers, scan_layers, [
            Rule("attn.c_proj.weight", "self_attention/out/kernel", heads(0, num_heads)),
            ...]),
        ignore=(r"\\.attn\\.masked_bias$",))

``{i}`` is the layer index: a rule made by :func:`stack` stands for
``h.0...`` <-> ``decoder/layers_0/layer/...`` and so on; with ``scan`` the
layers are stacked on a leading axis at ``decoder/layers/layer/...`` (the
``nn.scan`` layout of :class:`~jaxmm.layers.TransformerStack`).

Optional parts (biases, cross-attention, poolers, heads) are in a table or not,
as the config says where the table is built. Besides :class:`Rule`:
:class:`Zeros` (a param Hugging Face lacks: zeros on import, dropped on
export), :class:`Tied` (a stored copy of a param, e.g. a tied LM head: checked
on import, written on export only if asked) and ``Table.ignore`` (buffers).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import flax.linen as nn
import jax
import numpy as np
from flax import traverse_util

from jaxmm.convert.io import ConversionError, TensorStore

__all__ = [
    "CONV",
    "IDENTITY",
    "SCALAR",
    "TRANSPOSE",
    "Rule",
    "Table",
    "Tied",
    "Transform",
    "Zeros",
    "chain",
    "heads",
    "params_from_hf",
    "params_to_hf",
    "split",
    "squeeze",
    "stack",
    "to_numpy_tree",
]


# ---------------------------------------------------------------------------
# Transforms: invertible pairs (Hugging Face layout <-> jaxmm layout)
# ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Transform:
    """``to_jax`` (Hugging Face array -> jaxmm array) and its inverse ``to_hf``.

    ``fans_out``: ``to_jax`` returns a tuple (one array per jaxmm path) and
    ``to_hf`` takes one; other transforms act on each array of a tuple.
    A ``ValueError`` from ``to_jax`` reports the tensor as mis-shaped.
    """

    to_jax: Callable[[Any], Any]
    to_hf: Callable[[Any], Any]
    fans_out: bool = False


def _transposed(x: np.ndarray) -> np.ndarray:
    if x.ndim != 2:
        raise ValueError(f"expected a 2-d matrix, got {x.ndim}-d")
    return x.T


IDENTITY = Transform(lambda x: x, lambda x: x)
# PyTorch Linear.weight (out, in) <-> Flax Dense kernel (in, out).
TRANSPOSE = Transform(_transposed, _transposed)
# PyTorch conv weight (out, in, *k) <-> Flax kernel (*k, in, out).
CONV = Transform(lambda x: np.moveaxis(x, (0, 1), (-1, -2)),
                 lambda x: np.moveaxis(x, (-1, -2), (0, 1)))
SCALAR = Transform(lambda x: x.reshape(()), lambda x: x.reshape(()))  # 0-d either way


def heads(axis: int, num_heads: int) -> Transform:
    """Axis ``axis`` of size ``H*D`` <-> two axes ``(H, D)``.

    ``heads(-1, H)``: a ``(E, H*D)`` kernel <-> ``(E, H, D)``, a ``(H*D,)``
    bias <-> ``(H, D)``; ``heads(0, H)``: ``(H*D, E)`` <-> ``(H, D, E)``.
    """

    def to_jax(x):
        ax = axis % x.ndim
        if x.shape[ax] % num_heads:
            raise ValueError(f"axis {ax} of size {x.shape[ax]} does not split into "
                             f"{num_heads} heads")
        return x.reshape(x.shape[:ax] + (num_heads, -1) + x.shape[ax + 1:])

    def to_hf(x):
        ax = axis % (x.ndim - 1)
        return x.reshape(x.shape[:ax] + (-1,) + x.shape[ax + 2:])

    return Transform(to_jax, to_hf)


def split(parts: int, axis: int = -1) -> Transform:
    """One fused tensor <-> ``parts`` equal pieces along ``axis`` (GPT-2's ``c_attn``)."""

    def to_jax(x):
        if x.shape[axis] % parts:
            raise ValueError(f"axis {axis} of size {x.shape[axis]} does not split into "
                             f"{parts} equal parts")
        return tuple(np.split(x, parts, axis=axis))

    return Transform(to_jax, lambda xs: np.concatenate(xs, axis=axis), fans_out=True)


def squeeze(axis: int = 0) -> Transform:
    """A size-1 axis that Hugging Face keeps and jaxmm drops (ViT's ``(1, N, D)``)."""
    return Transform(lambda x: np.squeeze(x, axis), lambda x: np.expand_dims(x, axis))


def chain(*steps: Transform) -> Transform:
    """``steps`` in order on import, in reverse order on export."""

    def run(x, fns):
        for step, fn in fns:
            x = fn(x) if step.fans_out or not isinstance(x, tuple) else tuple(map(fn, x))
        return x

    return Transform(lambda x: run(x, [(s, s.to_jax) for s in steps]),
                     lambda x: run(x, [(s, s.to_hf) for s in reversed(steps)]),
                     fans_out=any(s.fans_out for s in steps))


# ---------------------------------------------------------------------------
# Rules
# ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Rule:
    """Tensor ``hf`` <-> param ``path`` (several paths for a fused tensor).

    ``layers`` > 0: ``{i}`` in both names runs over ``range(layers)``;
    ``scan``: the layers are stacked on a leading axis at the path with
    ``layers_{i}`` replaced by ``layers``.
    """

    hf: str
    path: str | tuple[str, ...]
    transform: Transform = IDENTITY
    layers: int = 0
    scan: bool = False

    @property
    def paths(self) -> tuple[str, ...]:
        return (self.path,) if isinstance(self.path, str) else self.path

    def under(self, hf_prefix: str, path_prefix: str) -> Rule:
        """The rule with both names prefixed (``path_prefix`` ends with ``/``)."""
        paths = tuple(path_prefix + p for p in self.paths)
        return dataclasses.replace(self, hf=hf_prefix + self.hf if self.hf else "",
                                   path=paths[0] if isinstance(self.path, str) else paths)

    def indices(self) -> Iterable[int | None]:
        return range(self.layers) if self.layers else (None,)

    def hf_names(self) -> list[str]:
        return [self.hf.format(i=i) for i in self.indices()] if self.hf else []

    def key(self, path: str, i: int | None) -> str:
        """Where layer ``i`` of ``path`` lives in the flat params."""
        return path.replace("layers_{i}", "layers") if self.scan else path.format(i=i)

    def keys(self) -> set[str]:
        return {self.key(p, i) for p in self.paths for i in self.indices()}

    def load(self, store: TensorStore, flat: dict, origin: dict) -> None:
        """Takes the tensors from ``store`` into ``flat`` (path -> array); ``origin``
        records which tensor each path came from (for messages)."""
        per_layer = []
        for i in self.indices():  # every layer, so that all problems are reported
            name = self.hf.format(i=i)
            arr = store.take(name)  # a missing one is recorded by the store
            try:
                values = None if arr is None else self.transform.to_jax(arr)
            except ValueError as e:
                store.mismatch(f"{name} {arr.shape} -> {self.key(self.paths[0], i)}: {e}")
                values = None
            per_layer.append(values if isinstance(values, tuple | None) else (values,))
        if any(values is None for values in per_layer):
            return
        for k, path in enumerate(self.paths):
            if self.scan:
                key = self.key(path, None)
                flat[key] = np.stack([values[k] for values in per_layer])
                origin[key] = self.hf.replace("{i}", "*")
                continue
            for i, values in zip(self.indices(), per_layer):
                flat[self.key(path, i)], origin[self.key(path, i)] = values[k], self.hf.format(i=i)

    def save(self, flat: Mapping[str, np.ndarray], out: dict) -> set[str]:
        """Writes the tensors into ``out``; returns the param paths it read."""
        for i in self.indices():
            arrays = tuple(self.read(flat, path, i) for path in self.paths)
            value = self.transform.to_hf(arrays if len(arrays) > 1 else arrays[0])
            out[self.hf.format(i=i)] = np.asarray(value, np.float32)
        return self.keys()

    def read(self, flat: Mapping[str, np.ndarray], path: str, i: int | None) -> np.ndarray:
        key = self.key(path, i)
        if key not in flat:
            raise ConversionError(f"Parameter {key} is missing; it is exported as "
                                  f"{self.hf.format(i=i)}.")
        return flat[key][i] if self.scan else flat[key]


@dataclasses.dataclass(frozen=True, kw_only=True)
class Zeros(Rule):
    """A param with no Hugging Face tensor: zeros of ``shape`` (per layer) on
    import, dropped on export. Exact where the param cannot change outputs (a
    key bias: softmax ignores a constant per query)."""

    hf: str = ""
    shape: tuple[int, ...] = ()

    def load(self, store, flat, origin) -> None:
        for key in self.keys():
            flat[key] = np.zeros(((self.layers,) if self.scan else ()) + self.shape, np.float32)

    def save(self, flat, out) -> set[str]:
        return self.keys()


@dataclasses.dataclass(frozen=True, kw_only=True)
class Tied(Rule):
    """A stored copy of the param at ``path`` (a tied LM head, a shared embedding).

    Import: optional; when present it must equal the param (if ``check``), or
    the load fails naming ``ref`` (default: the tensor the param came from) and
    ``why``. Export: written only if ``write`` (HF stores some copies, not others).
    """

    ref: str | None = None
    why: str = ""
    check: bool = True
    write: bool = False

    def under(self, hf_prefix: str, path_prefix: str) -> Rule:
        rule = super().under(hf_prefix, path_prefix)
        return dataclasses.replace(rule, ref=hf_prefix + self.ref) if self.ref else rule

    def load(self, store, flat, origin) -> None:
        if self.hf in store:
            ours, copy = flat.get(self.path), self.transform.to_jax(store.take(self.hf))
            if self.check and ours is not None and not np.array_equal(copy, ours):
                ref = self.ref or origin.get(self.path, self.path)
                raise ConversionError(f"{store.source}: {self.hf} differs from {ref}; {self.why}")

    def save(self, flat, out) -> set[str]:
        if self.write:
            out[self.hf] = np.asarray(self.transform.to_hf(self.read(flat, self.path, None)),
                                      np.float32)
        return {self.path}


def stack(hf_prefix: str, path: str, layers: int, scan: bool, rules: Iterable[Rule]
          ) -> list[Rule]:
    """One layer's rules, for a stack of ``layers`` layers.

    ``hf_prefix`` holds ``{i}`` (``"h.{i}."``); layer ``i``'s params live at
    ``{path}/layers_{i}/layer/`` (stacked at ``{path}/layers/layer/`` with ``scan``).
    """
    return [dataclasses.replace(r.under(hf_prefix, f"{path}/layers_{{i}}/layer/"),
                                layers=layers, scan=scan) for r in rules]


# ---------------------------------------------------------------------------
# Tables and the two walks
# ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Table:
    """Rules, plus ``ignore``: regular expressions (``re.search``) of Hugging
    Face tensors consumed unused on import (buffers, stored copies)."""

    rules: tuple[Rule, ...] = ()
    ignore: tuple[str, ...] = ()

    @classmethod
    def of(cls, *parts: Rule | Table | Iterable[Rule], ignore: Iterable[str] = ()) -> Table:
        """A table from rules, lists of rules and tables (keeping their ignores)."""
        rules, ignores = [], list(ignore)
        for part in parts:
            if isinstance(part, Table):
                rules, ignores = rules + list(part.rules), ignores + list(part.ignore)
            else:
                rules += [part] if isinstance(part, Rule) else list(part)
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
    return jax.tree.map(lambda a: np.asarray(jax.device_get(a)), nn.meta.unbox(params))


def params_from_hf(table: Table, store: TensorStore, *, into: Mapping | None = None,
                   expected: Any = None, finish: bool = True) -> dict:
    """The nested jaxmm params (NumPy arrays) that ``table`` builds from ``store``.

    Args:
      into: params to add to (e.g. what another table built).
      expected: a params tree (arrays or ``jax.ShapeDtypeStruct``s, e.g. from
        ``jax.eval_shape(model.init, ...)``): each imported leaf must have its
        shape (a mismatch is reported naming tensor and path) and takes its dtype.
      finish: call ``store.finish()``: one error naming every missing,
        mis-shaped and unexpected tensor.
    """
    store.ignore(*table.ignore)
    flat = traverse_util.flatten_dict(dict(into), sep="/") if into else {}
    origin: dict[str, str] = {}
    for rule in sorted(table.rules, key=lambda r: isinstance(r, Tied)):  # copies last
        rule.load(store, flat, origin)
    want = (traverse_util.flatten_dict(nn.meta.unbox(expected), sep="/")
            if expected is not None else {})
    for path in flat.keys() & want.keys():
        if tuple(flat[path].shape) != tuple(want[path].shape):
            store.mismatch(f"{origin.get(path, '?')} -> {path}: checkpoint "
                           f"{tuple(flat[path].shape)} vs config {tuple(want[path].shape)}")
        else:
            flat[path] = np.asarray(flat[path], dtype=want[path].dtype)
    if finish:
        store.finish()
    return traverse_util.unflatten_dict(flat, sep="/")


def params_to_hf(table: Table, params: Any) -> dict[str, np.ndarray]:
    """The Hugging Face tensors (float32) that ``table`` makes from ``params``.

    Every param must be read by some rule: a table that misses one fails
    loudly instead of writing an incomplete checkpoint.
    """
    flat = traverse_util.flatten_dict(to_numpy_tree(params), sep="/")
    out: dict[str, np.ndarray] = {}
    used = set().union(*(rule.save(flat, out) for rule in table.rules))
    left = sorted(set(flat) - used)
    if left:
        raise ConversionError(
            f"No Hugging Face tensor holds the parameters {', '.join(left[:8])}"
            f"{' ...' if len(left) > 8 else ''}: the model has parts its Hugging Face "
            "format lacks.")
    return out
