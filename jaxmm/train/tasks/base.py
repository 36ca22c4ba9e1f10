"""The task interface and registry.

A *task* ties a model to a batch layout, a loss and metrics, so one training
loop serves language modelling, classification, contrastive learning and the
rest. Tasks are picked by name from the run config (``config.task.name``).

Adding a task
-------------
Subclass :class:`Task`, give it a ``name``, an ``Options`` config dataclass
(its fields become ``config.task.<field>``), the batch keys the model reads
(``model_inputs``), a synthetic ``layout`` for tests, and implement
:meth:`Task.loss`. Register it with :func:`register_task`::

    @dataclasses.dataclass(frozen=True)
    class MyOptions(ConfigBase):
        temperature: float = 1.0

    @register_task
    class MyTask(Task):
        name = "my_task"
        Options = MyOptions
        default_model = "vit_classifier"
        model_inputs = ("image",)
        layout = "image"

        def loss(self, variables, batch, *, train, rng):
            logits, extra = self.apply(variables, batch, train=train, rng=rng)
            nll, correct, w = softmax_xent(logits, batch["label"], weights=example_weights(batch))
            return LossOutput(loss=nll, weight=w, metrics={"accuracy": (correct, w)}, extra=extra)

Put the module in ``config.imports`` (or import it before calling
``jaxmm.train.run``) and select it with ``config.task.name = "my_task"``.

Loss contract: :meth:`Task.loss` returns *sums* and their normaliser, never
means. The optimiser minimises ``sum(loss) / sum(weight)`` over all
micro-batches of a step, which makes gradient accumulation exact for
token-weighted losses; every metric is a ``(sum, count)`` pair for the same
reason (and so eval metrics can be summed over batches and processes).

Eval batches may carry ``example_mask`` ``(B,)`` (0 for padding rows of a
short last batch); :func:`example_weights` returns it (ones when absent).
"""

from __future__ import annotations

import abc
import dataclasses
import importlib
from collections.abc import Mapping
from typing import Any, ClassVar

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from jaxmm import losses
from jaxmm.config import ConfigBase, ConfigError
from jaxmm.models import specs as specs_lib
from jaxmm.models.specs import InputSpec
from jaxmm.registry import Registry

Array = jax.Array
Metrics = dict[str, tuple[Array, Array]]

__all__ = [
    "TASKS",
    "IGNORE_INDEX",
    "LossOutput",
    "NoOptions",
    "Task",
    "available_tasks",
    "example_weights",
    "get_task",
    "register_task",
    "softmax_xent",
]

IGNORE_INDEX = losses.IGNORE_INDEX

# Batch keys that are model inputs when present (in the shared naming).
INPUT_KEYS = ("image", "input_ids", "attention_mask", "token_type_ids", "input_features",
              "audio", "video", "decoder_input_ids", "decoder_attention_mask")


@flax.struct.dataclass
class LossOutput:
    """What :meth:`Task.loss` returns (all scalars are float32).

    loss: the loss *summed* over the batch's examples/tokens.
    weight: its normaliser (number of tokens/examples it sums over).
    metrics: ``name -> (sum, count)``; the reported value is ``sum / count``.
    extra: updated non-parameter model collections (e.g. ``batch_stats``)
      when training a model that has them, else ``None``.
    """

    loss: Array
    weight: Array
    metrics: dict[str, tuple[Array, Array]] = flax.struct.field(default_factory=dict)
    extra: Any = None


@dataclasses.dataclass(frozen=True)
class NoOptions(ConfigBase):
    """A task without options."""


# Importing the package registers the built-in tasks.
TASKS: Registry[type[Task]] = Registry(
    "task", config_key="task.name",
    loader=lambda: importlib.import_module("jaxmm.train.tasks"))


def register_task(cls: type[Task]) -> type[Task]:
    """Class decorator adding a :class:`Task` subclass to the registry by ``cls.name``."""
    if not cls.name:
        raise ValueError(f"{cls.__name__} needs a non-empty `name` to be registered.")
    return TASKS.register(cls.name, cls)


def available_tasks() -> list[str]:
    return TASKS.names()


def get_task(name: str) -> type[Task]:
    """The task class registered as ``name`` (clear error naming close ones)."""
    return TASKS.get(name)


def example_weights(batch: Mapping[str, Array]) -> Array:
    """``(B,)`` float32 weights: ``batch['example_mask']`` or ones."""
    if "example_mask" in batch:
        return jnp.asarray(batch["example_mask"], jnp.float32)
    first = next(iter(v for k, v in batch.items() if k != "example_mask"))
    return jnp.ones((first.shape[0],), jnp.float32)


GROUPED_KEYS = ("input_ids", "attention_mask", "token_type_ids", "label")


def flatten_groups(batch: Mapping[str, Array], keys: tuple[str, ...] = GROUPED_KEYS
                   ) -> dict[str, Array]:
    """``(B, K, ...)`` grouped texts (several questions or captions per example, as
    evaluation pipelines yield them) -> ``B * K`` rows.

    ``keys`` present with a group axis are reshaped to ``(B * K, ...)``; every
    other array is repeated ``K`` times along axis 0, so row ``b * K + k`` pairs
    example ``b`` with its ``k``-th text. Rows whose text is empty (padding
    groups: ``attention_mask[..., 0] == 0``) get ``example_mask`` 0.
    """
    ids = batch["input_ids"]
    if ids.ndim != 3:
        return dict(batch)
    b, k = ids.shape[:2]
    out = {}
    for name, value in batch.items():
        if name in keys and value.ndim >= 2 and value.shape[:2] == (b, k):
            out[name] = value.reshape((b * k,) + value.shape[2:])
        else:
            out[name] = jnp.repeat(value, k, axis=0)
    weights = example_weights(out)
    if "attention_mask" in out:
        weights = weights * (out["attention_mask"][:, 0] > 0).astype(jnp.float32)
    out["example_mask"] = weights
    return out


def first_of_groups(batch: Mapping[str, Array], keys: tuple[str, ...] = GROUPED_KEYS
                    ) -> dict[str, Array]:
    """Keeps the first text of each ``(B, K, ...)`` group (e.g. one caption per image)."""
    ids = batch["input_ids"]
    if ids.ndim != 3:
        return dict(batch)
    b, k = ids.shape[:2]
    return {name: value[:, 0] if name in keys and value.ndim >= 2 and value.shape[:2] == (b, k)
            else value for name, value in batch.items()}


def softmax_xent(logits: Array, labels: Array, *, weights: Array | None = None,
                 label_smoothing: float = 0.0) -> tuple[Array, Array, Array]:
    """Summed softmax cross-entropy (:func:`jaxmm.losses.cross_entropy`) and hits.

    logits ``(..., V)``, labels ``(...)`` int (``-100`` = ignore), weights
    broadcastable to labels. Returns ``(loss_sum, correct_sum, weight_sum)``:
    the loss and the top-1 hits summed over the non-ignored positions, and
    their count (all float32).
    """
    valid = (labels != IGNORE_INDEX).astype(jnp.float32)
    if weights is not None:
        valid = valid * jnp.broadcast_to(weights, valid.shape).astype(jnp.float32)
    nll = losses.cross_entropy(logits, labels, label_smoothing=label_smoothing,
                               weights=valid, reduction="sum")
    safe = jnp.where(labels == IGNORE_INDEX, 0, labels)
    correct = (jnp.argmax(logits, axis=-1) == safe).astype(jnp.float32)
    return nll, (correct * valid).sum(), valid.sum()


class Task(abc.ABC):
    """Base class: model + batch layout + loss + metrics (see the module docstring).

    Attributes set by subclasses:
      name: registry name. Options: config dataclass of the task's options.
      default_model: registered model used when ``config.model.name`` is unset.
      model_inputs: batch keys passed to the model as keyword arguments.
      layout: synthetic-data layout (:mod:`jaxmm.train.synthetic`).
    """

    name: ClassVar[str] = ""
    Options: ClassVar[type[ConfigBase]] = NoOptions
    default_model: ClassVar[str | None] = None
    model_inputs: ClassVar[tuple[str, ...]] = ("input_ids", "attention_mask")
    layout: ClassVar[str] = "text"
    # False when the loss couples all rows (contrastive): padded eval batches are skipped.
    supports_padding: ClassVar[bool] = True

    def __init__(self, options: ConfigBase, model: nn.Module, teacher: nn.Module | None = None):
        self.options = options
        self.model = model
        self.teacher = teacher

    @classmethod
    def from_config(cls, task_config: Mapping[str, Any], model: nn.Module,
                    teacher: nn.Module | None = None) -> Task:
        values = {k: v for k, v in dict(task_config).items() if k != "name"}
        try:
            options = cls.Options.from_dict(values)
        except ConfigError as e:
            raise ConfigError(f"task {cls.name!r}: {e}") from None
        return cls(options, model, teacher)

    # -- data ------------------------------------------------------------
    @property
    def model_config(self) -> Any:
        return getattr(self.model, "config", None)

    def synthetic_dims(self) -> dict[str, Any]:
        """Synthetic-data dimensions implied by the model config (vocab, image size...)."""
        # Breadth-first over the config and its nested configs (e.g. a VQA model's
        # image encoder config holds the image size): the shallowest value wins.
        configs, level = [], [self.model_config]
        while level:
            configs += level
            level = [v for c in level if dataclasses.is_dataclass(c)
                     for v in (getattr(c, f.name) for f in dataclasses.fields(c))
                     if dataclasses.is_dataclass(v) and not isinstance(v, type)]
        dims: dict[str, Any] = {}
        for name, keys in {"vocab_size": ("vocab_size",),
                           "image_size": ("image_size",),
                           "channels": ("num_channels", "channels"),
                           "num_classes": ("num_labels", "num_classes"),
                           "n_mels": ("num_mel_bins", "n_mels"),
                           "frames": ("num_frames",)}.items():
            for cfg in configs:
                val = next((v for v in (getattr(cfg, k, None) for k in keys)
                            if isinstance(v, int) and not isinstance(v, bool)), None)
                if val is not None:
                    dims[name] = val
                    break
        return dims

    def input_specs(self) -> dict[str, InputSpec] | None:
        """The inputs the model declares (:mod:`jaxmm.models.specs`), or ``None``."""
        if not hasattr(self, "_input_specs"):
            self._input_specs = specs_lib.input_specs(self.model)
        return self._input_specs

    def example_batch(self, batch_size: int = 1, **dims: Any) -> dict[str, np.ndarray]:
        """A batch for ``model.init``: the model's declared inputs with their exact
        shapes (free axes such as text length from ``dims``), and this task's other
        fields (labels) from its synthetic layout. A model that declares no inputs
        gets the layout's fields alone."""
        from jaxmm.train.synthetic import make_batch

        dims = {**self.synthetic_dims(), **{k: v for k, v in dims.items() if v is not None}}
        specs = self.input_specs()
        batch = make_batch(self.layout, 0, batch_size, specs=specs, **dims)
        if specs:
            batch.update(specs_lib.example_inputs(specs, batch_size, **dims))
        return batch

    def prepare(self, batch: dict[str, Array], rng: Array, train: bool) -> dict[str, Array]:
        """On-device preprocessing inside the jitted step (e.g. MLM masking)."""
        del rng, train
        return batch

    # -- model -----------------------------------------------------------
    def inputs(self, batch: Mapping[str, Array]) -> dict[str, Array]:
        return {k: batch[k] for k in self.model_inputs if k in batch}

    def init(self, rng: Array, batch: Mapping[str, Array]) -> Any:
        """Model variables (boxed with logical axis names) for ``batch``'s shapes."""
        p, d = jax.random.split(rng)
        return self.model.init({"params": p, "dropout": d}, **self.inputs(batch))

    def apply(self, variables: Any, batch: Mapping[str, Array], *, train: bool,
              rng: Array | None = None, model: nn.Module | None = None,
              **kwargs: Any) -> tuple[Any, Any]:
        """Runs the model; returns ``(outputs, updated non-param collections or None)``."""
        model = model or self.model
        mutable = [k for k in variables if k != "params"] if train else []
        mutable = mutable or False
        rngs = {"dropout": rng} if (train and rng is not None) else None
        out = model.apply(variables, **self.inputs(batch), **kwargs,
                          deterministic=not train, rngs=rngs, mutable=mutable)
        if mutable:
            out, extra = out
            return out, dict(extra)
        return out, None

    @abc.abstractmethod
    def loss(self, variables: Any, batch: Mapping[str, Array], *, train: bool,
             rng: Array, constants: Any = None) -> LossOutput:
        """Loss sums and metrics for one (micro-)batch; see the module docstring."""

    # -- reporting ---------------------------------------------------------
    def summarize(self, metrics: dict[str, float]) -> dict[str, float]:
        """Derived metrics from the averaged ones (e.g. perplexity = exp(loss))."""
        return metrics

    # -- constants (frozen inputs such as a teacher's weights) ---------------
    def constants(self, config: Any, mesh: Any, rules: Any) -> Any:
        """Frozen arrays every step needs (sharded), or ``None``."""
        del config, mesh, rules
        return None
