"""Initial weights for fine-tuning: ``config.init.params`` or ``config.init.hf``.

:func:`merge_pretrained` takes a checkpoint's parameters wherever their path and
shape match the model's, also when the checkpoint is nested differently (a base
encoder loaded into a model with a head, one tower of a dual encoder loaded into
another model's encoder). :func:`initial_params` applies it to a freshly
initialised, sharded parameter tree.
"""

from __future__ import annotations

import collections
import logging
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxmm import sharding
from jaxmm.config import ConfigError

log = logging.getLogger(__name__)

__all__ = ["MAX_ADDED_KEYS", "MAX_DROPPED_KEYS", "initial_params", "merge_pretrained"]

# How far merge_pretrained looks for a checkpoint's place in the model: keys put in
# front of the checkpoint's paths, and leading keys dropped from them.
MAX_ADDED_KEYS, MAX_DROPPED_KEYS = 3, 2

Path = tuple[str, ...]


def _flat_params(tree: Any) -> dict[Path, Any]:
    return {tuple(sharding._tree_key_str(k) for k in path): v
            for path, v in jax.tree_util.tree_leaves_with_path(tree)}


def _best_nesting(flat_init: dict[Path, Any], flat_new: dict[Path, Any],
                  source: str) -> tuple[Path, Path]:
    """``(keys to add, keys to drop)`` that place the most checkpoint params in the
    model by path and shape (the plainest nesting on ties)."""
    by_suffix: dict[Path, list[Path]] = collections.defaultdict(list)
    for path in flat_init:
        for a in range(min(MAX_ADDED_KEYS, len(path) - 1) + 1):
            by_suffix[path[a:]].append(path[:a])
    votes: collections.Counter = collections.Counter()
    for path, value in flat_new.items():
        for d in range(min(MAX_DROPPED_KEYS, len(path) - 1) + 1):
            for add in by_suffix.get(path[d:], ()):
                if np.shape(value) == np.shape(flat_init[add + path[d:]]):
                    votes[(add, path[:d])] += 1
    if not votes:
        raise ConfigError(f"init from {source}: no parameter matches the model (by path and "
                          "shape); check model.name / model.config.")
    return max(votes, key=lambda n: (votes[n], -len(n[0]) - len(n[1])))


def merge_pretrained(init: Any, loaded: Any, source: str) -> Any:
    """``init`` with ``loaded``'s params wherever path and shape match (fine-tuning).

    Args:
      init: the model's freshly initialised params (a nested dict of arrays).
      loaded: a checkpoint's params, possibly nested differently: a base
        encoder (a Hugging Face ``BertModel`` folder) for a model with a head
        (its encoder under ``bert``), a checkpoint with a head for the bare
        encoder, or one tower of a bigger model (a CLIP image tower under
        ``vision_model``) for another model's encoder (a captioner's
        ``encoder/vision_model``). A nesting drops up to
        :data:`MAX_DROPPED_KEYS` leading keys from the checkpoint's paths and
        puts up to :data:`MAX_ADDED_KEYS` keys in front; the one that matches
        the most parameters (the plainest on ties) is used.
      source: names the checkpoint in messages.

    Returns:
      A tree shaped like ``init``: loaded values (in ``init``'s dtypes) where
      they fit, ``init``'s values elsewhere. Raises :class:`ConfigError` when
      nothing matches.
    """
    flat_init, flat_new = _flat_params(init), _flat_params(loaded)
    add, drop = _best_nesting(flat_init, flat_new, source)
    used = {add + path[len(drop):]: value for path, value in flat_new.items()
            if path[:len(drop)] == drop and add + path[len(drop):] in flat_init
            and np.shape(value) == np.shape(flat_init[add + path[len(drop):]])}
    missing = [k for k in flat_init if k not in used]
    log.info("init from %s: %d params loaded, %d kept from random init%s", source, len(used),
             len(missing), f" (e.g. {['/'.join(k) for k in missing[:3]]})" if missing else "")

    def pick(path, leaf):
        key = tuple(sharding._tree_key_str(k) for k in path)
        return jnp.asarray(used[key], leaf.dtype) if key in used else leaf

    return jax.tree_util.tree_map_with_path(pick, init)


def initial_params(config: Any, params: Any, shardings: Any) -> Any:
    """``params`` merged with ``config.init.params`` (a jaxmm export) or
    ``config.init.hf`` (a Hugging Face folder), placed with ``shardings``;
    ``params`` unchanged when neither is set."""
    if config.init.params:
        from jaxmm.convert.folders import load_exported

        _, variables = load_exported(config.init.params)
        loaded, source = variables["params"], config.init.params
    elif config.init.hf:
        from jaxmm.convert import from_hf

        loaded, source = from_hf(config.init.hf).params, config.init.hf
    else:
        return params
    merged = merge_pretrained(jax.device_get(params), jax.device_get(loaded), source)
    return jax.tree.map(jax.device_put, merged, shardings)
