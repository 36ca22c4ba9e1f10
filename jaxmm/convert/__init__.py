"""Hugging Face checkpoint import/export with numeric parity.

``from_hf(path)`` reads a Hugging Face model folder, dispatches on
``config.json``'s ``model_type`` to a registered converter, and returns
``Converted(model, params, config)``. ``to_hf(model, params, out_dir)`` writes a
folder that ``transformers`` loads with ``from_pretrained``.

Each family file (``jaxmm/convert/bert.py``, ...) declares one rule table
(:mod:`jaxmm.convert.rules`: Hugging Face tensor name <-> jaxmm param path,
transform) from which both directions are generated, translates
``config.json`` with a field map (:mod:`jaxmm.convert.fields`), and registers
a :class:`Converter` in :data:`CONVERTERS` with :func:`register_converter`.
To add a family: write such a module and list it in ``_FAMILY_MODULES`` (or
import it yourself before calling ``from_hf``).

:func:`save_converted` / :func:`load_converted` read and write jaxmm's own
model folder (``jaxmm/convert/native.py``).
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable
from typing import Any, NamedTuple

from jaxmm.config import nearest
from jaxmm.convert.io import (
    ConversionError,
    TensorStore,
    read_hf_config,
    read_hf_tensors,
    write_hf_folder,
)
from jaxmm.convert.native import load_converted, save_converted
from jaxmm.registry import Registry

__all__ = [
    "CONVERTERS",
    "ConversionError",
    "Converted",
    "Converter",
    "TensorStore",
    "from_hf",
    "load_converted",
    "register_converter",
    "save_converted",
    "supported_model_types",
    "to_hf",
]


class Converted(NamedTuple):
    model: Any
    params: Any
    config: Any


@dataclasses.dataclass(frozen=True)
class Converter:
    """How Hugging Face ``model_type`` values map to jaxmm models.

    load(hf_config, store, **options) -> (model, params): builds the model from
      ``config.json`` and takes its tensors from ``store`` (a TensorStore), usually
      with :func:`jaxmm.convert.rules.params_from_hf` over the family's table.
    save(model, params) -> (hf_config, tensors): the inverse (usually
      :func:`~jaxmm.convert.rules.params_to_hf` over the same table); ``None`` if
      export is not supported.
    handles(model) -> bool: whether ``save`` can export this model instance.
    """

    model_types: tuple[str, ...]
    load: Callable[..., tuple[Any, Any]]
    save: Callable[[Any, Any], tuple[dict, dict]] | None = None
    handles: Callable[[Any], bool] = lambda model: False


# The modules whose import registers the built-in converters.
_FAMILY_MODULES: tuple[str, ...] = (
    "jaxmm.convert.bert",
    "jaxmm.convert.gpt2",
    "jaxmm.convert.llama",
    "jaxmm.convert.t5",
    "jaxmm.convert.vit",
    "jaxmm.convert.clip",
    "jaxmm.convert.vision_encoder_decoder",
    "jaxmm.convert.whisper",
    "jaxmm.convert.detr",
)

CONVERTERS: Registry[Converter] = Registry(
    "Hugging Face model type", error=ConversionError,
    loader=lambda: [importlib.import_module(name) for name in _FAMILY_MODULES])


def register_converter(converter: Converter) -> Converter:
    """Registers ``converter`` under each of its ``model_types``.

    A new family: a module that builds a :class:`Converter` and calls this at
    import time; import it before ``from_hf`` (or, in tests, use
    ``CONVERTERS.temporary(model_type, converter)``).
    """
    for model_type in converter.model_types:
        CONVERTERS.register(model_type, converter)
    return converter


def supported_model_types() -> list[str]:
    return CONVERTERS.names()


def from_hf(path: str, *, allow_pickle: bool = False, **options) -> Converted:
    """Loads a Hugging Face model folder into jaxmm.

    Args:
      path: folder with ``config.json`` and ``model.safetensors`` (or a sharded
        ``model.safetensors.index.json``).
      allow_pickle: permit reading a ``pytorch_model.bin``-only folder (with
        ``torch.load(weights_only=True)``). Off by default.
      options: passed to the family converter (e.g. ``scan_layers=True``).

    Returns:
      ``Converted(model, params, config)``; ``model.apply({"params": params}, ...)``.
    """
    hf_config = read_hf_config(path)
    model_type = hf_config.get("model_type")
    if model_type not in CONVERTERS:
        close = nearest(str(model_type), CONVERTERS.names())
        hint = f" (closest supported: {', '.join(close)})" if close else ""
        raise ConversionError(
            f"Unsupported model_type {model_type!r} in {path}/config.json{hint}. "
            f"Supported: {', '.join(CONVERTERS.names()) or 'none registered'}."
        )
    tensors = read_hf_tensors(path, allow_pickle=allow_pickle)
    store = TensorStore(tensors, source=path)
    model, params = CONVERTERS.get(model_type).load(hf_config, store, **options)
    return Converted(model, params, model.config)


def to_hf(model: Any, params: Any, out_dir: str) -> str:
    """Writes ``model``/``params`` as a Hugging Face folder; returns ``out_dir``."""
    if isinstance(params, dict) and set(params) == {"params"}:
        params = params["params"]
    converters = {id(conv): conv for _, conv in CONVERTERS.items()}.values()
    for conv in converters:
        if conv.save is not None and conv.handles(model):
            hf_config, tensors = conv.save(model, params)
            return write_hf_folder(out_dir, hf_config, tensors)
    raise ConversionError(
        f"No Hugging Face exporter handles {type(model).__name__}. Exportable model types: "
        f"{', '.join(CONVERTERS.names())}."
    )
