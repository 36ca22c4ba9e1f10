"""The evaluator interface, its registry, and the run-config section that picks evaluators.

An *evaluator* computes metrics of a model on eval data: the task's loss, retrieval
recall@K, caption BLEU/METEOR/ROUGE-L/CIDEr, VQA accuracy, GLUE metrics, WER,
perplexity. A run lists its evaluators by name in ``config.eval.evaluators``
(big_vision style); each entry names a registered ``type`` and may override the
``eval`` section's schedule and data::

    c.eval = {"every_steps": 500, "num_batches": 8, "evaluators": {
        "retrieval": {"type": "retrieval", "split": "test", "num_batches": -1},
        "captions": {"type": "captioning", "every_steps": 2000, "num_beams": 3},
    }}

Every evaluator runs at its ``every_steps`` during training (and at the end when
``at_end``), from ``jaxmm eval`` on a checkpoint, and from Python
(``evaluator(variables)``). Its metrics are written as ``eval/<prefix><metric>``
(``prefix`` defaults to ``"<name>/"``; the default ``loss`` evaluator has prefix
``""`` and writes ``eval/loss``, ``eval/accuracy``, ...).

Adding an evaluator
-------------------
Subclass :class:`Evaluator`, give it an ``Options`` config dataclass (its fields
become keys of the evaluator's config entry), implement :meth:`Evaluator.evaluate`
and register it::

    @register_evaluator("mean_logit")
    class MeanLogit(Evaluator):
        def __init__(self, *args):
            super().__init__(*args)
            self._logits = self.jit(lambda v, b: self.forward(v, b).logits)

        def evaluate(self, variables):
            rows = self.collect(lambda local, batch: {
                "logit": self.host_rows(self._logits(variables, batch)).mean(-1),
                "mask": local["example_mask"]})
            return {"mean_logit": float(rows["logit"].mean())}

Model forward passes are jitted and run on the run's mesh: batches are global
arrays sharded over the ``data``/``fsdp`` axes, and :meth:`Evaluator.host_rows`
brings outputs back as this process's rows. :meth:`Evaluator.collect` pads the
last batch, drops padding rows and gathers the rows of every process, so
host-side metrics see the whole eval set on every process.
"""

from __future__ import annotations

import abc
import collections
import dataclasses
import importlib
import json
import logging
from collections.abc import Callable, Iterator, Mapping
from typing import Any, ClassVar

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from ml_collections import ConfigDict

from jaxmm.config import ConfigBase, ConfigError, nearest
from jaxmm.data.device import (
    DATA_AXES,
    any_process,
    host_local_rows,
    make_global_batch,
    pad_batch,
)
from jaxmm.registry import Registry

log = logging.getLogger(__name__)

__all__ = [
    "EVALUATORS",
    "EvalContext",
    "EvalSettings",
    "Evaluator",
    "NoOptions",
    "SHARED_KEYS",
    "complete_evaluator_configs",
    "gather_processes",
    "make_evaluators",
    "register_evaluator",
    "texts",
]

# Importing the package registers the built-in evaluators.
EVALUATORS: Registry[type[Evaluator]] = Registry(
    "evaluator", config_key="eval.evaluators.<name>.type",
    loader=lambda: importlib.import_module("jaxmm.evaluate.evaluators"))

# Keys every evaluator entry has (None = the value of the `eval` section).
SHARED_KEYS = ("type", "prefix", "every_steps", "at_end", "num_batches", "batch_size", "split",
               "data")
ALL_BATCHES = -1  # num_batches: run until the eval data ends


def register_evaluator(name: str) -> Callable[[type[Evaluator]], type[Evaluator]]:
    """Class decorator adding an :class:`Evaluator` subclass to the registry as ``name``."""
    return EVALUATORS.register(name)


@dataclasses.dataclass(frozen=True)
class NoOptions(ConfigBase):
    """An evaluator without options."""


@dataclasses.dataclass(frozen=True)
class EvalSettings:
    """When and on what data an evaluator runs (the entry merged over ``eval``).

    every_steps: run every this many training steps (0: never periodically).
    at_end: also run after the last step. num_batches: batches per evaluation
    (``None``: until the data ends). batch_size: global eval batch. split and
    data: the data section (``jaxmm.data.make_iterator`` or synthetic) and split.
    prefix: metric names are ``eval/<prefix><metric>``.
    """

    every_steps: int
    at_end: bool
    num_batches: int | None
    batch_size: int
    split: str
    data: Mapping[str, Any] | None
    prefix: str


@dataclasses.dataclass(frozen=True)
class EvalContext:
    """What evaluators need from a run (built by :func:`jaxmm.train.build_run`).

    task: the run's :class:`jaxmm.train.Task` (model, batch preparation, loss).
    mesh / rules: the device mesh and logical-axis rules the model runs under.
    constants: the task's frozen inputs (a teacher's weights) or ``None``.
    tokenizer: the run's tokenizer (``config.tokenizer``) or ``None``.
    make_source: ``(data, split, batch_size, num_batches) -> iterator`` of this
      process's host batches (in order, not repeated).
    make_eval_step: ``task -> eval_step(variables, batch, constants)`` jitted on
      the mesh, returning ``{metric: (sum, count)}``.
    eval_step: ``make_eval_step(task)`` of the run's task.
    """

    task: Any
    mesh: Mesh
    rules: tuple
    constants: Any
    tokenizer: Any
    make_source: Callable[..., Iterator[dict[str, np.ndarray]]]
    make_eval_step: Callable[[Any], Callable[..., Any]]
    eval_step: Callable[..., Any]


class Evaluator(abc.ABC):
    """Base class: metrics of ``variables`` on an eval stream (see the module docstring).

    Args:
      name: the entry's name in ``config.eval.evaluators``.
      settings: schedule and data (:class:`EvalSettings`).
      options: an instance of the subclass's ``Options``.
      context: the run (:class:`EvalContext`).
    """

    Options: ClassVar[type[ConfigBase]] = NoOptions

    def __init__(self, name: str, settings: EvalSettings, options: ConfigBase,
                 context: EvalContext):
        self.name, self.settings, self.options, self.context = name, settings, options, context
        self.task, self.mesh = context.task, context.mesh

    def __call__(self, variables: Any) -> dict[str, float]:
        """Metrics of ``variables`` (``{"params": ..., **collections}``) on the mesh."""
        with jax.set_mesh(self.mesh), nn.logical_axis_rules(self.context.rules):
            return self.evaluate(variables)

    @abc.abstractmethod
    def evaluate(self, variables: Any) -> dict[str, float]:
        """``{metric: value}`` over the eval data (called by ``__call__``)."""

    # -- data -----------------------------------------------------------------
    def batches(self, *, skip_short: bool = False) -> Iterator[dict[str, np.ndarray]]:
        """This process's eval batches, each padded to the per-process rows.

        Every process yields the same number of batches. ``skip_short``: stop
        before a short last batch instead of padding it (losses that couple all
        rows of a batch cannot mask padding).
        """
        s = self.settings
        rows = s.batch_size // jax.process_count()
        source = self.context.make_source(s.data, s.split, s.batch_size, s.num_batches)
        count = 0
        try:
            while s.num_batches is None or count < s.num_batches:
                local = next(source, None)
                # every process stops together, also when streams differ in length (rows
                # built from windows of examples, e.g. NSP pairs)
                if any_process(local is None):
                    break
                short = len(next(iter(local.values()))) < rows
                if skip_short and any_process(short):
                    log.warning("Evaluator %s: skipping the short last eval batch (task %s "
                                "cannot mask padding).", self.name, self.task.name)
                    break
                yield pad_batch(local, rows)
                count += 1
        finally:
            if hasattr(source, "close"):
                source.close()
        if not count:
            raise ConfigError(f"Evaluator {self.name!r}: the eval data yielded no batches; check "
                              f"its data / split ({s.split!r}) / num_batches.")

    def global_batch(self, local: Mapping[str, np.ndarray]) -> dict[str, jax.Array]:
        """The numeric fields of a host batch as global arrays sharded over the mesh."""
        return make_global_batch(local, self.mesh)

    def host_rows(self, x: jax.Array) -> np.ndarray:
        """This process's rows of a batch-major model output (lines up with the host batch)."""
        return host_local_rows(x, self.mesh)

    def jit(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        """``jax.jit(fn)`` whose outputs (all batch-major) stay sharded over the batch axes."""
        return jax.jit(fn, out_shardings=NamedSharding(self.mesh, PartitionSpec(DATA_AXES)))

    def forward(self, variables: Any, batch: Mapping[str, jax.Array], **kwargs: Any) -> Any:
        """The task's model on a (prepared) eval batch, deterministic (for use in :meth:`jit`)."""
        out, _ = self.task.apply(variables, batch, train=False, **kwargs)
        return out

    def prepare(self, batch: Mapping[str, jax.Array]) -> dict[str, jax.Array]:
        """The task's on-device eval preprocessing (e.g. VQA's question groups -> rows)."""
        rng = jax.random.key_data(jax.random.key(0))
        return self.task.prepare(dict(batch), rng, False)

    def collect(self, step: Callable[[dict[str, np.ndarray], dict[str, jax.Array]],
                                     Mapping[str, np.ndarray]]) -> dict[str, np.ndarray]:
        """Runs ``step(host batch, global batch) -> {column: rows}`` on every batch.

        ``step`` returns this process's rows (``host_rows`` of model outputs,
        host fields of the batch) and a ``mask`` column (``> 0`` for real rows).
        Returns each column concatenated over batches and processes, real rows
        only.
        """
        parts: dict[str, list[np.ndarray]] = collections.defaultdict(list)
        for local in self.batches():
            for key, value in step(local, self.global_batch(local)).items():
                parts[key].append(np.asarray(value))
        columns = gather_processes({k: np.concatenate(v) for k, v in parts.items()})
        keep = columns.pop("mask") > 0
        return {k: v[keep] for k, v in columns.items()}

    def require_tokenizer(self) -> Any:
        if self.context.tokenizer is None:
            raise ConfigError(f"Evaluator {self.name!r} ({type(self).__name__}) needs a "
                              "tokenizer; set config.tokenizer.")
        return self.context.tokenizer


def texts(values: np.ndarray) -> np.ndarray:
    """Host string fields (bytes or str, any shape) -> an object array of ``str``."""
    values = np.asarray(values)
    flat = [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in values.reshape(-1)]
    return _object_array(flat).reshape(values.shape)


def _object_array(items: list[Any]) -> np.ndarray:
    out = np.empty((len(items),), object)
    out[:] = items
    return out


def gather_processes(columns: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Every process's rows of each column, concatenated in process order.

    Numeric columns go through ``process_allgather``; string columns are sent as
    UTF-8 JSON. All processes must hold the same number of rows (padded eval
    batches ensure it). With one process the columns are returned unchanged.
    """
    if jax.process_count() == 1:
        return dict(columns)
    from jax.experimental import multihost_utils

    out = {}
    for key, value in columns.items():
        value = np.asarray(value)
        if value.dtype.kind in "OSU":
            data = np.frombuffer(json.dumps(texts(value).reshape(-1).tolist()).encode(), np.uint8)
            sizes = np.asarray(multihost_utils.process_allgather(np.asarray([len(data)])))
            sizes = sizes.reshape(-1)
            buffer = np.zeros((int(sizes.max()),), np.uint8)
            buffer[:len(data)] = data
            every = np.asarray(multihost_utils.process_allgather(buffer))
            rows = [s for p in range(len(every))
                    for s in json.loads(bytes(every[p, :int(sizes[p])]).decode())]
            out[key] = _object_array(rows).reshape((-1, *value.shape[1:]))
        else:
            out[key] = np.asarray(multihost_utils.process_allgather(value, tiled=True))
    return out


# ---------------------------------------------------------------------------
# The run config's eval.evaluators section
# ---------------------------------------------------------------------------


def complete_evaluator_configs(section: ConfigDict) -> None:
    """Checks ``config.eval.evaluators`` and fills every entry with all its keys.

    Each entry gets the :data:`SHARED_KEYS` (``None`` = inherit from ``eval``)
    and every field of its type's ``Options`` (so ``--config.eval.evaluators.
    NAME.KEY=V`` reaches them). Entries set to ``None`` are removed. Unknown
    types and keys raise :class:`ConfigError` naming the nearest valid ones.
    """
    for name in list(section.keys()):
        entry = section[name]
        if entry is None:
            with section.unlocked(), section.ignore_type():
                del section[name]
            continue
        where = f"eval.evaluators.{name}"
        if not isinstance(entry, ConfigDict) or not entry.get("type"):
            raise ConfigError(f"{where} must be a section with a 'type' (one of "
                              f"{', '.join(EVALUATORS.names())}).")
        cls = EVALUATORS.get(entry.type)
        valid = [*SHARED_KEYS, *cls.Options.field_names()]
        for key in entry.keys():
            if key not in valid:
                close = nearest(key, valid)
                hint = f" Did you mean {', '.join(repr(f'{where}.{c}') for c in close)}?" \
                    if close else ""
                raise ConfigError(f"Unknown config key '{where}.{key}' for a {entry.type!r} "
                                  f"evaluator.{hint} Valid keys: {', '.join(sorted(valid))}.")
        with entry.unlocked(), entry.ignore_type():
            for key in SHARED_KEYS:
                if key not in entry:
                    entry[key] = None
            for key, value in cls.Options().to_dict().items():
                if key not in entry:
                    entry[key] = tuple(value) if isinstance(value, list) else value
        _options(cls, entry, where)  # validates the values


def _options(cls: type[Evaluator], entry: ConfigDict, where: str) -> ConfigBase:
    values = {k: v for k, v in entry.to_dict().items() if k not in SHARED_KEYS}
    try:
        return cls.Options.from_dict(values)
    except (ConfigError, TypeError, ValueError) as e:
        raise ConfigError(f"{where}: {e}") from None


def _settings(name: str, entry: ConfigDict, config: ConfigDict) -> EvalSettings:
    """The entry's schedule and data, with ``None`` taken from ``config.eval``."""
    ev = config.eval

    def pick(key: str) -> Any:
        return entry[key] if entry[key] is not None else ev[key]

    num_batches = pick("num_batches")
    num_batches = None if num_batches in (None, ALL_BATCHES) else int(num_batches)
    if num_batches is not None and num_batches < 1:
        raise ConfigError(f"eval.evaluators.{name}.num_batches must be >= 1, or -1 for the "
                          f"whole split; got {num_batches}.")
    data = pick("data")
    data = config.data if data is None else data
    return EvalSettings(
        every_steps=int(pick("every_steps") or 0), at_end=bool(pick("at_end")),
        num_batches=num_batches, batch_size=int(pick("batch_size") or config.batch_size),
        split=pick("split"), data=data.to_dict() if isinstance(data, ConfigDict) else data,
        prefix=entry.prefix if entry.prefix is not None else f"{name}/")


def make_evaluators(config: ConfigDict, context: EvalContext,
                    only: tuple[str, ...] = ()) -> dict[str, Evaluator]:
    """The evaluators of a resolved run config, by name (``only``: just these)."""
    entries = config.eval.evaluators
    unknown = [n for n in only if n not in entries]
    if unknown:
        close = nearest(unknown[0], list(entries))
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ConfigError(f"No evaluator named {unknown[0]!r} in eval.evaluators.{hint} "
                          f"Configured: {', '.join(entries) or 'none'}.")
    out = {}
    for name in entries:
        if only and name not in only:
            continue
        entry = entries[name]
        cls = EVALUATORS.get(entry.type)
        options = _options(cls, entry, f"eval.evaluators.{name}")
        out[name] = cls(name, _settings(name, entry, config), options, context)
    return out
