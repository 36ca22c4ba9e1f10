"""Preprocessing ops: a registry of small TF functions chained from a config.

A preprocessing spec is either a string in the style of big_vision's ``pp``::

    "resize(64)|random_crop(56)|flip_lr|value_range(-1, 1)|choose('captions', 'text')"

(a ``|``-separated chain of op calls with literal arguments; an op without
arguments may drop its parentheses), or a list of dicts / strings::

    [{"op": "resize", "size": 64}, "flip_lr", {"op": "value_range", "vmin": -1, "vmax": 1}]

Each registered name maps to a *factory* ``f(*args, **kwargs) -> op``; an
``op(example, seed) -> example`` takes a dict of tensors for ONE example and a
stateless seed (int32/int64 ``[2]``) and returns a new dict. Ops that use
randomness draw it only from ``seed`` with TF stateless ops, so the output
depends on the example's position in the stream and the run's seed, never on
thread scheduling: pipelines are reproducible and resumable.

Factories that declare a ``tokenizer`` keyword get the pipeline's tokenizer.

Batched ops: an op may also carry a ``batched(examples) -> examples`` function
(attach it with :func:`with_batched`) that does the same work for a chunk of
examples at once, with a leading batch axis (dense, or ragged where the examples'
shapes differ). The input pipeline then runs the ops before it per example, the
op once per chunk (one tokenizer call for many texts instead of one each), and
the rest per example again; the results are identical to the per-example op.
Batched functions are deterministic (they take no seed).
"""

from __future__ import annotations

import ast
import importlib
import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import tensorflow as tf

from jaxmm.config import ConfigError
from jaxmm.registry import Registry

__all__ = ["OPS", "Chain", "Op", "build", "get", "parse", "register", "registered",
           "with_batched"]

Example = dict[str, tf.Tensor]
Op = Callable[[Example, tf.Tensor], Example]
# The op modules register themselves on import.
OPS: Registry[Callable[..., Op]] = Registry(
    "preprocessing op", loader=lambda: [importlib.import_module(f"jaxmm.data.{m}")
                                        for m in ("ops_audio", "ops_image", "ops_text")])


def register(name: str) -> Callable:
    """Decorator: registers an op factory under ``name``."""
    return OPS.register(name)


def registered() -> list[str]:
    """Names of all registered ops."""
    return OPS.names()


def get(name: str) -> Callable[..., Op]:
    return OPS.get(name)


def _literal(node: ast.AST, text: str) -> Any:
    try:
        return ast.literal_eval(node)
    except ValueError:
        raise ConfigError(
            f"Preprocessing spec {text!r}: argument {ast.unparse(node)!r} is not a literal "
            "(quote strings, e.g. key='image')."
        ) from None


def _parse_string(spec: str) -> list[tuple[str, tuple, dict]]:
    try:
        tree = ast.parse(spec.strip(), mode="eval").body
    except SyntaxError as e:
        raise ConfigError(f"Preprocessing spec {spec!r} is not valid: {e.msg}.") from None
    calls: list[ast.AST] = []

    def flatten(node):
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
            flatten(node.left)
            flatten(node.right)
        else:
            calls.append(node)

    flatten(tree)
    out = []
    for node in calls:
        if isinstance(node, ast.Name):
            out.append((node.id, (), {}))
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            args = tuple(_literal(a, spec) for a in node.args)
            kwargs = {k.arg: _literal(k.value, spec) for k in node.keywords}
            out.append((node.func.id, args, kwargs))
        else:
            raise ConfigError(f"Preprocessing spec {spec!r}: {ast.unparse(node)!r} is not an "
                              "op call like name(arg, key=value).")
    return out


def parse(spec: str | Sequence[str | Mapping[str, Any]]) -> list[tuple[str, tuple, dict]]:
    """Spec -> ``[(op_name, args, kwargs)]`` (see the module docstring)."""
    if spec is None or spec == "":
        return []
    if isinstance(spec, str):
        return _parse_string(spec)
    out = []
    for item in spec:
        if isinstance(item, str):
            out.extend(_parse_string(item))
        elif isinstance(item, Mapping):
            item = dict(item)
            if "op" not in item:
                raise ConfigError(f"Preprocessing step {item!r} has no 'op' key.")
            name = item.pop("op")
            out.append((name, (), item))
        else:
            raise ConfigError(f"Preprocessing step {item!r} must be a string or a dict.")
    return out


def with_batched(op: Op, batched: Callable[[Example], Example]) -> Op:
    """Marks ``op`` as having a chunk-at-a-time equivalent ``batched`` (module docstring)."""
    op.batched = batched  # type: ignore[attr-defined]
    return op


class Chain:
    """The built preprocessing: ``chain(example, seed) -> example`` runs every op on one
    example; :attr:`stages` splits the ops at the batched ones for the input pipeline."""

    def __init__(self, ops: list[tuple[str, Op]]):
        self.ops = ops

    def run(self, example: Example, seed: tf.Tensor, lo: int = 0, hi: int | None = None
            ) -> Example:
        """Ops ``lo..hi-1`` on one example (op ``i`` draws from ``fold_in(seed, i)``)."""
        example = dict(example)
        for i in range(lo, len(self.ops) if hi is None else hi):
            name, op = self.ops[i]
            with tf.name_scope(name):
                example = op(example, tf.random.experimental.stateless_fold_in(seed, i))
        return example

    def __call__(self, example: Example, seed: tf.Tensor) -> Example:
        return self.run(example, seed)

    @property
    def stages(self) -> list[tuple[int, int, Callable[[Example], Example] | None]]:
        """``[(lo, hi, batched)]``: per-example ops ``lo..hi-1``, then ``batched`` (the
        batched form of op ``hi``) or ``None`` after the last stage."""
        out, lo = [], 0
        for i, (_, op) in enumerate(self.ops):
            fn = getattr(op, "batched", None)
            if fn is not None:
                out.append((lo, i, fn))
                lo = i + 1
        out.append((lo, len(self.ops), None))
        return out


def build(spec: str | Sequence[Any], *, tokenizer: Any = None) -> Chain:
    """Builds the chained op ``(example, seed) -> example`` from a spec."""
    ops: list[tuple[str, Op]] = []
    for name, args, kwargs in parse(spec):
        factory = get(name)
        params = inspect.signature(factory).parameters
        if "tokenizer" in params and "tokenizer" not in kwargs:
            if tokenizer is None:
                raise ConfigError(
                    f"Preprocessing op {name!r} needs a tokenizer; pass tokenizer=... to "
                    "make_iterator (e.g. jaxmm.data.tokenizers.load(path))."
                )
            kwargs["tokenizer"] = tokenizer
        try:
            ops.append((name, factory(*args, **kwargs)))
        except TypeError as e:
            raise ConfigError(f"Preprocessing op {name}{inspect.signature(factory)}: {e}") from None
    return Chain(ops)


def require(example: Mapping[str, Any], key: str, op: str) -> tf.Tensor:
    """``example[key]``, or a clear error naming the keys that exist."""
    if key not in example:
        raise ConfigError(f"Preprocessing op {op!r} needs key {key!r}; the example has "
                          f"{sorted(example)}.")
    return example[key]
