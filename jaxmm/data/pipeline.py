"""Input pipelines: deterministic, per-process, exactly resumable tf.data iterators.

Design (why not ``tf.train.Checkpoint(iterator=...)`` or a shuffle buffer):
the order of examples is a pure function of ``(seed, epoch, position)``. The
pipeline starts from an integer stream ``k = 0, 1, 2, ...`` (this process's
example counter), maps ``k`` to ``(epoch, position)`` and then to a record
index with a stateless random permutation (``tf.random.experimental.
index_shuffle``: a full-dataset shuffle with O(1) memory), reads those records
by index from ArrayRecord files, decodes and preprocesses them with stateless
random ops seeded by the example's global position. Therefore:

* the state is one integer (``next``), JSON-serialisable and tiny: restoring
  restarts the integer stream at ``next`` -- no repeated or skipped examples,
  no replay of the data read so far, no shuffle-buffer snapshot (TF iterator
  checkpoints store the whole buffer, are TF-version specific and cannot
  cover ``numpy_function`` ops such as tokenisation);
* parallel map/prefetch cannot change results (order and randomness do not
  depend on thread timing);
* processes shard each epoch's permutation into disjoint contiguous slices
  (the random-access equivalent of ``tfds.split_for_jax_process``), each
  process reading only its slice.

With ``repeat=True`` each process takes ``N // P`` examples per epoch (a new
permutation each epoch, so the few dropped examples differ). With
``repeat=False`` (evaluation) every example is yielded exactly once across
processes; each process yields the same number of batches, and the last ones
are padded with copies of a real example flagged by ``batch["example_mask"] == 0``
(float32 1/0, the key the trainer's tasks weight metrics with).
"""

from __future__ import annotations

import atexit
import math
import weakref
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import tensorflow as tf

from jaxmm.config import ConfigError
from jaxmm.data import preprocess
from jaxmm.data.sources import DataError, RecordSource, open_source

__all__ = ["DataIterator", "make_iterator", "MASK_KEY"]

MASK_KEY = "example_mask"
_INT64_MAX = np.iinfo(np.int64).max
_KNOWN_KEYS = {
    "name", "data_dir", "splits", "pp", "pp_train", "pp_eval", "prepare", "read_chunk",
    "num_parallel_calls", "prefetch", "description", "task", "pack", "nsp", "explode",
}
_PACK_KEYS = {"length", "window", "mode", "eos_id", "pad_id", "key", "labels_key"}

# Live iterators, closed at exit: a tf.data iterator still running a
# numpy_function while Python shuts down can deadlock the interpreter.
_LIVE: weakref.WeakSet = weakref.WeakSet()


@atexit.register
def _close_all() -> None:
    for it in list(_LIVE):
        it.close()


try:  # TF must never grab accelerators that JAX uses.
    tf.config.set_visible_devices([], "GPU")
except (RuntimeError, ValueError):  # pragma: no cover - already initialised
    pass


def _seed_pair(seed: int, salt: int) -> tuple[int, int]:
    """Two independent 31-bit keys from the user seed (for TF stateless ops)."""
    s = np.random.SeedSequence([int(seed) & 0xFFFFFFFF, salt]).generate_state(2)
    return int(s[0] >> 1), int(s[1] >> 1)


def _get(config: Any, key: str, default: Any = None) -> Any:
    if isinstance(config, Mapping):
        return config.get(key, default)
    return config[key] if key in config else default


def _flatten(example: Mapping[str, Any], prefix: str = "") -> dict[str, tf.Tensor]:
    """Nested feature dicts -> flat ``"parent/child"`` keys (tfds Sequence of dicts)."""
    out = {}
    for k, v in example.items():
        if isinstance(v, Mapping):
            out.update(_flatten(v, f"{prefix}{k}/"))
        else:
            out[f"{prefix}{k}"] = v
    return out


class DataIterator(Iterator):
    """Iterator of per-process batches (dicts of NumPy arrays) with exact state.

    ``get_state()`` returns a JSON-serialisable dict; ``set_state(state)``
    continues exactly after the last batch returned when the state was taken.
    """

    def __init__(self, source: RecordSource, pp: preprocess.Op, *, local_batch: int, seed: int,
                 shuffle: bool, repeat: bool, process_index: int, process_count: int,
                 read_chunk: int = 64, num_parallel_calls: int | None = None,
                 prefetch: int | None = None, pack: Mapping[str, Any] | None = None,
                 nsp: Mapping[str, Any] | None = None, tokenizer: Any = None,
                 explode: Mapping[str, Any] | None = None):
        n = source.num_examples
        if not 0 <= process_index < process_count:
            raise ConfigError(f"process_index {process_index} must be in [0, {process_count}).")
        if local_batch < 1:
            raise ConfigError(f"per-process batch size must be >= 1, got {local_batch}.")
        self.source = source
        self.local_batch = local_batch
        self.seed = int(seed)
        self.shuffle = bool(shuffle)
        self.repeat = bool(repeat)
        self.process_index = process_index
        self.process_count = process_count
        if repeat:
            self.per_epoch = n // process_count
            if self.per_epoch < local_batch:
                raise DataError(
                    f"Split {source.split!r} of {source.name!r} has {n} examples: too few for "
                    f"{process_count} process(es) x per-process batch {local_batch}."
                )
            self.num_batches = None
        else:
            self.per_epoch = math.ceil(n / process_count)
            self.num_batches = math.ceil(self.per_epoch / local_batch)
        if sum(map(bool, (pack, nsp, explode))) > 1:
            raise ConfigError("The data config has more than one of 'pack', 'nsp' and "
                              "'explode'; use one (NSP rows are already packed to their "
                              "length).")
        self._pack = (_check_pack(pack, repeat) or _check_nsp(nsp, tokenizer)
                      or _check_explode(explode))
        # how training rows are made from examples: None (one row each), "pack", "nsp"
        # or "explode"
        self._kind = "pack" if pack else "nsp" if nsp else "explode" if explode else None
        self._rows = None
        if pack:
            self._rows = _pack_rows(self._pack)
        elif nsp:
            self._rows = _nsp_rows(self._pack, tokenizer, _seed_pair(self.seed, 3),
                                   process_index)
        self._pp = pp
        self._read_chunk = read_chunk
        self._parallel = num_parallel_calls or tf.data.AUTOTUNE
        self._prefetch = prefetch or tf.data.AUTOTUNE
        self._shuffle_key = _seed_pair(self.seed, 1)
        self._aug_key = _seed_pair(self.seed, 2)
        self._next = 0
        self._skip = 0  # packed streams: rows of window ``_next`` already returned
        self._it: Iterator | None = None
        _LIVE.add(self)

    # -- the tf.data graph -------------------------------------------------
    def _indices(self, k: tf.Tensor) -> dict[str, tf.Tensor]:
        """Per-process counters ``k`` (1-D int64) -> record index, validity, global id."""
        n = self.source.num_examples
        epoch = k // self.per_epoch
        j = k % self.per_epoch
        pos = self.process_index * self.per_epoch + j
        valid = pos < n
        if not self.repeat:
            valid &= k < self.per_epoch
            epoch = tf.zeros_like(epoch)
        pos = tf.where(valid, pos, 0)
        if self.shuffle:
            # One permutation of [0, n) per epoch: seed (key0, key1, epoch).
            ones = tf.ones_like(k)
            seeds = tf.stack([ones * self._shuffle_key[0], ones * self._shuffle_key[1], epoch],
                             axis=-1)
            index = tf.raw_ops.RandomIndexShuffle(index=pos, seed=seeds,
                                                  max_index=tf.constant(n - 1, tf.int64))
        else:
            index = pos
        return {"k": k, "index": index, "valid": valid, "uid": epoch * n + pos}

    def _exploded(self, ds: tf.data.Dataset) -> tf.data.Dataset:
        """Each example -> its first ``example[count]`` rows of ``keys`` (e.g. all of a
        QA example's doc-stride windows), the rows numbered like packed ones."""
        count, keys = self._pack["count"], self._pack["keys"]

        def rows(example, meta):
            n = tf.cast(preprocess.require(example, count, "explode"), tf.int32)
            if not self.repeat:
                n = tf.where(meta[MASK_KEY], n, 0)  # padding examples make no rows
            values = {k: preprocess.require(example, k, "explode")[:n] for k in keys}
            n64 = tf.cast(n, tf.int64)
            return tf.data.Dataset.from_tensor_slices((values, {
                "_k": tf.fill([n], meta["_k"]), "_row": tf.range(n64),
                MASK_KEY: tf.fill([n], meta[MASK_KEY])}))

        return ds.flat_map(rows)

    def _packed(self, ds: tf.data.Dataset, start: int, skip: int) -> tf.data.Dataset:
        """Examples -> rows (exploded, packed or NSP pairs), skipping the first ``skip``
        rows of the example or window that starts at ``start`` (a restored stream)."""
        ds = self._exploded(ds) if self._kind == "explode" else self._windowed(ds)
        if skip:
            ds = ds.filter(lambda ex, meta: tf.logical_not(
                (meta["_k"] == start) & (meta["_row"] < skip)))
        return ds

    def _windowed(self, ds: tf.data.Dataset) -> tf.data.Dataset:
        """Windows of ``window`` examples -> rows (packed sequences or NSP pairs): the rows
        of the window that starts at example ``k`` carry ``_k = k`` and their index
        ``_row``."""
        keys, window, names, length, fn = self._rows
        op, rank = (self._kind, 0 if self._kind == "nsp" else 1)

        def only_keys(example, meta):
            values = []
            for key in keys:
                value = preprocess.require(example, key, op)
                if value.shape.rank != rank:
                    raise ConfigError(
                        f"{op}: {key!r} must be one {'1-D sequence' if rank else 'text'} per "
                        f"example{' (use tokenize(..., pad=False))' if rank else ''}; got "
                        f"rank {value.shape.rank}.")
                values.append(tf.cast(value, tf.int32) if rank else value)
            return tuple(values), meta["_k"]

        def run(k, *flat):
            # per key: its values and row lengths -> that key's list of per-example arrays
            per_key = [np.split(v, np.cumsum(n)[:-1]) for v, n in zip(flat[::2], flat[1::2])]
            out = fn(per_key, int(k))
            return [out[n] for n in names]

        def window_rows(values, ks):
            flat = []
            for v in values:
                if not isinstance(v, tf.RaggedTensor):
                    v = tf.RaggedTensor.from_tensor(v[:, None])
                flat += [v.flat_values, v.row_lengths()]
            rows = tf.numpy_function(run, [ks[0], *flat], [tf.int32] * len(names),
                                     stateful=False)
            rows = [tf.ensure_shape(r, [None] + ([length] if r_name != "next_sentence_label"
                                                 else [])) for r, r_name in zip(rows, names)]
            n = tf.shape(rows[0])[0]
            meta = {"_k": tf.fill([n], ks[0]), "_row": tf.range(n, dtype=tf.int64),
                    MASK_KEY: tf.ones([n], tf.bool)}
            return dict(zip(names, rows)), meta

        if not self.repeat:  # evaluation: padding examples make no rows
            ds = ds.filter(lambda example, meta: meta[MASK_KEY])
        ds = ds.map(only_keys).ragged_batch(window, drop_remainder=self.repeat)
        ds = ds.map(window_rows, num_parallel_calls=self._parallel, deterministic=True)
        return ds.unbatch()

    def _preprocessed(self, ds: tf.data.Dataset) -> tf.data.Dataset:
        """Records -> ``(example, meta)``: decoded and preprocessed, per example except for
        the batched ops, which run once per chunk of ``read_chunk`` examples (exactly the
        same results; see :mod:`jaxmm.data.preprocess`)."""
        aug_key = tf.constant(self._aug_key[0], tf.int64)
        stages = self._pp.stages if isinstance(self._pp, preprocess.Chain) else [None]

        def run(example, seed, stage):
            if stage is None:  # a plain ``op(example, seed)`` callable
                return self._pp(example, seed)
            return self._pp.run(example, seed, stage[0], stage[1])

        def finish(example, meta):
            # Batch contract: integer features are int32 (tfds decodes ints as int64).
            example = {k: tf.cast(v, tf.int32) if v.dtype == tf.int64 else v
                       for k, v in example.items()}
            return example, {k: v for k, v in meta.items() if k != "_seed"}

        def first(meta):
            example = _flatten(self.source.decode(meta["record"]))
            seed = tf.stack([aug_key, meta["uid"] + self._aug_key[1]])
            out = run(example, seed, stages[0]), {"_k": meta["k"], MASK_KEY: meta["valid"],
                                                  "_seed": seed}
            return finish(*out) if len(stages) == 1 else out

        ds = ds.map(first, num_parallel_calls=self._parallel, deterministic=True)
        for (_, _, batched), stage in zip(stages[:-1], stages[1:]):
            ds = ds.ragged_batch(self._read_chunk)
            ds = ds.map(lambda ex, meta, fn=batched: (fn(ex), meta),
                        num_parallel_calls=self._parallel, deterministic=True)

            def after(example, meta, stage=stage):
                # Unbatching a ragged chunk leaves ragged tensors where examples' shapes
                # differed; each one is dense within its example.
                example = {k: v.to_tensor() if isinstance(v, tf.RaggedTensor) else v
                           for k, v in example.items()}
                return run(example, meta["_seed"], stage), meta

            ds = ds.unbatch().map(after, num_parallel_calls=self._parallel, deterministic=True)

        if len(stages) > 1:
            ds = ds.map(finish, num_parallel_calls=self._parallel, deterministic=True)
        return ds

    def _build(self, start: int, skip: int = 0) -> tf.data.Dataset:
        if self.repeat:
            stop = _INT64_MAX
        else:
            stop = self.num_batches * self.local_batch
        ds = tf.data.Dataset.range(start, stop).batch(self._read_chunk)
        ds = ds.map(self._indices)

        def read(meta):
            records = tf.numpy_function(self.source.read, [meta["index"]], tf.string,
                                        stateful=False)
            records.set_shape(meta["index"].shape)
            return {**meta, "record": records}

        ds = ds.map(read, num_parallel_calls=self._parallel, deterministic=True)
        ds = ds.unbatch()
        ds = self._preprocessed(ds)
        if self._pack:
            ds = self._packed(ds, start, skip)
        ds = ds.batch(self.local_batch, drop_remainder=True)
        ds = ds.prefetch(self._prefetch)
        options = tf.data.Options()
        options.deterministic = True
        return ds.with_options(options)

    def _traced(self, start: int, skip: int = 0) -> tf.data.Dataset:
        """:meth:`_build`, with a configuration error raised while tf.data traces an op
        re-raised as itself (not wrapped in TF's StagingError with a graph traceback)."""
        try:
            return self._build(start, skip)
        except Exception as e:
            cause = e
            while cause is not None and not isinstance(cause, (ConfigError, DataError)):
                cause = cause.__context__
            if cause is None:
                raise
            raise cause from None

    # -- iteration ---------------------------------------------------------
    def __iter__(self) -> DataIterator:
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        if self._it is None:
            if self.num_batches is not None and self._next >= self.num_batches * self.local_batch:
                raise StopIteration
            self._it = iter(self._traced(self._next, self._skip).as_numpy_iterator())
        try:
            example, meta = next(self._it)
        except StopIteration:
            self._it = None
            raise
        if self._pack:  # resume inside the window of the last row
            self._next, self._skip = int(meta["_k"][-1]), int(meta["_row"][-1]) + 1
        else:
            self._next = int(meta["_k"][-1]) + 1
        if not self.repeat:
            example[MASK_KEY] = meta[MASK_KEY].astype(np.float32)
        return example

    def close(self) -> None:
        """Stops the background tf.data work (the position is kept)."""
        self._it = None

    def __enter__(self) -> DataIterator:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def element_spec(self) -> dict[str, tf.TensorSpec]:
        return self._traced(0).element_spec[0]

    # -- state -------------------------------------------------------------
    def _identity(self) -> dict[str, Any]:
        return {"dataset": self.source.name, "split": self.source.split,
                "num_examples": self.source.num_examples, "seed": self.seed,
                "shuffle": self.shuffle, "repeat": self.repeat,
                "process_index": self.process_index, "process_count": self.process_count,
                "pack": dict(self._pack) if self._pack else None}

    def get_state(self) -> dict[str, Any]:
        """``{"next": examples consumed by this process, ...identity}`` (JSON-safe).

        For packed streams ``next`` is the first example of the current window
        and ``skip`` the number of its rows already returned.
        """
        return {"next": self._next, "skip": self._skip, **self._identity()}

    def set_state(self, state: Mapping[str, Any]) -> None:
        """Continues from ``state`` (taken from an iterator with the same settings)."""
        mine = self._identity()
        diff = {k: (state.get(k), v) for k, v in mine.items() if state.get(k) != v}
        if diff:
            detail = ", ".join(f"{k}: saved {a!r} vs now {b!r}" for k, (a, b) in diff.items())
            raise DataError(f"Cannot restore the data iterator: settings differ ({detail}). "
                            "Resume with the same data config, seed and process count.")
        self._next = int(state["next"])
        self._skip = int(state.get("skip", 0))
        self._it = None

    @property
    def position(self) -> int:
        return self._next


def _check_pack(pack: Any, repeat: bool) -> dict[str, Any] | None:
    if not pack:
        return None
    pack = dict(pack)
    unknown = set(pack) - _PACK_KEYS
    if unknown:
        raise ConfigError(f"Unknown pack option(s) {sorted(unknown)}; valid: "
                          f"{sorted(_PACK_KEYS)}.")
    if "length" not in pack:
        raise ConfigError("pack needs 'length' (tokens per packed row).")
    if not repeat:
        raise ConfigError("Packing is for training streams (repeat=True); evaluate unpacked "
                          "so every example is scored exactly once.")
    out = {"length": int(pack["length"]), "window": int(pack.get("window", 64)),
           "mode": pack.get("mode", "concat"), "eos_id": pack.get("eos_id"),
           "pad_id": int(pack.get("pad_id", 0)), "key": pack.get("key", "input_ids")}
    if pack.get("labels_key"):  # (absent otherwise: the saved states of older runs match)
        out["labels_key"] = pack["labels_key"]
    if out["mode"] not in ("concat", "segments"):
        raise ConfigError(f"pack mode {out['mode']!r}: use 'concat' or 'segments'.")
    return out


def _pack_rows(p: Mapping[str, Any]):
    """(keys, window, row names, length, fn) of sequence packing (jaxmm.data.packing)."""
    from jaxmm.data.packing import pack_sequences

    names = ["input_ids", "attention_mask", "labels"]
    if p["mode"] == "segments":
        names += ["segment_ids", "positions"]
    keys = (p["key"],) + ((p["labels_key"],) if p.get("labels_key") else ())

    def fn(per_key, k):
        return pack_sequences(per_key[0], p["length"], p["mode"], p["eos_id"], p["pad_id"],
                              labels=per_key[1] if len(keys) > 1 else None)

    return keys, p["window"], names, p["length"], fn


def _check_explode(explode: Any) -> dict[str, Any] | None:
    if not explode:
        return None
    explode = dict(explode)
    unknown = set(explode) - {"count", "keys"}
    if unknown or not explode.get("count") or not explode.get("keys"):
        raise ConfigError(f"explode needs 'count' (the key holding each example's number of "
                          f"rows) and 'keys' (the keys to split into rows); got "
                          f"{sorted(explode)}.")
    return {"count": str(explode["count"]), "keys": [str(k) for k in explode["keys"]]}


_NSP_KEYS = {"length", "window", "key", "nsp_probability", "short_seq_prob"}


def _check_nsp(nsp: Any, tokenizer: Any) -> dict[str, Any] | None:
    if not nsp:
        return None
    nsp = dict(nsp)
    unknown = set(nsp) - _NSP_KEYS
    if unknown:
        raise ConfigError(f"Unknown nsp option(s) {sorted(unknown)}; valid: {sorted(_NSP_KEYS)}.")
    if "length" not in nsp:
        raise ConfigError("nsp needs 'length' (tokens per [CLS] A [SEP] B [SEP] row).")
    if tokenizer is None:
        raise ConfigError("nsp builds sentence pairs with the run's tokenizer; set "
                          "config.tokenizer (a BERT WordPiece tokenizer).")
    from jaxmm.data.nsp import special_ids

    special_ids(tokenizer)  # a tokenizer without [CLS]/[SEP] fails here, in one line
    out = {"length": int(nsp["length"]), "window": int(nsp.get("window", 32)),
           "key": nsp.get("key", "text"),
           "nsp_probability": float(nsp.get("nsp_probability", 0.5)),
           "short_seq_prob": float(nsp.get("short_seq_prob", 0.1))}
    if not 0.0 <= out["nsp_probability"] <= 1.0 or not 0.0 <= out["short_seq_prob"] <= 1.0:
        raise ConfigError(f"nsp probabilities must be in [0, 1]; got {out}.")
    if out["window"] < 2:
        raise ConfigError("nsp window must be >= 2 documents (random next sentences come "
                          "from another document of the window).")
    return out


def _nsp_rows(p: Mapping[str, Any], tokenizer: Any, key: tuple[int, int], process: int):
    """(key, window, row names, length, fn) of NSP sentence pairs (jaxmm.data.nsp); the
    window starting at example ``k`` draws from ``rng(key, process, k)``."""
    from jaxmm.data.nsp import NAMES, sentence_pairs

    def fn(per_key, k):
        rng = np.random.default_rng([key[0], key[1], process, k])
        texts = [d.decode("utf-8") if isinstance(d, bytes) else str(d)
                 for doc in per_key[0] for d in np.asarray(doc).reshape(-1)]
        return sentence_pairs(texts, tokenizer, p["length"], rng, p["nsp_probability"],
                              p["short_seq_prob"])

    return (p["key"],), p["window"], list(NAMES), p["length"], fn


def _pp_spec(data_config: Any, split: str) -> Any:
    specific = _get(data_config, "pp_train" if split == "train" else "pp_eval")
    return specific if specific is not None else _get(data_config, "pp", "")


def make_iterator(
    data_config: Any,
    *,
    split: str,
    batch_size: int,
    seed: int = 0,
    shuffle: bool = True,
    repeat: bool = True,
    process_index: int | None = None,
    process_count: int | None = None,
    tokenizer: Any = None,
) -> DataIterator:
    """Per-process batch iterator for ``split`` of the dataset ``data_config`` describes.

    Args:
      data_config: ConfigDict/mapping with ``name`` (tfds ``dataset[/config]``),
        ``data_dir``, preprocessing ``pp`` (or ``pp_train``/``pp_eval``; see
        :mod:`jaxmm.data.preprocess`), optional ``splits`` (logical name ->
        tfds split, e.g. ``{"validation": "validation_matched"}``), ``prepare``
        (command shown when the data is missing), ``read_chunk``,
        ``num_parallel_calls``, ``prefetch``, ``pack`` (``{"length", "window",
        "mode", "eos_id", "pad_id", "key", "labels_key"}``: pack windows of examples
        into rows, with the examples' own labels when ``labels_key`` is set, see
        :mod:`jaxmm.data.packing`; training streams only), or ``nsp`` (``{"length",
        "window", "key", "nsp_probability", "short_seq_prob"}``: BERT sentence pairs
        from windows of documents, see :mod:`jaxmm.data.nsp`; needs ``tokenizer``), or
        ``explode`` (``{"count", "keys"}``: each training example becomes its first
        ``example[count]`` rows of ``keys``, e.g. all doc-stride windows of a QA example).
      split: logical split ("train", "validation", "test", or a tfds split).
        ``pp_train`` applies to "train", ``pp_eval`` to the others.
      batch_size: GLOBAL batch size; each process yields
        ``batch_size // process_count`` examples per batch.
      seed: drives the shuffle order and random augmentation.
      shuffle / repeat: see the module docstring.
      process_index / process_count: default to JAX's.
      tokenizer: a ``jaxmm.data.tokenizers.Tokenizer`` for text ops.
    """
    keys = list(data_config.keys())
    unknown = [k for k in keys if k not in _KNOWN_KEYS]
    if unknown:
        from jaxmm.config import nearest

        def named(key: str) -> str:
            close = nearest(key, _KNOWN_KEYS)
            return f"{key!r} (did you mean {', '.join(map(repr, close))}?)" if close else repr(key)

        hints = "; ".join(named(k) for k in unknown)
        raise ConfigError(f"Unknown data config key(s): {hints}. Valid: {sorted(_KNOWN_KEYS)}.")
    if not _get(data_config, "name"):
        raise ConfigError("The data config needs 'name' (a tfds dataset name).")
    if process_index is None or process_count is None:
        import jax

        process_index = jax.process_index() if process_index is None else process_index
        process_count = jax.process_count() if process_count is None else process_count
    if batch_size % process_count:
        raise ConfigError(f"Global batch_size {batch_size} is not divisible by the "
                          f"{process_count} processes.")
    splits = _get(data_config, "splits") or {}
    tfds_split = splits.get(split, split) if isinstance(splits, Mapping) or hasattr(
        splits, "get") else split
    source = open_source(_get(data_config, "name"), tfds_split, _get(data_config, "data_dir"),
                         _get(data_config, "prepare"))
    pp = preprocess.build(_pp_spec(data_config, split), tokenizer=tokenizer)
    return DataIterator(
        source, pp, local_batch=batch_size // process_count, seed=seed, shuffle=shuffle,
        repeat=repeat, process_index=process_index, process_count=process_count,
        read_chunk=int(_get(data_config, "read_chunk", 64) or 64),
        num_parallel_calls=_get(data_config, "num_parallel_calls"),
        prefetch=_get(data_config, "prefetch"),
        # packing and exploding shape training rows; other splits are evaluated as they
        # are (pp_eval)
        pack=_get(data_config, "pack") if split == "train" else None,
        explode=_get(data_config, "explode") if split == "train" else None,
        nsp=_get(data_config, "nsp"), tokenizer=tokenizer,
    )
