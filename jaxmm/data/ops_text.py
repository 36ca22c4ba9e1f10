"""Text, label and bookkeeping ops (TF, one example at a time).

Tokenisation goes through the project ``Tokenizer`` interface
(``encode(texts, pairs=None, max_length=..., ...) -> dict of int32 arrays``,
see :mod:`jaxmm.data.tokenizers`) inside ``tf.numpy_function``; the outputs
are padded/truncated to exactly ``max_length``. The tokenising ops (``tokenize``,
``tokenize_words``) also have a batched form, which the input pipeline uses to
tokenise a chunk of examples in one tokenizer call (:mod:`jaxmm.data.preprocess`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import tensorflow as tf

from jaxmm.config import ConfigError
from jaxmm.data.preprocess import register, require, with_batched

IGNORE_INDEX = -100


def _texts(arr: np.ndarray) -> list[str]:
    return [t.decode("utf-8") if isinstance(t, bytes) else str(t) for t in arr.reshape(-1)]


def _fit(a: np.ndarray, length: int, value: int) -> np.ndarray:
    """Pads/truncates the last axis of a 2-D array to ``length``."""
    a = np.asarray(a, np.int32)[:, :length]
    if a.shape[1] < length:  # (np.pad costs several times the tokenisation itself)
        out = np.full((a.shape[0], length), value, np.int32)
        out[:, :a.shape[1]] = a
        a = out
    return a


def _encode(tokenizer: Any, texts: list[str], pairs: list[str] | None, max_length: int,
            add_special_tokens: bool) -> dict[str, np.ndarray]:
    enc = tokenizer.encode(texts, pairs=pairs, max_length=max_length, padding=True,
                           truncation=True, add_special_tokens=add_special_tokens)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    out = {"input_ids": _fit(enc["input_ids"], max_length, pad),
           "attention_mask": _fit(enc["attention_mask"], max_length, 0)}
    if enc.get("token_type_ids") is not None:
        out["token_type_ids"] = _fit(enc["token_type_ids"], max_length, 0)
    return out


@register("tokenize")
def tokenize(max_length: int, key: str = "text", pair_key: str | None = None,
             prefix: str = "", add_special_tokens: bool = True, pad: bool = True,
             tokenizer: Any = None):
    """Tokenises ``ex[key]`` (scalar or 1-D string tensor; optional ``pair_key``).

    Writes ``{prefix}input_ids``, ``{prefix}attention_mask`` (and
    ``{prefix}token_type_ids`` when the tokenizer makes them), int32 of shape
    ``(max_length,)`` for a scalar text or ``(N, max_length)`` for N texts.
    With ``pad=False`` (scalar texts, e.g. before packing) only
    ``{prefix}input_ids`` is written, unpadded, at most ``max_length`` long.
    """
    if not pad:
        return _tokenize_unpadded(max_length, key, prefix, add_special_tokens, tokenizer)
    probe = tokenizer.encode(["a"], pairs=["a"] if pair_key else None, max_length=4)
    names = ["input_ids", "attention_mask"]
    if probe.get("token_type_ids") is not None:
        names.append("token_type_ids")

    def run(texts, pairs):
        out = _encode(tokenizer, _texts(texts), _texts(pairs) if pair_key else None,
                      max_length, add_special_tokens)
        return [out[n] for n in names]

    def encode(text, pair):
        """Any layout of texts (dense or ragged) -> the outputs, each with a last axis of
        ``max_length`` appended to the texts' layout."""
        flat, restore = _flat_texts(text)
        flat_pair = _flat_texts(pair)[0] if pair_key else tf.constant([""])
        results = tf.numpy_function(run, [flat, flat_pair], [tf.int32] * len(names),
                                    stateful=False)
        return {prefix + name: restore(r, max_length) for name, r in zip(names, results)}

    def op(ex, seed):
        text = require(ex, key, "tokenize")
        pair = require(ex, pair_key, "tokenize") if pair_key else None
        return {**ex, **encode(text, pair)}

    def batched(ex):
        return {**ex, **encode(require(ex, key, "tokenize"),
                               require(ex, pair_key, "tokenize") if pair_key else None)}

    return with_batched(op, batched)


def _flat_texts(text: tf.Tensor | tf.RaggedTensor):
    """Texts in any layout (a dense tensor of any rank, or ragged ``(N, None)``) -> the
    1-D strings and ``restore(rows (M, L), L)`` giving the rows that layout plus ``L``."""
    if isinstance(text, tf.RaggedTensor):
        splits = text.row_splits

        def restore_ragged(rows, length):
            rows = tf.ensure_shape(rows, [None, length])
            return tf.RaggedTensor.from_row_splits(rows, splits, validate=False)

        return text.flat_values, restore_ragged
    shape = tf.shape(text)

    def restore(rows, length):
        out = tf.reshape(rows, tf.concat([shape, [length]], 0))
        out.set_shape(text.shape.concatenate([length]))
        return out

    return tf.reshape(text, [-1]), restore


def _tokenize_unpadded(max_length, key, prefix, add_special_tokens, tokenizer):
    def run(texts):
        enc = tokenizer.encode(_texts(texts), max_length=max_length, padding=False,
                               truncation=True, add_special_tokens=add_special_tokens)
        # (a tokenizer may pad a batch even with padding=False: keep the unmasked tokens)
        rows = [np.asarray(r, np.int32)[np.asarray(m) > 0][:max_length]
                for r, m in zip(enc["input_ids"], enc["attention_mask"])]
        return (np.concatenate(rows) if rows else np.zeros([0], np.int32),
                np.asarray([len(r) for r in rows], np.int64))

    def encode(texts):
        values, lengths = tf.numpy_function(run, [texts], [tf.int32, tf.int64], stateful=False)
        values.set_shape([None])
        lengths.set_shape([None])
        return tf.RaggedTensor.from_row_lengths(values, lengths, validate=False)

    def op(ex, seed):
        text = require(ex, key, "tokenize")
        if text.shape.rank != 0:
            raise ConfigError("tokenize(pad=False) takes one text per example; got texts of "
                              f"shape {text.shape}.")
        return {**ex, prefix + "input_ids": encode(tf.reshape(text, [1]))[0]}

    def batched(ex):
        text = require(ex, key, "tokenize")
        if text.shape.rank != 1 or isinstance(text, tf.RaggedTensor):
            raise ConfigError("tokenize(pad=False) takes one text per example; got texts of "
                              f"shape {text.shape} per chunk.")
        return {**ex, prefix + "input_ids": encode(text)}

    return with_batched(op, batched)


@register("mlm_mask")
def mlm_mask(mlm_probability: float = 0.15, key: str = "input_ids",
             mask_key: str = "attention_mask", tokenizer: Any = None, **kwargs: Any):
    """BERT masked-LM corruption on the host: a thin op over :func:`jaxmm.losses.mlm_mask`.

    Replaces ``ex[key]`` with the corrupted ids and writes ``labels`` (original
    ids where selected, -100 elsewhere). Special tokens of ``tokenizer`` and
    padding are never selected. Deterministic given the example's seed. For
    large batches, masking on device in the train step is faster.
    """
    import jax

    from jaxmm.losses import mlm_mask as mask_fn

    special = [t for t in (tokenizer.cls_token_id, tokenizer.sep_token_id,
                           tokenizer.pad_token_id, tokenizer.bos_token_id,
                           tokenizer.eos_token_id) if t is not None]
    cpu = jax.devices("cpu")[0]

    @jax.jit
    def corrupt(seed, ids, mask):
        rng = jax.random.wrap_key_data(seed, impl="threefry2x32")  # the op's [2] seed
        return mask_fn(rng, ids, mask_token_id=tokenizer.mask_token_id,
                       vocab_size=tokenizer.vocab_size, special_ids=special,
                       attention_mask=mask, mlm_probability=mlm_probability, **kwargs)

    def run(seed, ids, mask):
        with jax.default_device(cpu):
            out, labels = corrupt(np.asarray(seed, np.uint32), ids, mask)
        return np.asarray(out, np.int32), np.asarray(labels, np.int32)

    def op(ex, seed):
        ids = tf.cast(require(ex, key, "mlm_mask"), tf.int32)
        mask = tf.cast(require(ex, mask_key, "mlm_mask"), tf.int32)
        out, labels = tf.numpy_function(run, [tf.cast(seed, tf.int64), ids, mask],
                                        [tf.int32, tf.int32], stateful=False)
        out.set_shape(ids.shape)
        labels.set_shape(ids.shape)
        return {**ex, key: out, "labels": labels}

    return op


@register("choose")
def choose(keys: str | Sequence[str], out_keys: str | Sequence[str] | None = None):
    """Picks one random element along axis 0 (e.g. one of 5 captions).

    With several ``keys`` (e.g. ``('questions', 'answers')``) the same index is
    used for all of them.
    """
    keys = (keys,) if isinstance(keys, str) else tuple(keys)
    outs = keys if out_keys is None else (
        (out_keys,) if isinstance(out_keys, str) else tuple(out_keys))
    if len(outs) != len(keys):
        raise ValueError(f"choose: {len(keys)} keys but {len(outs)} out_keys.")

    def op(ex, seed):
        values = [require(ex, k, "choose") for k in keys]
        i = tf.random.stateless_uniform([], seed, 0, tf.shape(values[0])[0], dtype=tf.int32)
        return {**ex, **{o: tf.gather(v, i) for o, v in zip(outs, values)}}

    return op


@register("lowercase")
def lowercase(key: str = "text"):
    """Lower-cases a string tensor (UTF-8 aware)."""

    def op(ex, seed):
        return {**ex, key: tf.strings.lower(require(ex, key, "lowercase"), encoding="utf-8")}

    return op


@register("prepend_text")
def prepend_text(text: str, key: str = "text"):
    """Puts ``text`` before the string(s) ``ex[key]`` (T5's task prefixes, such as
    ``"summarize: "``)."""

    def op(ex, seed):
        return {**ex, key: tf.strings.join([tf.constant(text), require(ex, key, "prepend_text")])}

    return op


@register("swap_words")
def swap_words(words: Sequence[str], key: str = "text", out_key: str = "foil_text"):
    """A *foil* of ``ex[key]`` in ``out_key``: every whole-word occurrence of one of
    ``words`` (a plural ``-s`` included) becomes another word of the list, by one random
    non-zero rotation per example (``words[i] -> words[(i + r) % n]``), so the foil states
    something false about the same image: "a red circle left of a blue square" becomes
    "a red diamond left of a blue circle". Texts without any of the words come back
    unchanged (the contrastive task ignores such foils). NegCLIP-style hard negatives
    (Yuksekgonul et al., 2023) for ``task.hard_negatives``.
    """
    words = tuple(str(w) for w in ((words,) if isinstance(words, str) else words))
    if len(words) < 2 or len(set(words)) != len(words):
        raise ConfigError(f"swap_words needs two or more different words, got {words}.")
    if any(not w or not w.replace(" ", "").isalnum() for w in words):
        raise ConfigError(f"swap_words: words must be letters/digits, got {words}.")
    n = len(words)
    # Two passes through placeholders (control characters no caption contains), so a
    # word already swapped is never swapped again.
    marks = [f"\x01{i}\x02" for i in range(n)]

    def op(ex, seed):
        text = require(ex, key, "swap_words")
        r = tf.random.stateless_uniform([], seed, 1, n, dtype=tf.int32)
        for i, w in enumerate(words):
            text = tf.strings.regex_replace(text, rf"\b{w}(s?)\b", marks[i] + r"\1")
        for i in range(n):
            target = tf.gather(tf.constant(words), (i + r) % n)
            text = tf.strings.regex_replace(text, marks[i], target)
        return {**ex, out_key: text}

    return op


@register("select")
def select(key: str, index: int = 0, out_key: str | None = None):
    """Takes element ``index`` along axis 0 of ``ex[key]``."""

    def op(ex, seed):
        return {**ex, (out_key or key): tf.gather(require(ex, key, "select"), index)}

    return op


@register("lookup")
def lookup(key: str, vocab: Sequence[str], out_key: str | None = None, default: int = -1):
    """Maps strings to their index in ``vocab`` (``default`` if absent), int32."""
    table = tf.lookup.StaticHashTable(
        tf.lookup.KeyValueTensorInitializer(
            tf.constant(list(vocab)), tf.range(len(vocab), dtype=tf.int32)),
        default_value=default,
    )

    def op(ex, seed):
        return {**ex, (out_key or key): table.lookup(require(ex, key, "lookup"))}

    return op


@register("lm_labels")
def lm_labels(key: str = "input_ids", mask_key: str = "attention_mask", out_key: str = "labels"):
    """``labels`` = ``input_ids`` with ``-100`` where ``attention_mask`` is 0.

    Labels are *not* shifted (Hugging Face convention: the loss shifts).
    """

    def op(ex, seed):
        ids = require(ex, key, "lm_labels")
        mask = require(ex, mask_key, "lm_labels")
        return {**ex, out_key: tf.where(mask > 0, ids, IGNORE_INDEX)}

    return op


@register("decoder_targets")
def decoder_targets(start_id: int, key: str = "input_ids", mask_key: str = "attention_mask",
                    pad_id: int = 0):
    """Encoder-decoder targets from a tokenised target ``key``.

    ``labels`` = ids with -100 at padding; ``decoder_input_ids`` = labels
    shifted right with ``start_id`` first (padding -> ``pad_id``);
    ``decoder_attention_mask`` = the shifted mask with 1 for the start token.
    The source ``key``/``mask_key`` are removed.
    """

    def op(ex, seed):
        ids = require(ex, key, "decoder_targets")
        mask = require(ex, mask_key, "decoder_targets")
        start = tf.fill(tf.concat([tf.shape(ids)[:-1], [1]], 0), tf.constant(start_id, ids.dtype))
        shifted = tf.concat([start, ids[..., :-1]], axis=-1)
        shifted_mask = tf.concat([tf.ones_like(mask[..., :1]), mask[..., :-1]], axis=-1)
        out = {k: v for k, v in ex.items() if k not in (key, mask_key)}
        out["labels"] = tf.where(mask > 0, ids, IGNORE_INDEX)
        out["decoder_input_ids"] = tf.where(shifted_mask > 0, shifted, pad_id)
        out["decoder_attention_mask"] = shifted_mask
        return out

    return op


@register("squad_windows")
def squad_windows(max_length: int, stride: int = 128, max_windows: int = 4,
                  question_key: str = "question", context_key: str = "context",
                  answers_key: str = "answers", id_key: str = "id", tokenizer: Any = None):
    """Extractive QA: doc-stride windows with span labels (:mod:`jaxmm.data.qa`).

    Writes ``input_ids``, ``attention_mask``, ``token_type_ids`` ``(W, max_length)``,
    ``offsets`` ``(W, max_length, 2)`` (characters of each context token in the
    context, -1 elsewhere), ``start_positions`` / ``end_positions`` ``(W,)`` (the
    answer's tokens, 0 = CLS when it is not wholly in the window, -100 on padding
    windows and on examples whose answer does not match its context: a counted
    skip with a warning) and ``num_windows``; ``W = max_windows``. One tokenizer
    call per example makes all its windows.
    """
    from jaxmm.data.qa import SpanLabeler

    labeler = SpanLabeler(tokenizer, max_length, stride, max_windows)
    names = ("input_ids", "attention_mask", "token_type_ids", "offsets", "start_positions",
             "end_positions", "num_windows")

    def run(example_id, question, context, texts, starts):
        example_id, question, context = (_texts(np.asarray(x))[0]
                                         for x in (example_id, question, context))
        out = labeler(example_id, question, context, _texts(np.asarray(texts)),
                      np.asarray(starts).reshape(-1))
        return [out[n] for n in names]

    def op(ex, seed):
        texts = require(ex, f"{answers_key}/text", "squad_windows")
        starts = require(ex, f"{answers_key}/answer_start", "squad_windows")
        example_id = ex[id_key] if id_key in ex else tf.constant("")
        results = tf.numpy_function(
            run, [example_id, require(ex, question_key, "squad_windows"),
                  require(ex, context_key, "squad_windows"), texts, starts],
            [tf.int32] * len(names), stateful=False)
        w, t = max_windows, max_length
        shapes = ([w, t], [w, t], [w, t], [w, t, 2], [w], [w], [])
        out = dict(ex)
        for name, r, shape in zip(names, results, shapes):
            out[name] = tf.ensure_shape(r, shape)
        return out

    return op


@register("choose_window")
def choose_window(keys: Sequence[str] = ("input_ids", "attention_mask", "token_type_ids",
                                         "offsets", "start_positions", "end_positions")):
    """One of an example's ``squad_windows`` at random (training): each real window
    (``attention_mask[w, 0] == 1``) is equally likely; ``keys`` lose the window axis."""

    def op(ex, seed):
        real = tf.reduce_sum(tf.cast(require(ex, "attention_mask", "choose_window")[:, 0] > 0,
                                     tf.int32))
        i = tf.random.stateless_uniform([], seed, 0, tf.maximum(real, 1), dtype=tf.int32)
        return {**ex, **{k: tf.gather(require(ex, k, "choose_window"), i) for k in keys}}

    return op


@register("keep")
def keep(*keys: str):
    """Keeps only ``keys`` (missing ones are an error)."""

    def op(ex, seed):
        return {k: require(ex, k, "keep") for k in keys}

    return op


@register("drop")
def drop(*keys: str):
    def op(ex, seed):
        return {k: v for k, v in ex.items() if k not in keys}

    return op


@register("rename")
def rename(**mapping: str):
    """``rename(new=old, ...)``: renames keys."""

    def op(ex, seed):
        out = {k: v for k, v in ex.items() if k not in mapping.values()}
        for new, old in mapping.items():
            out[new] = require(ex, old, "rename")
        return out

    return op


@register("copy")
def copy(src: str, dst: str):
    def op(ex, seed):
        return {**ex, dst: require(ex, src, "copy")}

    return op


@register("cast")
def cast(key: str, dtype: str):
    """Casts ``ex[key]`` to ``dtype`` (e.g. 'int32', 'float32')."""

    def op(ex, seed):
        return {**ex, key: tf.cast(require(ex, key, "cast"), tf.as_dtype(dtype))}

    return op


@register("pad_to")
def pad_to(key: str, length: int, value: float = 0, mask_key: str | None = None):
    """Pads/truncates the first axis of ``ex[key]`` to ``length``; optional 0/1 mask."""

    def op(ex, seed):
        x = require(ex, key, "pad_to")
        n = tf.minimum(tf.shape(x)[0], length)
        x = x[:length]
        paddings = tf.concat([[[0, length - n]], tf.zeros([tf.rank(x) - 1, 2], tf.int32)], 0)
        fill = tf.constant(str(value) if value != 0 else "") if x.dtype == tf.string else \
            tf.cast(value, x.dtype)
        out = tf.pad(x, paddings, constant_values=fill)
        out.set_shape([length] + x.shape[1:].as_list())
        result = {**ex, key: out}
        if mask_key:
            result[mask_key] = tf.cast(tf.range(length) < n, tf.int32)
        return result

    return op


def align_word_labels(word_ids: np.ndarray, tags: np.ndarray) -> np.ndarray:
    """Word tags -> token labels (Hugging Face ``run_ner`` with ``label_all_tokens=False``).

    ``word_ids`` ``(..., T)``: the word of each token, ``-1`` for specials and
    padding; ``tags`` ``(..., W)``: each word's tag. The first sub-word of each
    word gets its word's tag; later sub-words, specials and padding get -100.
    """
    word_ids = np.asarray(word_ids)
    tags = np.asarray(tags)
    if word_ids.size and word_ids.max() >= tags.shape[-1]:
        raise ValueError(f"align_word_labels: a token comes from word {int(word_ids.max())}, "
                         f"but there are tags for only {tags.shape[-1]} words.")
    previous = np.concatenate([np.full(word_ids.shape[:-1] + (1,), -1, word_ids.dtype),
                               word_ids[..., :-1]], axis=-1)
    first = (word_ids >= 0) & (word_ids != previous)
    safe = np.clip(word_ids, 0, max(tags.shape[-1] - 1, 0))
    picked = np.take_along_axis(tags, safe, axis=-1) if tags.shape[-1] else safe * 0
    return np.where(first, picked, IGNORE_INDEX).astype(np.int32)


@register("tokenize_words")
def tokenize_words(max_length: int, key: str = "tokens", tags_key: str | None = "ner",
                   out_key: str = "labels", tokenizer: Any = None):
    """Tokenises a pre-split sentence (``ex[key]``: 1-D string tensor of words) for
    token classification, aligning word tags to sub-words.

    Writes ``input_ids``, ``attention_mask`` (+ ``token_type_ids``) ``(max_length,)``
    and, with ``tags_key`` (1-D int word tags, e.g. CoNLL ``ner``), ``out_key``: the
    tag of each word on its first sub-word, -100 on the other sub-words, special
    tokens and padding (:func:`align_word_labels`). Words cut by ``max_length``
    lose their tags, as in Hugging Face ``run_ner``. Needs a tokenizer with
    ``encode_words`` (word ids; the ``tokenizers`` backend gives them in one
    batched call per example).
    """
    if not hasattr(tokenizer, "encode_words"):
        raise ConfigError(f"tokenize_words needs a tokenizer with encode_words (word ids); "
                         f"{type(tokenizer).__name__} has none.")
    # Probed here, so a tokenizer without word ids fails when the pipeline is built (one
    # clear TokenizerError), not inside tf.data.
    probe = tokenizer.encode_words([["a"]], max_length)
    names = [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in probe]

    def run(words, word_lengths, tags, tag_lengths):
        """Rows of words and tags (flat values + row lengths) -> outputs (rows, max_length)."""
        cut = lambda v, n: np.split(v, np.cumsum(n)[:-1]) if len(n) else []  # noqa: E731
        rows = cut(_texts(words), word_lengths)
        enc = tokenizer.encode_words([list(r) for r in rows], max_length)
        labels = [align_word_labels(w, np.asarray(t, np.int32))
                  for w, t in zip(enc["word_ids"], cut(tags, tag_lengths))]
        labels = np.stack(labels) if labels else np.zeros([0, max_length], np.int32)
        return [np.asarray(enc[n], np.int32).reshape(-1, max_length) for n in names] + [labels]

    def encode(ex, words):
        """``words`` ragged ``(N, None)`` -> ``ex`` with the outputs ``(N, max_length)``."""
        tags = tf.cast(require(ex, tags_key, "tokenize_words"), tf.int32) if tags_key else \
            tf.zeros_like(words, tf.int32)
        if not isinstance(tags, tf.RaggedTensor):
            tags = tf.RaggedTensor.from_tensor(tags)
        results = tf.numpy_function(
            run, [words.flat_values, words.row_lengths(), tags.flat_values, tags.row_lengths()],
            [tf.int32] * (len(names) + 1), stateful=False)
        out = dict(ex)
        for name, r in zip(names + [out_key], results):
            out[name] = tf.ensure_shape(r, [None, max_length])
        if not tags_key:
            out.pop(out_key)
        return out

    def op(ex, seed):
        words = require(ex, key, "tokenize_words")
        if words.shape.rank != 1:
            raise ConfigError(f"tokenize_words: {key!r} must be a 1-D list of words per "
                             f"example; got rank {words.shape.rank}.")
        ex = {**ex, **({tags_key: ex[tags_key][None]} if tags_key in ex else {})}
        out = encode(ex, tf.RaggedTensor.from_tensor(words[None]))
        out = {k: v[0] if k in names or k == out_key else v for k, v in out.items()}
        if tags_key in ex:
            out[tags_key] = ex[tags_key][0]
        return out

    def batched(ex):
        words = require(ex, key, "tokenize_words")
        if not isinstance(words, tf.RaggedTensor):
            if words.shape.rank != 2:
                raise ConfigError(f"tokenize_words: {key!r} must be a 1-D list of words per "
                                  f"example; got rank {words.shape.rank - 1}.")
            words = tf.RaggedTensor.from_tensor(words)
        return encode(ex, words)

    return with_batched(op, batched)


@register("chat")
def chat(max_length: int, template: Any = "plain", roles_key: str = "roles",
         contents_key: str = "contents", pad: bool = True, tokenizer: Any = None):
    """A conversation (``ex[roles_key]``, ``ex[contents_key]``: 1-D strings) rendered
    with a chat template (:mod:`jaxmm.data.chat`: ``plain``, ``llama3``, ``chatml`` or a
    ``{role: format}`` dict) into ``input_ids``, ``attention_mask`` and ``labels``
    ``(max_length,)``: labels are -100 except on the trained roles' replies. With
    ``pad=False`` (before packing) ``input_ids`` and ``labels`` are unpadded and cut at
    a turn boundary (:func:`jaxmm.data.chat.encode_chat`)."""
    from jaxmm.data.chat import encode_chat, get_template

    tmpl = get_template(template)  # a bad template is refused when the pipeline is built
    names = ("input_ids", "attention_mask", "labels") if pad else ("input_ids", "labels")

    def run(roles, contents):
        out = encode_chat(tokenizer, tmpl, _texts(roles), _texts(contents), max_length, pad)
        return [np.asarray(out[n], np.int32) for n in names]

    def op(ex, seed):
        roles = tf.reshape(require(ex, roles_key, "chat"), [-1])
        contents = tf.reshape(require(ex, contents_key, "chat"), [-1])
        results = tf.numpy_function(run, [roles, contents], [tf.int32] * len(names),
                                    stateful=False)
        out = dict(ex)
        for name, r in zip(names, results):
            r.set_shape([max_length] if pad else [None])
            out[name] = r
        return out

    return op
