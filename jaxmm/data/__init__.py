"""Data: tf.data pipelines, preprocessing ops, the built-in dataset, local builders.

Main entry point::

    it = jaxmm.data.make_iterator(data_config, split="train", batch_size=256, seed=0,
                                  shuffle=True, repeat=True, process_index=0,
                                  process_count=1, tokenizer=tok)
    batch = next(it); state = it.get_state(); it.set_state(state)

Attributes are imported lazily, so ``import jaxmm.data.tokenizers`` or
``jaxmm.data.scenes`` does not pull in TensorFlow.
"""

from __future__ import annotations

import importlib
from typing import Any

# name -> module that defines it.
_EXPORTS = {
    "make_iterator": "jaxmm.data.pipeline",
    "DataIterator": "jaxmm.data.pipeline",
    "MASK_KEY": "jaxmm.data.pipeline",
    "DataError": "jaxmm.data.sources",
    "open_source": "jaxmm.data.sources",
    "make_global_batch": "jaxmm.data.device",
    "prefetch_to_device": "jaxmm.data.device",
    "DevicePrefetchIterator": "jaxmm.data.device",
    "data_config": "jaxmm.data.catalog",
    "build_builtin": "jaxmm.data.builtin",
}
_ALIASES = {"build_builtin": "build"}


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        module = importlib.import_module(_EXPORTS[name])
        return getattr(module, _ALIASES.get(name, name))
    raise AttributeError(f"module 'jaxmm.data' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(list(globals()) + list(_EXPORTS))
