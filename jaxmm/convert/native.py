"""jaxmm's own model folder: a registered model's config plus its params.

Written by :func:`save_converted` (and ``jaxmm convert from-hf``), read back by
:func:`load_converted`. Layout of the folder::

    jaxmm_model.json      {"format": "jaxmm-model", "version": 1,
                           "model": "<registered model name, e.g. gpt, t5>",
                           "config": {<the model config's fields>},
                           "source": "<where it came from, optional>"}
    params.safetensors    one tensor per parameter, named by its path in the
                          params tree joined with "/"
                          (e.g. "model/decoder/layers_0/layer/mlp/wi/kernel"),
                          in the parameter's dtype.

Safetensors holds plain arrays only (no pickle); any framework can read it.
The params are exactly ``model.init(...)["params"]``'s tree (unboxed), so
``model.apply({"params": params}, ...)`` works on what :func:`load_converted`
returns.
"""

from __future__ import annotations

import json
import os
from typing import Any

import flax.linen as nn
import jax
import numpy as np
from flax import traverse_util

from jaxmm.convert.io import ConversionError

__all__ = ["FORMAT", "MODEL_FILE", "PARAMS_FILE", "load_converted", "save_converted"]

FORMAT, VERSION = "jaxmm-model", 1
MODEL_FILE, PARAMS_FILE = "jaxmm_model.json", "params.safetensors"


def _flatten(tree: Any) -> dict[str, np.ndarray]:
    flat = traverse_util.flatten_dict(tree)
    for path in flat:
        bad = [str(k) for k in path if "/" in str(k)]
        if bad:
            raise ConversionError(f"Parameter name {bad[0]!r} contains '/', which this format "
                                  "uses as its separator.")
    return {"/".join(map(str, path)): np.ascontiguousarray(np.asarray(jax.device_get(value)))
            for path, value in flat.items()}


def save_converted(model: Any, params: Any, out_dir: str, *, source: str | None = None) -> str:
    """Writes ``model``'s config and ``params`` into ``out_dir`` (see the module doc)."""
    from safetensors.numpy import save_file

    from jaxmm.models import name_of

    if isinstance(params, dict) and set(params) == {"params"}:
        params = params["params"]
    flat = _flatten(nn.meta.unbox(params))
    meta = {"format": FORMAT, "version": VERSION, "model": name_of(model),
            "config": model.config.to_dict(), "source": source}
    os.makedirs(out_dir, exist_ok=True)
    save_file(flat, os.path.join(out_dir, PARAMS_FILE), metadata={"format": FORMAT})
    with open(os.path.join(out_dir, MODEL_FILE), "w", encoding="utf-8") as f:
        json.dump(meta, f, indent=2, sort_keys=True)
    return out_dir


def load_converted(path: str):
    """Reads a folder written by :func:`save_converted`.

    Returns:
      ``Converted(model, params, config)`` (the same triple as ``from_hf``).
    """
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    from jaxmm.convert import Converted
    from jaxmm.models import build

    meta_path, params_path = os.path.join(path, MODEL_FILE), os.path.join(path, PARAMS_FILE)
    if not os.path.isfile(meta_path):
        hint = (" It looks like a Hugging Face folder; use jaxmm.convert.from_hf (or "
                "'jaxmm convert from-hf') instead." if os.path.isfile(
                    os.path.join(path, "config.json")) else "")
        raise ConversionError(f"{path!r} is not a jaxmm model folder: {MODEL_FILE} is missing."
                              + hint)
    try:
        with open(meta_path, encoding="utf-8") as f:
            meta = json.load(f)
    except json.JSONDecodeError as e:
        raise ConversionError(f"{meta_path} is not valid JSON: {e}") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ConversionError(f"{meta_path} is not a {FORMAT} file.")
    if meta.get("version", 0) > VERSION:
        raise ConversionError(f"{meta_path} has format version {meta['version']}; this jaxmm "
                              f"reads up to {VERSION}. Upgrade jaxmm.")
    model = build(meta["model"], meta["config"])
    if not os.path.isfile(params_path):
        raise ConversionError(f"{path!r} has no {PARAMS_FILE}.")
    try:
        flat = load_file(params_path)
    except (SafetensorError, OSError, ValueError) as e:
        raise ConversionError(f"{params_path} is corrupt or not a safetensors file ({e}).") \
            from None
    return Converted(model, traverse_util.unflatten_dict(flat, sep="/"), model.config)
