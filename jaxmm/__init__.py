"""jaxmm: multimodal Transformer models and their training system in JAX/Flax.

Submodules are imported on first use (``jaxmm.layers``, ``jaxmm.models``,
``jaxmm.convert``, ``jaxmm.sharding``, ...), so ``import jaxmm`` stays cheap and
does not pull in TensorFlow.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_SUBMODULES = (
    "audio_features",
    "compile",
    "config",
    "convert",
    "data",
    "evaluate",
    "generation",
    "kb",
    "layers",
    "lora",
    "losses",
    "models",
    "quantize",
    "sharding",
    "train",
    "viz",
)
# Top-level shortcuts: name -> (module, attribute).
_SHORTCUTS = {"generate": ("jaxmm.generation", "generate")}


def __getattr__(name: str) -> Any:
    if name in _SHORTCUTS:
        module, attr = _SHORTCUTS[name]
        return getattr(importlib.import_module(module), attr)
    if name in _SUBMODULES:
        return importlib.import_module(f"jaxmm.{name}")
    raise AttributeError(f"module 'jaxmm' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(list(globals()) + list(_SUBMODULES) + list(_SHORTCUTS))
