"""Reading and writing Hugging Face model folders (config.json + safetensors).

Never unpickles by default: a folder with only ``pytorch_model.bin`` is refused
unless the caller passes ``allow_pickle=True``, and even then it is read with
``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import warnings
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from jaxmm.errors import ConversionError

__all__ = [
    "ConversionError",
    "TensorStore",
    "read_hf_config",
    "read_hf_tensors",
    "write_hf_folder",
]

SAFE_SINGLE = "model.safetensors"
SAFE_INDEX = "model.safetensors.index.json"
PICKLE_FILES = ("pytorch_model.bin", "pytorch_model.bin.index.json")


def read_hf_config(path: str) -> dict[str, Any]:
    """Reads ``config.json`` from a Hugging Face model folder."""
    if not os.path.isdir(path):
        raise ConversionError(f"{path!r} is not a directory; pass a Hugging Face model folder.")
    cfg_path = os.path.join(path, "config.json")
    if not os.path.isfile(cfg_path):
        raise ConversionError(
            f"{path!r} has no config.json; a Hugging Face model folder needs config.json "
            "next to model.safetensors (save one with model.save_pretrained(folder))."
        )
    try:
        with open(cfg_path, encoding="utf-8") as f:
            config = json.load(f)
    except json.JSONDecodeError as e:
        raise ConversionError(f"{cfg_path} is not valid JSON: {e}") from None
    if not isinstance(config, dict):
        raise ConversionError(f"{cfg_path} must hold a JSON object.")
    return config


def _load_safetensors(file: str) -> dict[str, np.ndarray]:
    from safetensors import SafetensorError, safe_open

    out = {}
    try:
        with safe_open(file, framework="flax") as f:
            for key in f.keys():
                arr = f.get_tensor(key)
                out[key] = np.asarray(arr.astype("float32") if arr.dtype.name == "bfloat16"
                                      else arr)
    except (SafetensorError, OSError, ValueError) as e:
        raise ConversionError(
            f"{file} is corrupt or not a safetensors file ({e}). Re-download or re-save it "
            "with save_pretrained(..., safe_serialization=True)."
        ) from None
    return out


def _refusal_reason(message: str) -> str:
    """What torch's weights-only unpickler refused (its message's middle paragraphs:
    "Trying to load unsupported GLOBAL posix.system ...", "Unsupported operand 149")."""
    paragraphs = [" ".join(p.split()) for p in re.split(r"\n\s*\n", message) if p.strip()]
    kept = [p for p in paragraphs[1:] if not p.startswith(("Check the documentation",
                                                              "Please file an issue"))]
    return "; ".join(kept)[:300] or (paragraphs[0][:300] if paragraphs else "refused")


def _load_pickle(path: str, files: Iterable[str]) -> dict[str, np.ndarray]:
    try:
        import torch
    except ImportError:
        raise ConversionError(
            "Reading pytorch_model.bin needs torch (pip install torch); better, convert the "
            "checkpoint to safetensors."
        ) from None
    out = {}
    for name in files:
        file = os.path.join(path, name)
        try:
            with warnings.catch_warnings():  # torch warns about the pickle protocol
                warnings.simplefilter("ignore", UserWarning)
                state = torch.load(file, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as e:  # weights_only refused something: nothing ran
            reason = _refusal_reason(str(e))
            raise ConversionError(
                f"{file} was refused: it is not a plain tensor checkpoint (torch.load with "
                f"weights_only=True: {reason}). Nothing in it was run.",
                hint="Use a safetensors copy from a source you trust.") from None
        except (RuntimeError, EOFError, OSError) as e:
            raise ConversionError(f"{file} is corrupt or not a PyTorch checkpoint ({e}).",
                                  hint="Re-download it, or use a safetensors copy.") from None
        if not isinstance(state, Mapping):
            raise ConversionError(f"{file} holds a {type(state).__name__}, not a state dict of "
                                  "tensors.")
        for k, v in state.items():
            out[k] = v.float().numpy() if v.dtype == torch.bfloat16 else v.numpy()
    return out


def read_hf_tensors(path: str, *, allow_pickle: bool = False) -> dict[str, np.ndarray]:
    """All tensors of a model folder: ``model.safetensors`` or a sharded index."""
    single = os.path.join(path, SAFE_SINGLE)
    index = os.path.join(path, SAFE_INDEX)
    if os.path.isfile(index):
        try:
            with open(index, encoding="utf-8") as f:
                weight_map = json.load(f)["weight_map"]
        except (json.JSONDecodeError, KeyError) as e:
            raise ConversionError(f"{index} is not a valid safetensors index ({e}).") from None
        tensors: dict[str, np.ndarray] = {}
        for shard in sorted(set(weight_map.values())):
            shard_path = os.path.join(path, shard)
            if not os.path.isfile(shard_path):
                raise ConversionError(f"{index} names shard {shard!r}, which is missing.")
            tensors.update(_load_safetensors(shard_path))
        missing = sorted(set(weight_map) - set(tensors))
        if missing:
            raise ConversionError(f"Shards lack tensors listed in {index}: {missing[:10]}")
        return tensors
    if os.path.isfile(single):
        return _load_safetensors(single)
    pickles = [f for f in PICKLE_FILES if os.path.isfile(os.path.join(path, f))]
    if pickles:
        if not allow_pickle:
            raise ConversionError(
                f"{path!r} holds only PyTorch pickle weights ({pickles[0]}). jaxmm does not "
                "unpickle files by default because pickles can run arbitrary code. Convert it "
                "to safetensors (transformers: model.save_pretrained(dir, "
                "safe_serialization=True)), or, if you trust the file, pass allow_pickle=True "
                "(CLI: --allow-pickle); it is then read with torch.load(weights_only=True)."
            )
        if pickles[0].endswith(".json"):
            with open(os.path.join(path, pickles[0]), encoding="utf-8") as f:
                files = sorted(set(json.load(f)["weight_map"].values()))
        else:
            files = [pickles[0]]
        return _load_pickle(path, files)
    raise ConversionError(
        f"{path!r} has no weights: expected {SAFE_SINGLE} or {SAFE_INDEX}."
    )


class TensorStore:
    """Tensors by name that records which were used, to report leftovers.

    ``take(name)`` returns a tensor, or ``None`` for a missing one (missing
    names are collected, not raised one at a time); ``mismatch(text)`` records
    a tensor whose shape does not fit; ``finish()`` raises one error naming
    every missing, mis-shaped and unexpected (unused) tensor.
    """

    def __init__(self, tensors: Mapping[str, np.ndarray], *, source: str = "checkpoint"):
        self._tensors = dict(tensors)
        self._used: set[str] = set()
        self._missing: list[str] = []
        self._mismatched: list[str] = []
        self.source = source

    def __contains__(self, name: str) -> bool:
        return name in self._tensors

    def keys(self):
        return self._tensors.keys()

    def peek(self, name: str) -> np.ndarray | None:
        """The tensor ``name`` (or ``None``), without marking it used."""
        return self._tensors.get(name)

    def take(self, name: str) -> np.ndarray | None:
        if name not in self._tensors:
            self._missing.append(name)
            return None
        self._used.add(name)
        return self._tensors[name]

    def rename(self, old: str, new: str) -> None:
        """Renames every tensor containing ``old`` (legacy spellings), unless the
        new name exists already."""
        for key in [k for k in self._tensors if old in k]:
            target = key.replace(old, new)
            if target not in self._tensors:
                self._tensors[target] = self._tensors.pop(key)

    def ignore(self, *patterns: str) -> None:
        """Marks tensors whose name matches any regular expression (``re.search``)
        as used (e.g. buffers)."""
        for key in self._tensors:
            if any(re.search(p, key) for p in patterns):
                self._used.add(key)

    def mismatch(self, problem: str) -> None:
        """Records a tensor whose shape does not fit (reported by ``finish``)."""
        self._mismatched.append(problem)

    def finish(self) -> None:
        unexpected = sorted(set(self._tensors) - self._used)
        problems = []
        if self._missing:
            problems.append(f"missing tensors: {', '.join(self._missing)}")
        if self._mismatched:
            problems.append(f"tensor shapes do not match config.json: "
                            f"{'; '.join(self._mismatched)}")
        if unexpected:
            problems.append(f"unexpected tensors: {', '.join(unexpected)}")
        if problems:
            raise ConversionError(f"{self.source}: " + "; ".join(problems))


def write_hf_folder(
    out_dir: str, config: Mapping[str, Any], tensors: Mapping[str, np.ndarray]
) -> str:
    """Writes ``config.json`` and ``model.safetensors`` into ``out_dir``."""
    from safetensors.numpy import save_file

    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "config.json"), "w", encoding="utf-8") as f:
        json.dump(dict(config), f, indent=2, sort_keys=True)
    # np.array(order="C") keeps 0-d scalars 0-d (np.ascontiguousarray would make them (1,)).
    arrays = {k: np.array(v, dtype=np.float32, order="C") for k, v in tensors.items()}
    save_file(arrays, os.path.join(out_dir, SAFE_SINGLE), metadata={"format": "pt"})
    return out_dir
