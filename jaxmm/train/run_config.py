"""The run config: every key ``jaxmm train`` understands, its default, and validation.

A ``configs/*.py`` file only sets what differs from :func:`default_config`;
:func:`resolve_config` merges it over the defaults, applies ``--config.a.b=v``
overrides, fills ``task`` and ``model.config`` with every field of the chosen
task's options and model's config class (so any of them can be overridden on
the command line), and rejects unknown keys with the nearest valid ones.

Free-form sections, validated by their consumers rather than here: ``data`` and
``eval.data`` (``jaxmm.data.make_iterator`` or the synthetic source),
``model.config`` (the model's config class) and ``task`` (the task's options).
``eval.evaluators`` entries are checked against their evaluator type
(:mod:`jaxmm.evaluate.evaluators`) and filled with all its keys.

Types of overrides (:mod:`jaxmm.overrides` parses the text): a key of
:func:`default_config` has the type of its default, unless :data:`KEY_TYPES`
declares it; that table lists every key that accepts ``None`` (``eval.num_batches:
int | None``, None meaning "the whole split"). ``model.config.*``, ``task.*`` and
``eval.evaluators.NAME.*`` keys take the type hints of the model's config class,
the task's options and the evaluator's options (``int | None`` accepts None,
``tuple[int, ...]`` a tuple). ``data.*`` and ``eval.data.*`` are free-form: any
Python literal, ``None`` or a word.
"""

from __future__ import annotations

import dataclasses
import importlib
import typing
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ml_collections import ConfigDict

from jaxmm import lora as lora_lib
from jaxmm.config import ConfigError, apply_overrides, did_you_mean, load_config
from jaxmm.overrides import implied_type

__all__ = ["KEY_TYPES", "data_section", "default_config", "key_types", "load_run_config",
           "parse_config_arg", "resolve_config"]

# Sections whose keys are not checked against the defaults.
_FREE_FORM = ("data", "eval.data", "eval.evaluators", "model.config", "task", "teacher.config")
# Overrides of sections that are completed during resolution, applied after it.
_LATE_OVERRIDES = ("model.config.", "task.", "teacher.config.", "eval.evaluators.")


def default_config() -> ConfigDict:
    """All run-config keys with their defaults (see the comments for meaning)."""
    c = ConfigDict()
    c.seed = 0
    c.num_steps = 1000  # optimizer steps
    c.batch_size = 32  # global batch (all processes, all micro-batches)
    c.grad_accum_steps = 1  # micro-batches per optimizer step (scan inside the step)
    c.imports = ()  # extra modules imported first (to register your models/tasks)
    # Resume even if the config differs from the workdir's config.json in keys that
    # change what its checkpoints mean (model, task, data, tokenizer, optimizer,
    # batch size, seed, ...). Keys safe to change (num_steps, log, eval, checkpoint,
    # mesh, ...: jaxmm.train.workdir.SAFE_TO_CHANGE) never need it.
    c.allow_changes = False

    c.task = ConfigDict({"name": "lm"})  # task name + that task's options
    c.model = ConfigDict({"name": None, "size": None, "config": ConfigDict()})
    # Teacher for distillation (frozen): a registered model and where its weights are.
    c.teacher = ConfigDict({"name": None, "size": None, "config": ConfigDict(),
                            "params": None, "hf": None})
    # Initial weights (fine-tuning): an exported params dir or a Hugging Face folder.
    c.init = ConfigDict({"params": None, "hf": None})

    c.data = ConfigDict({"name": "synthetic"})  # passed to jaxmm.data.make_iterator
    c.tokenizer = None  # path for jaxmm.data.tokenizers.load (text data)
    # Global batches kept in flight on device ahead of the step (0 = convert each
    # batch only when the step needs it); jaxmm.data.device.prefetch_to_device.
    c.device_prefetch = 2

    c.mesh = ConfigDict({"data": -1, "fsdp": 1, "tensor": 1})
    # Extra (logical axis, mesh axes) rules tried before jaxmm.sharding.DEFAULT_RULES.
    c.sharding_rules = ()

    c.optimizer = ConfigDict({
        "name": "adamw",  # adamw | adafactor | lion | sgd
        "learning_rate": 1e-3,  # peak learning rate
        "b1": 0.9, "b2": 0.999, "eps": 1e-8,  # adamw/lion betas (lion: b2=0.99 typical)
        "momentum": 0.9, "nesterov": False,  # sgd
        "mu_dtype": None,  # e.g. "bfloat16" first-moment storage
        "weight_decay": 0.0,
        # Params whose "/"-joined path matches one of these regexes get no weight
        # decay; params with fewer than 2 dims never do (biases, norm scales).
        "weight_decay_exclude": ("embedding", "pos_embed", "position", "cls_token"),
        "clip_norm": 1.0,  # global-norm clipping (None/0 = off)
        "freeze": (),  # regexes of params that are not trained
        "lr_multipliers": (),  # ((regex, multiplier), ...); first match wins
        "factored": True, "decay_rate": 0.8,  # adafactor
    })
    # LoRA fine-tuning (jaxmm.lora): rank 0 = off (full fine-tuning). With rank r,
    # the kernels matching `targets` (regexes of "/"-joined param paths) get
    # adapters A (in x r) and B (r x out, zeros) and the model runs on
    # W + alpha/r * A @ B; only the adapters are trained (optimizer state too) and
    # the base params stay frozen. Checkpoints hold base + adapters; the export
    # holds the merged params.
    c.lora = ConfigDict({
        "rank": 0,
        "alpha": 16.0,
        "targets": lora_lib.DEFAULT_TARGETS,
        "init": "kaiming",  # kaiming | normal (A's initialiser; B is zeros)
        # Regexes of params trained in full with the adapters (a new task head:
        # ("classifier",)); PEFT's modules_to_save.
        "train_full": (),
    })
    c.schedule = ConfigDict({
        "name": "cosine",  # cosine | linear | rsqrt | constant
        "warmup_steps": 0,
        "init_value": 0.0,  # learning rate at step 0 of the warmup
        "end_value_ratio": 0.0,  # final lr / peak lr (cosine, linear)
        "decay_steps": None,  # default: num_steps
        "timescale": None,  # rsqrt: lr = peak * sqrt(timescale / step); default warmup
    })

    c.checkpoint = ConfigDict({
        "every_steps": 1000,
        "keep": 2,  # latest checkpoints kept
        "best_metric": None,  # e.g. "eval/loss": also keep the best `keep_best`
        "best_mode": "min",
        "keep_best": 1,
        "async_save": True,
        "save_final": True,
        "export_params": True,  # params alone in workdir/export for inference
        # A checkpoint that cannot be read when resuming: "fallback" renames it
        # <step>.corrupt-<n> (never deletes it), warns and resumes from the newest
        # readable one; "fail" stops the run and changes nothing. With no readable
        # checkpoint the run always stops (it never starts over existing ones).
        "on_corrupt": "fallback",
    })
    # Evaluation: the defaults below, and the evaluators that use them.
    c.eval = ConfigDict({
        "every_steps": 1000,  # 0 = only at the end
        "num_batches": 8,  # None or -1 = until the eval data ends
        "batch_size": None,  # default: batch_size
        "split": "validation",
        "data": None,  # a data section for eval; None = `data` with `split`
        "at_end": True,
        # name -> {"type": a registered evaluator (jaxmm.evaluate.evaluators: loss,
        # perplexity, retrieval, zero_shot, captioning, vqa, classification, glue,
        # wer), that type's options, and any of every_steps / at_end / num_batches /
        # batch_size / split / data to override the values above (None = inherit),
        # "prefix": metrics are written as eval/<prefix><metric> (None = "<name>/")}.
        # Entries merge into this default; set one to None to drop it.
        "evaluators": ConfigDict({"loss": ConfigDict({"type": "loss", "prefix": ""})}),
    })
    c.log = ConfigDict({
        "every_steps": 10,
        "progress": True,  # console progress line
        "tensorboard": True,
        "mfu": True,  # model FLOP utilisation (needs the device peak)
    })
    c.compilation_cache_dir = None  # persistent XLA compilation cache
    c.distributed = ConfigDict({
        "initialize": "auto",  # auto | on | off
        "coordinator_address": None,
        "num_processes": None,
        "process_id": None,
        "local_device_ids": None,
        "timeout_s": 300,
    })
    return c


# The declared type of every default_config() key that accepts None (the others
# take the type of their default). tests/test_config_cli.py checks that every key
# whose default is None is listed here.
KEY_TYPES: dict[str, Any] = {
    "model.name": str | None, "model.size": str | None,
    "teacher.name": str | None, "teacher.size": str | None,
    "teacher.params": str | None, "teacher.hf": str | None,
    "init.params": str | None, "init.hf": str | None,
    "tokenizer": str | None,
    "optimizer.mu_dtype": str | None,
    "optimizer.clip_norm": float | None,  # None or 0: no clipping
    "schedule.decay_steps": int | None,  # None: num_steps
    "schedule.timescale": float | None,  # None: warmup_steps
    "checkpoint.best_metric": str | None,
    "eval.num_batches": int | None,  # None or -1: the whole split
    "eval.batch_size": int | None,  # None: batch_size
    "eval.data": Mapping | None,  # None: the data section with eval.split
    "compilation_cache_dir": str | None,
    "distributed.coordinator_address": str | None,
    "distributed.num_processes": int | None,
    "distributed.process_id": int | None,
    "distributed.local_device_ids": tuple[int, ...] | None,
}
# Free-form sections: their keys take any literal, None or a word, and an override may
# add one (their consumer, jaxmm.data.make_iterator, checks the keys).
_OPEN_SECTIONS = ("data", "eval.data")
_ANY_TYPE = tuple(f"{s}." for s in _OPEN_SECTIONS)


def _field_type(cls: type, names: Sequence[str]) -> Any:
    """The type hint of the field ``names[0]`` of the config class ``cls`` (following
    nested config classes for ``names[1:]``); ``None`` when it is not a field."""
    try:
        hints = typing.get_type_hints(cls)
    except (NameError, TypeError):
        hints = {f.name: f.type for f in dataclasses.fields(cls) if not isinstance(f.type, str)}
    tp = hints.get(names[0])
    if len(names) == 1 or tp is None:
        return tp
    members = typing.get_args(tp) or (tp,)
    nested = [m for m in members if dataclasses.is_dataclass(m) and isinstance(m, type)]
    return _field_type(nested[0], names[1:]) if len(nested) == 1 else None


def key_types(config: ConfigDict) -> Callable[[str], Any]:
    """``path -> declared type`` of the run config's keys (``None``: undeclared, so the
    type of the current value); see the module docstring. Looks ``config`` up when
    called, so it sees the task, model and evaluators chosen by then."""
    from jaxmm.evaluate.evaluators import EVALUATORS
    from jaxmm.models import registry
    from jaxmm.train.tasks import get_task

    def lookup(path: str) -> Any:
        if path in KEY_TYPES:
            return KEY_TYPES[path]
        if path.startswith(_ANY_TYPE):
            return Any
        parts = path.split(".")
        head, rest = ".".join(parts[:2]), parts[2:]
        if head in ("model.config", "teacher.config") and rest:
            name = config[parts[0]].name
            return _field_type(registry.get(name).config_cls, rest) if name else None
        if parts[0] == "task" and parts[1:] and parts[1] != "name":
            return _field_type(get_task(config.task.name).Options, parts[1:])
        if head == "eval.evaluators" and len(rest) == 1:
            return Mapping | None  # None drops the evaluator
        if head == "eval.evaluators" and len(rest) == 2:
            key = rest[1]
            if key in ("type", "prefix"):
                return str if key == "type" else str | None
            if key in default_config().eval:
                inherited = KEY_TYPES.get(f"eval.{key}") or implied_type(default_config().eval[key])
                return inherited | None  # None: inherit from eval
            entry = config.eval.evaluators[rest[0]]
            return _field_type(EVALUATORS.get(entry.type).Options, [key])
        return None

    return lookup


def _check_keys(user: ConfigDict, ref: ConfigDict, prefix: str = "") -> None:
    for key in user.keys():
        path = f"{prefix}{key}"
        if path in _FREE_FORM:
            continue
        if key not in ref:
            hint = did_you_mean(key, list(ref.keys()), prefix=prefix)
            raise ConfigError(
                f"Unknown config key {path!r}.{hint} Valid keys here: "
                f"{', '.join(prefix + k for k in sorted(ref.keys()))}."
            )
        if isinstance(ref[key], ConfigDict) and isinstance(user[key], ConfigDict):
            _check_keys(user[key], ref[key], path + ".")
        elif isinstance(ref[key], ConfigDict) and user[key] is not None:
            raise ConfigError(f"Config key {path!r} must be a section (ConfigDict).")


def _merge(into: ConfigDict, src: ConfigDict, prefix: str = "") -> None:
    for key in src.keys():
        val = src[key]
        if isinstance(val, ConfigDict) and isinstance(into.get(key), ConfigDict):
            _merge(into[key], val, f"{prefix}{key}.")
        else:
            with into.ignore_type():
                into[key] = val
        if isinstance(into[key], list):
            with into.ignore_type():
                into[key] = tuple(into[key])


def _fill(section: ConfigDict, values: dict[str, Any]) -> None:
    """Adds every field of a config class's defaults that the section lacks."""
    for key, val in values.items():
        if key not in section:
            section[key] = ConfigDict(val) if isinstance(val, dict) else val
        elif isinstance(val, dict) and isinstance(section[key], ConfigDict):
            _fill(section[key], val)


def _model_defaults(name: str, size: str | None, given: ConfigDict | None = None
                    ) -> dict[str, Any]:
    """Every field of model ``name``'s config: its size preset, or what ``given`` implies.

    Normally the preset's values (the caller adds those ``given`` lacks). When
    ``given`` switches a sub-config's kind (a captioner's ``encoder`` from
    ``vit`` to ``clip_vision``) the preset's sub-config no longer fits, so the
    defaults are built from ``given`` itself. The config class's ``PASS_DOWN``
    keys (CLIP's ``dtype`` for both towers) are added as ``None`` (not set), so
    ``--config.model.config.dtype=bfloat16`` reaches them too.
    """
    from jaxmm.models import registry

    cls = registry.get(name).config_cls
    return {**dict.fromkeys(cls.PASS_DOWN), **_preset_or_given(cls, size, given)}


def _preset_or_given(cls: type, size: str | None, given: ConfigDict | None) -> dict[str, Any]:
    preset = (cls.from_size(size) if size else cls()).to_dict()
    given = given.to_dict() if isinstance(given, ConfigDict) else dict(given or {})
    if not given:
        return preset

    def merged(base: dict, top: dict) -> dict:
        out = dict(base)
        for key, val in top.items():
            out[key] = (merged(base[key], val) if isinstance(val, dict)
                        and isinstance(base.get(key), dict) else val)
        return out

    try:
        cls.from_dict(merged(preset, given))
        return preset
    except (ConfigError, TypeError, ValueError):
        pass
    try:
        return (cls.from_size(size, **given) if size else cls.from_dict(given)).to_dict()
    except (ConfigError, TypeError, ValueError):
        return preset  # building the model reports the real problem, naming the key


def resolve_config(user: ConfigDict | dict, overrides: Sequence[str] = ()) -> ConfigDict:
    """Defaults <- ``user`` <- ``overrides``; completed, checked and locked.

    Idempotent: resolving an already resolved config gives the same config.
    """
    user = ConfigDict(user.to_dict() if isinstance(user, ConfigDict) else user)
    _check_keys(user, default_config())
    config = default_config()
    _merge(config, user)
    for module in config.imports:
        try:
            importlib.import_module(module)
        except ImportError as e:
            raise ConfigError(f"imports: cannot import {module!r}: {e}") from None
    overrides = [o.removeprefix("--config.") for o in overrides]
    types_of = key_types(config)
    apply_overrides(config, [o for o in overrides if not o.startswith(_LATE_OVERRIDES)],
                    types_of, open_sections=_OPEN_SECTIONS)
    from jaxmm.train.tasks import get_task

    task_cls = get_task(config.task.name)
    _fill(config.task, task_cls.Options().to_dict())
    if config.model.name is None:
        config.model.name = task_cls.default_model
    if config.model.name is None:
        raise ConfigError(
            f"model.name is not set and task {config.task.name!r} has no default model; "
            "set --config.model.name=<registered model>."
        )
    for section in (config.model, config.teacher):
        if section.name is not None:
            _fill(section.config, _model_defaults(section.name, section.size,
                                                  section.config))
    from jaxmm.evaluate.evaluators import complete_evaluator_configs

    complete_evaluator_configs(config.eval.evaluators)
    apply_overrides(config, [o for o in overrides if o.startswith(_LATE_OVERRIDES)], types_of)
    complete_evaluator_configs(config.eval.evaluators)  # checks the overridden values
    config.lock()
    return config


def load_run_config(spec: str, overrides: Sequence[str] = ()) -> ConfigDict:
    """``configs/x.py[:arg]`` + ``a.b=v`` overrides -> complete run config."""
    return resolve_config(load_config(spec), overrides)


def parse_config_arg(arg: str | None, **defaults: Any) -> ConfigDict:
    """Parses a config file's ``:arg`` (``"tiny,steps=100"``) over ``defaults``.

    A bare word sets the first default; ``key=value`` sets ``key`` (values are
    converted to the default's type). Unknown keys raise :class:`ConfigError`.
    """
    out = dict(defaults)
    for i, item in enumerate(p for p in (arg or "").split(",") if p):
        key, sep, value = item.partition("=")
        if not sep:
            if i or not defaults:
                raise ConfigError(f"Config argument {item!r} must be key=value.")
            key, value = next(iter(defaults)), item
        if key not in defaults:
            hint = did_you_mean(key, list(defaults))
            raise ConfigError(f"Unknown config argument {key!r}.{hint} Valid: "
                              f"{', '.join(defaults)}.")
        cur = defaults[key]
        if isinstance(cur, bool):
            out[key] = value.lower() in ("1", "true", "yes")
        elif isinstance(cur, int | float) and cur is not None:
            out[key] = type(cur)(value)
        else:
            out[key] = value
    return ConfigDict(out)


def data_section(name: str, *, accepts: Sequence[str], synthetic: Mapping[str, Any] | None = None,
                 **preset: Any) -> ConfigDict:
    """The ``data`` section that a ``configs/*.py`` file builds from its ``data=NAME``.

    ``synthetic`` gives the synthetic source with the dimensions in ``synthetic``;
    any other name is a catalog dataset (:func:`jaxmm.data.catalog.data_config`:
    ``lm1b``, ``glue/sst2``, ``coco_captions``, ``scenes``, ...) built with the
    ``preset`` options that it takes (``task``, ``max_length``, ``image_size``,
    ``data_dir``, ...). ``accepts`` names the batch layouts (the catalog's
    ``task`` column) the config's task trains on; a dataset of another layout is
    refused with the catalog datasets that fit.
    """
    if name == "synthetic":
        return ConfigDict({"name": "synthetic", **(synthetic or {})})
    from jaxmm.data import catalog

    options = {k: v for k, v in preset.items() if v is not None}
    if name.partition("/")[0] not in catalog.PRESETS:
        catalog.data_config(name)  # the catalog's one-line "Unknown dataset" error
    layout = _layout_of(catalog, name, options)
    if layout not in accepts:
        fits = [n for n in catalog.names() if _layout_of(catalog, n, options) in accepts]
        gives = f"gives {layout} batches" if layout else "has no batch layout for this task"
        raise ConfigError(
            f"data={name!r} {gives}, but this config trains on {' or '.join(accepts)}.",
            hint=f"Pick one of: {', '.join(fits + ['synthetic'])}.")
    return catalog.data_config(name, **options)


def _layout_of(catalog: Any, name: str, options: Mapping[str, Any]) -> str | None:
    """The batch layout of catalog dataset ``name`` built with ``options`` (``None``: the
    preset does not offer the task the options ask for)."""
    try:
        return catalog.data_config(name, **options).task
    except ConfigError:
        return None
