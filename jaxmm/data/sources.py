"""Random-access sources: one split of a prepared tfds dataset, as serialized records.

The pipeline reads records by index (so it can shuffle globally, shard
disjointly across processes and resume at an exact position) and decodes them
inside tf.data with the dataset's own tfds feature decoders. Random access
needs the ArrayRecord file format; every builder in jaxmm writes it, and a
catalog dataset prepared as TFRecord is refused with the command that converts it.
A ``data_dir`` may be a local folder or a ``gs://`` URL (:mod:`jaxmm.storage`; tfds
reads it through etils.epath).
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from jaxmm import storage
from jaxmm.errors import DataError, did_you_mean

__all__ = ["DataError", "RecordSource", "find_prepared", "open_source"]


def _version_key(v: str) -> tuple:
    try:
        return tuple(int(x) for x in v.split("."))
    except ValueError:
        return (-1,)


def find_prepared(data_dir: str, name: str) -> str | None:
    """Folder ``data_dir/name[/config]/<latest version>`` holding ``dataset_info.json``."""
    base = os.path.join(data_dir, *name.split("/"))
    if not storage.is_dir(base):
        return None
    versions = [v for v in storage.listdir(base)
                if storage.exists(os.path.join(base, v, "dataset_info.json"))]
    if not versions:
        return None
    return os.path.join(base, max(versions, key=_version_key))


class RecordSource:
    """Serialized examples of one split, by index, plus their TF decoder.

    Attributes:
      num_examples: number of records in the split.
      features: the tfds ``FeaturesDict`` (``decode`` uses it).
    """

    def __init__(self, data_source: Any, features: Any, name: str, split: str):
        self._source = data_source
        self.features = features
        self.name = name
        self.split = split
        self.num_examples = len(data_source)
        self._batched = True
        if self.num_examples == 0:
            raise DataError(f"Split {split!r} of dataset {name!r} is empty.")

    def read(self, indices: np.ndarray) -> np.ndarray:
        """Serialized records at ``indices`` -> object array of bytes."""
        keys = [int(i) for i in indices]
        if self._batched:
            try:
                items = self._source.__getitems__(keys)
            except TypeError:
                # tfds.testing.mock_data's source has no working batched read.
                self._batched = False
        if not self._batched:
            items = [self._source[k] for k in keys]
        out = np.empty(len(items), dtype=object)
        out[:] = list(items)
        return out

    def decode(self, serialized: tf.Tensor) -> dict[str, tf.Tensor]:
        """One serialized record -> dict of tensors (inside tf.data)."""
        return self.features.deserialize_example(serialized)


def _missing(name: str, data_dir: str | None, prepare: str | None, what: str) -> DataError:
    command = prepare or f"tfds build {name.split('/')[0]} --data_dir {{data_dir}} " \
        "--file_format array_record"
    if data_dir is None:
        return DataError(f"{what}, and no data_dir is set.",
                         hint=f"Prepare it with: {command.format(data_dir='DIR')} -- then pass "
                         "--config.data.data_dir=DIR (the catalog's datasets also read "
                         "JAXMM_DATA_DIR=DIR).")
    held = prepared_names(data_dir) if storage.is_dir(data_dir) else []
    if held:
        what += (f" (it holds {', '.join(held)}.{did_you_mean(name, held)} Or prepare it with: "
                 f"{command.format(data_dir=data_dir)})")
        return DataError(what + ".")
    return DataError(f"{what}.", hint=f"Prepare it with: {command.format(data_dir=data_dir)}")


def prepared_names(data_dir: str) -> list[str]:
    """The datasets prepared in ``data_dir`` (``name`` or ``name/config``), sorted."""
    if storage.is_url(data_dir):
        return _prepared_names_at_url(data_dir)
    names = set()
    for root, dirs, files in os.walk(data_dir):
        depth = os.path.relpath(root, data_dir).count(os.sep)
        if "dataset_info.json" in files and depth >= 1:
            names.add("/".join(os.path.relpath(root, data_dir).split(os.sep)[:-1]))
            dirs[:] = []
        elif depth >= 2:
            dirs[:] = []
    return sorted(names)


def _prepared_names_at_url(data_dir: str) -> list[str]:
    """:func:`prepared_names` of a bucket (no os.walk there): ``name/<version>/`` or
    ``name/config/<version>/`` holding ``dataset_info.json``."""
    def prepared(*parts: str) -> bool:
        return storage.exists(os.path.join(data_dir, *parts, "dataset_info.json"))

    names = set()
    for name in storage.listdir(data_dir):
        for sub in storage.listdir(os.path.join(data_dir, name)):
            if prepared(name, sub):
                names.add(name)
            elif any(prepared(name, sub, v)
                     for v in storage.listdir(os.path.join(data_dir, name, sub))):
                names.add(f"{name}/{sub}")
    return sorted(names)


def open_source(name: str, split: str, data_dir: str | None = None,
                prepare: str | None = None) -> RecordSource:
    """Opens ``split`` of the prepared dataset ``name`` (``"dataset[/config]"``).

    Never downloads. ``prepare`` is the command shown when the data is missing
    (``{data_dir}`` is filled in).
    """
    raw = tfds.decode.DeserializeMethod.RAW_BYTES
    if data_dir is not None and not storage.is_dir(data_dir):
        raise _missing(name, data_dir, prepare, f"Data dir {data_dir!r} does not exist")
    folder = find_prepared(data_dir, name) if data_dir else None
    if folder is None and data_dir is not None:
        # Never let tfds create folders or look elsewhere for a dataset that is not there.
        raise _missing(name, data_dir, prepare,
                       f"Dataset {name!r} is not prepared in {data_dir!r}")
    try:
        if folder is not None:
            builder = tfds.builder_from_directory(folder)
            file_format = builder.info.file_format
            if file_format is not None and file_format != tfds.core.FileFormat.ARRAY_RECORD:
                raise DataError(
                    f"Dataset {name!r} at {folder} is stored as {file_format.value}; the "
                    "jaxmm pipeline needs random access (ArrayRecord). Convert it with:\n  "
                    f"tfds convert_format --dataset_version_dir {folder} "
                    "--out_file_format array_record"
                )
            if split not in builder.info.splits and "[" not in split:
                raise DataError(f"Dataset {name!r} has no split {split!r}; it has "
                                f"{sorted(builder.info.splits)}.")
            source = builder.as_data_source(split=split, deserialize_method=raw)
            features = builder.info.features
        else:
            source = tfds.data_source(name, split=split, data_dir=data_dir, download=False,
                                      deserialize_method=raw)
            features = source.dataset_info.features
    except DataError:
        raise
    except (tfds.core.registered.DatasetNotFoundError, FileNotFoundError, AssertionError,
            json.JSONDecodeError) as e:
        where = f" in {data_dir!r}" if data_dir else ""
        raise _missing(name, data_dir, prepare,
                       f"Dataset {name!r} is not prepared{where} ({type(e).__name__}: "
                       f"{str(e).splitlines()[0] if str(e) else ''})") from None
    except (ValueError, NotImplementedError) as e:
        if "format" in str(e).lower() or "array_record" in str(e).lower():
            raise DataError(
                f"Dataset {name!r} is not stored as ArrayRecord ({e}). Rebuild it with "
                "--file_format array_record or convert it with 'tfds convert_format'."
            ) from None
        raise
    return RecordSource(source, features, name, split)
