"""``config.json`` <-> jaxmm config: what the family converters share.

A family declares its plain field renames once, as a :class:`FieldMap`
of ``(jaxmm name, Hugging Face name[, Hugging Face default])``, and writes
small functions only for what is not a rename (derived or fixed values)::

    _FIELDS = FieldMap(("num_layers", "n_layer", 12), ("d_model", "n_embd", 768), *TOKEN_IDS)
    values = _FIELDS.from_hf(hf)        # {"num_layers": ..., "d_model": ...}
    hf = _FIELDS.to_hf(cfg)             # {"n_layer": ..., "n_embd": ...}
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from jaxmm.convert.io import ConversionError
from jaxmm.layers.mlp import ACTIVATIONS

__all__ = [
    "TOKEN_IDS",
    "FieldMap",
    "activation_from_hf",
    "activation_to_hf",
    "first_id",
    "labels_to_hf",
    "num_labels_from_hf",
    "square",
    "unsupported",
]

_NO_DEFAULT = object()

# Special token ids: HF default None (absent from the file means no such token).
TOKEN_IDS = (("bos_token_id", "bos_token_id", None), ("eos_token_id", "eos_token_id", None),
             ("pad_token_id", "pad_token_id", None))

# jaxmm activation name -> the Hugging Face ACT2FN name of the same function.
_TO_HF_ACT = {"gelu_tanh": "gelu_new", "swish": "silu"}


class FieldMap:
    """Plain renames between a jaxmm config and ``config.json``.

    Each entry is ``(ours, theirs)`` (copied when ``config.json`` has a non-null
    value; otherwise the jaxmm default stays) or ``(ours, theirs, default)``
    (``config.json``'s value, or ``default`` when the key is absent: the
    Hugging Face default, which may differ from jaxmm's).
    """

    def __init__(self, *entries: tuple):
        self.entries = entries

    def from_hf(self, hf: Mapping[str, Any]) -> dict[str, Any]:
        values = {}
        for ours, theirs, *default in self.entries:
            if default:
                values[ours] = hf.get(theirs, default[0])
            elif hf.get(theirs) is not None:
                values[ours] = hf[theirs]
        return values

    def to_hf(self, cfg: Any) -> dict[str, Any]:
        return {theirs: getattr(cfg, ours) for ours, theirs, *_ in self.entries}

    def __add__(self, other: FieldMap) -> FieldMap:
        return FieldMap(*self.entries, *other.entries)


def unsupported(cfg: Any, family: str, **needs: Any) -> list[str]:
    """The fields of ``cfg`` that differ from what ``family`` needs, as messages
    (``"norm='rmsnorm' (GPT-2 needs 'layernorm')"``); empty if none."""
    return [f"{key}={getattr(cfg, key)!r} ({family} needs {value!r})"
            for key, value in needs.items() if getattr(cfg, key) != value]


def activation_from_hf(name: str, where: str) -> str:
    """A Hugging Face activation name as a jaxmm one (clear error if unsupported)."""
    if not isinstance(name, str) or name not in ACTIVATIONS:
        raise ConversionError(
            f"{where}: activation {name!r} is not supported by jaxmm; supported: "
            f"{', '.join(sorted(ACTIVATIONS))}."
        )
    return "gelu_tanh" if ACTIVATIONS[name] is ACTIVATIONS["gelu_tanh"] else name


def activation_to_hf(name: str) -> str:
    return _TO_HF_ACT.get(name, name)


def first_id(value: Any) -> Any:
    """``eos_token_id`` may be a list in ``config.json``; jaxmm keeps the first."""
    return value[0] if isinstance(value, list) and value else value


def square(value: Any, name: str, where: str) -> int:
    """An image or patch size that must be square: ``16`` or ``[16, 16]`` -> 16."""
    if isinstance(value, list | tuple):
        if len(set(value)) != 1:
            raise ConversionError(f"Non-square {name}={value} is not supported by {where}.")
        value = value[0]
    return int(value)


def num_labels_from_hf(hf: Mapping[str, Any]) -> int:
    return len(hf["id2label"]) if hf.get("id2label") else hf.get("num_labels", 2)


def labels_to_hf(num_labels: int) -> dict[str, Any]:
    """``id2label`` / ``label2id`` with Hugging Face's default names."""
    labels = {str(i): f"LABEL_{i}" for i in range(num_labels)}
    return {"id2label": labels, "label2id": {v: int(k) for k, v in labels.items()}}
