"""Optimizers and learning-rate schedules from the run config (Optax).

``make_optimizer(config)`` builds::

    multi_transform({
        "trainable": chain(clip_by_global_norm, <adamw|adafactor|lion|sgd>
                           with schedule and weight-decay mask,
                           scale_by_lr_multipliers),
        "frozen": set_to_zero(),          # config.optimizer.freeze regexes
    })

Parameters are addressed by their ``/``-joined path
(``"encoder/layers_0/mlp/wi/kernel"``); the config's regexes use ``re.search``.

* Weight decay applies to params with 2+ dims whose path matches none of
  ``optimizer.weight_decay_exclude`` (so never to biases and norm scales; by
  default not to embeddings either).
* Frozen params get zero updates and no optimizer state; the train step also
  zeroes their gradients so the backward pass into them is dead code.
* ``optimizer.lr_multipliers = (("vision", 0.1), ...)`` scales the updates of
  matching params (first match wins), the same as a per-group learning rate
  for these update rules, which are linear in the learning rate.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import optax

from jaxmm.config import ConfigError, nearest

__all__ = [
    "OPTIMIZERS",
    "SCHEDULES",
    "decay_mask",
    "make_optimizer",
    "make_schedule",
    "path_str",
    "trainable_mask",
]

OPTIMIZERS = ("adamw", "adafactor", "lion", "sgd")
SCHEDULES = ("cosine", "linear", "rsqrt", "constant")


def path_str(path: Sequence[Any]) -> str:
    """A tree path as ``"a/b/c"``."""
    parts = []
    for key in path:
        for attr in ("key", "name", "idx"):
            if hasattr(key, attr):
                parts.append(str(getattr(key, attr)))
                break
        else:
            parts.append(str(key))
    return "/".join(parts)


def _compile(patterns: Sequence[str], key: str) -> list[re.Pattern]:
    out = []
    for p in patterns:
        try:
            out.append(re.compile(p))
        except re.error as e:
            raise ConfigError(f"{key}: invalid regex {p!r}: {e}") from None
    return out


def _map_paths(fn: Callable[[str, Any], Any], tree: Any) -> Any:
    return jax.tree_util.tree_map_with_path(lambda p, x: fn(path_str(p), x), tree)


def trainable_mask(params: Any, freeze: Sequence[str] = ()) -> Any:
    """Tree of bools: True where the param is trained (matches no ``freeze`` regex)."""
    pats = _compile(freeze, "optimizer.freeze")
    return _map_paths(lambda p, _: not any(r.search(p) for r in pats), params)


def decay_mask(params: Any, exclude: Sequence[str] = ()) -> Any:
    """Tree of bools: True where weight decay applies (2+ dims, no ``exclude`` match)."""
    pats = _compile(exclude, "optimizer.weight_decay_exclude")
    return _map_paths(
        lambda p, x: len(jnp.shape(x)) >= 2 and not any(r.search(p) for r in pats), params
    )


def _multipliers(params: Any, rules: Sequence[tuple[str, float]]) -> Any:
    compiled = []
    for rule in rules:
        if len(rule) != 2:
            raise ConfigError(
                f"optimizer.lr_multipliers entries are (regex, multiplier) pairs; got {rule!r}."
            )
        compiled.append((_compile([rule[0]], "optimizer.lr_multipliers")[0], float(rule[1])))

    def pick(path, _):
        for pat, mult in compiled:
            if pat.search(path):
                return mult
        return 1.0

    return _map_paths(pick, params)


def scale_by_lr_multipliers(rules: Sequence[tuple[str, float]]) -> optax.GradientTransformation:
    """Multiplies each update by the multiplier of the first regex matching its path."""

    def init_fn(params):
        del params
        return optax.EmptyState()

    def update_fn(updates, state, params=None):
        del params
        mults = _multipliers(updates, rules)
        return jax.tree.map(lambda u, m: u if m == 1.0 else u * m, updates, mults), state

    return optax.GradientTransformation(init_fn, update_fn)


def make_schedule(schedule: Any, learning_rate: float, num_steps: int) -> optax.Schedule:
    """Warmup (linear from ``init_value``) then cosine / linear / rsqrt / constant."""
    name = schedule.name
    if name not in SCHEDULES:
        close = nearest(name, SCHEDULES)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ConfigError(
            f"Unknown schedule {name!r} (config key schedule.name).{hint} "
            f"Choose one of: {', '.join(SCHEDULES)}."
        )
    warmup = int(schedule.warmup_steps)
    if warmup < 0:
        raise ConfigError(f"schedule.warmup_steps must be >= 0; got {warmup}.")
    peak = float(learning_rate)
    end = peak * float(schedule.end_value_ratio)
    decay_steps = int(schedule.decay_steps or num_steps) - warmup
    if name == "constant":
        after = optax.constant_schedule(peak)
    elif name == "cosine":
        after = optax.cosine_decay_schedule(peak, max(decay_steps, 1),
                                            alpha=float(schedule.end_value_ratio))
    elif name == "linear":
        after = optax.linear_schedule(peak, end, max(decay_steps, 1))
    else:
        timescale = float(schedule.timescale or max(warmup, 1))

        def after(count):
            return peak * jnp.sqrt(timescale / jnp.maximum(count + warmup, timescale))

    if warmup == 0:
        return after
    ramp = optax.linear_schedule(float(schedule.init_value), peak, warmup)
    return optax.join_schedules([ramp, after], [warmup])


def _base(opt: Any, lr: optax.Schedule) -> optax.GradientTransformation:
    name = opt.name
    wd = float(opt.weight_decay or 0.0)
    mask = lambda params: decay_mask(params, opt.weight_decay_exclude)  # noqa: E731
    mu_dtype = getattr(jnp, opt.mu_dtype) if opt.mu_dtype else None
    if name == "adamw":
        return optax.adamw(lr, b1=opt.b1, b2=opt.b2, eps=opt.eps, mu_dtype=mu_dtype,
                           weight_decay=wd, mask=mask)
    if name == "lion":
        return optax.lion(lr, b1=opt.b1, b2=opt.b2, mu_dtype=mu_dtype, weight_decay=wd,
                          mask=mask)
    if name == "adafactor":
        return optax.adafactor(lr, factored=opt.factored, decay_rate=opt.decay_rate,
                               weight_decay_rate=wd or None, weight_decay_mask=mask,
                               dtype_momentum=mu_dtype or jnp.float32)
    if name == "sgd":
        sgd = optax.sgd(lr, momentum=opt.momentum or None, nesterov=opt.nesterov)
        return optax.chain(optax.add_decayed_weights(wd, mask), sgd) if wd else sgd
    close = nearest(name, OPTIMIZERS)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise ConfigError(
        f"Unknown optimizer {name!r} (config key optimizer.name).{hint} "
        f"Choose one of: {', '.join(OPTIMIZERS)}."
    )


def make_optimizer(config: Any) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """``(transformation, schedule)`` from ``config.optimizer`` and ``config.schedule``."""
    opt = config.optimizer
    schedule = make_schedule(config.schedule, opt.learning_rate, config.num_steps)
    parts = []
    if opt.clip_norm:
        parts.append(optax.clip_by_global_norm(float(opt.clip_norm)))
    parts.append(_base(opt, schedule))
    if opt.lr_multipliers:
        parts.append(scale_by_lr_multipliers(tuple(tuple(r) for r in opt.lr_multipliers)))
    trainable = optax.chain(*parts)
    if not opt.freeze:
        return trainable, schedule
    freeze = tuple(opt.freeze)
    _compile(freeze, "optimizer.freeze")

    def labels(params):
        return jax.tree.map(lambda t: "trainable" if t else "frozen",
                            trainable_mask(params, freeze))

    tx = optax.multi_transform({"trainable": trainable, "frozen": optax.set_to_zero()}, labels)
    return tx, schedule
