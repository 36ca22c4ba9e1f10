"""Tokenizers: one interface over Hugging Face ``tokenizers`` and SentencePiece.

Loading::

    tok = jaxmm.data.tokenizers.load("path/to/hf-folder")   # tokenizer.json, vocab.txt,
                                                            # vocab.json+merges.txt, *.model
    batch = tok.encode(["a sentence", "another"], pairs=None, max_length=128)
    batch["input_ids"], batch["attention_mask"], batch["token_type_ids"]  # int32 (B, T)
    tok.decode(batch["input_ids"])                          # -> list of strings

Training::

    tok = train_tokenizer("wordpiece", ["corpus.txt"], vocab_size=8000, out_dir="tok/")
    # kinds: "wordpiece" (BERT), "bpe" (byte-level, RoBERTa/GPT-2 style),
    #        "sentencepiece" (unigram or BPE; T5/Llama style)

Command line: ``jaxmm tokenizer train|encode|decode|info`` (:mod:`jaxmm.cli.tokenizer`).

``encode`` follows Hugging Face semantics for the same arguments (and gives the
same ids as the ``transformers`` fast tokenizer for the same files): truncation
is longest-first over a pair, ``max_length=None`` with ``truncation=True``
truncates to ``model_max_length`` from ``tokenizer_config.json``, padding is
``True``/``"longest"`` (to the longest in the batch), ``"max_length"`` or
``False`` (ragged: lists of 1-D arrays).
"""

from __future__ import annotations

import abc
import functools
import json
import os
import tempfile
import threading
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from jaxmm.errors import TokenizerError

__all__ = [
    "HFTokenizer",
    "SentencePieceTokenizer",
    "Tokenizer",
    "TokenizerError",
    "load",
    "train_tokenizer",
]

ROLES = ("pad", "unk", "cls", "sep", "mask", "bos", "eos")
CONFIG_FILE = "tokenizer_config.json"
SP_FILES = ("spiece.model", "tokenizer.model", "sentencepiece.bpe.model")
# Token spellings recognised when no tokenizer_config.json names the roles.
_GUESSES = {
    "pad": ("[PAD]", "<pad>"), "unk": ("[UNK]", "<unk>"), "cls": ("[CLS]",),
    "sep": ("[SEP]",), "mask": ("[MASK]", "<mask>"), "bos": ("<s>", "<|endoftext|>"),
    "eos": ("</s>", "<|endoftext|>"),
}


# ---------------------------------------------------------------------------
# The interface
# ---------------------------------------------------------------------------


class Tokenizer(abc.ABC):
    """Common tokenizer interface (backends: :class:`HFTokenizer`, :class:`SentencePieceTokenizer`).

    Attributes:
      vocab_size: number of ids (including added special tokens).
      pad_token_id, unk_token_id, cls_token_id, sep_token_id, mask_token_id,
      bos_token_id, eos_token_id: special ids, ``None`` when absent.
      model_max_length: default truncation length (``None`` = unbounded).
      padding_side: ``"right"`` (default) or ``"left"`` (decoder-only prompts).
      return_token_type_ids: whether :meth:`encode` returns ``token_type_ids``.
    """

    def __init__(self, special_tokens: Mapping[str, str | None], *,
                 model_max_length: int | None = None, padding_side: str = "right",
                 return_token_type_ids: bool = False):
        if padding_side not in ("right", "left"):
            raise TokenizerError(f"padding_side must be 'right' or 'left'; got {padding_side!r}.")
        self.special_tokens = {r: special_tokens.get(r) for r in ROLES}
        for role, token in self.special_tokens.items():
            if token is not None and self.token_to_id(token) is None:
                raise TokenizerError(f"{role}_token {token!r} is not in the vocabulary.")
        self.model_max_length = model_max_length
        self.padding_side = padding_side
        self.return_token_type_ids = return_token_type_ids

    # -- backend hooks ---------------------------------------------------
    @property
    @abc.abstractmethod
    def vocab_size(self) -> int:
        """Number of ids in the vocabulary."""

    @abc.abstractmethod
    def token_to_id(self, token: str) -> int | None:
        """The id of ``token``, or None if it is not in the vocabulary."""

    @abc.abstractmethod
    def id_to_token(self, index: int) -> str | None:
        """The token of ``index``, or None if out of range."""

    @abc.abstractmethod
    def tokenize(self, text: str) -> list[str]:
        """Sub-word pieces of ``text`` (no special tokens)."""

    @abc.abstractmethod
    def _encode_rows(self, texts: list[str], pairs: list[str] | None, max_length: int | None,
                     add_special_tokens: bool) -> list[tuple[list[int], list[int], list[int]]]:
        """Per text: (ids, type_ids, special_tokens_mask), truncated to max_length."""

    @abc.abstractmethod
    def _decode_rows(self, rows: list[list[int]], skip_special_tokens: bool) -> list[str]:
        """Texts of the id rows."""

    @abc.abstractmethod
    def save(self, directory: str) -> str:
        """Writes the tokenizer files + ``tokenizer_config.json``; returns ``directory``."""

    def encode_windows(self, texts: Sequence[str], pairs: Sequence[str], max_length: int,
                       stride: int) -> list[list[dict[str, np.ndarray]]]:
        """Doc-stride windows with character offsets (see :meth:`HFTokenizer.encode_windows`)."""
        raise TokenizerError(
            f"{type(self).__name__} gives no character offsets, which doc-stride windows "
            "(extractive QA) need; use a Hugging Face tokenizer (tokenizer.json or vocab.txt).")

    # -- special ids -----------------------------------------------------
    def _special_id(self, role: str) -> int | None:
        token = self.special_tokens[role]
        return None if token is None else self.token_to_id(token)

    pad_token_id = property(lambda self: self._special_id("pad"))
    unk_token_id = property(lambda self: self._special_id("unk"))
    cls_token_id = property(lambda self: self._special_id("cls"))
    sep_token_id = property(lambda self: self._special_id("sep"))
    mask_token_id = property(lambda self: self._special_id("mask"))
    bos_token_id = property(lambda self: self._special_id("bos"))
    eos_token_id = property(lambda self: self._special_id("eos"))

    @property
    def all_special_ids(self) -> list[int]:
        ids = {self._special_id(r) for r in ROLES}
        return sorted(i for i in ids if i is not None)

    def __len__(self) -> int:
        return self.vocab_size

    def __repr__(self) -> str:
        roles = ", ".join(f"{r}={t!r}" for r, t in self.special_tokens.items() if t is not None)
        return f"{type(self).__name__}(vocab_size={self.vocab_size}, {roles})"

    # -- encode / decode -------------------------------------------------
    def encode(
        self,
        texts: str | Sequence[str],
        pairs: str | Sequence[str] | None = None,
        max_length: int | None = None,
        padding: bool | str = True,
        truncation: bool = True,
        add_special_tokens: bool = True,
        *,
        pad_to_multiple_of: int | None = None,
        padding_side: str | None = None,
        return_special_tokens_mask: bool = False,
    ) -> dict[str, Any]:
        """Tokenises a batch of texts (or text pairs).

        Args:
          texts: strings (a single string is a batch of one).
          pairs: second segments for sentence-pair inputs (same count as ``texts``).
          max_length: truncation (and ``padding="max_length"``) length; defaults
            to ``model_max_length`` when ``truncation`` is on.
          padding: ``True``/``"longest"``, ``"max_length"`` or ``False``.
          truncation: longest-first truncation to ``max_length``.
          add_special_tokens: add ``[CLS]``/``[SEP]``, ``<s>``/``</s>``, ... .
          pad_to_multiple_of: round the padded length up (fewer recompiles).
          padding_side: override :attr:`padding_side` for this call.
          return_special_tokens_mask: also return ``special_tokens_mask``.

        Returns:
          ``input_ids``, ``attention_mask`` (+ ``token_type_ids`` when
          :attr:`return_token_type_ids`, + ``special_tokens_mask``): int32
          ``(B, T)`` arrays, or, with ``padding=False``, lists of 1-D arrays.
        """
        texts = [texts] if isinstance(texts, str) else list(texts)
        if pairs is not None:
            pairs = [pairs] if isinstance(pairs, str) else list(pairs)
            if len(pairs) != len(texts):
                raise TokenizerError(
                    f"encode got {len(texts)} texts but {len(pairs)} pairs; pass one pair per text."
                )
        for name, seq in (("texts", texts), ("pairs", pairs or [])):
            bad = [type(t).__name__ for t in seq if not isinstance(t, str)]
            if bad:
                raise TokenizerError(f"encode: {name} must be strings; got {bad[0]}.")
        if padding not in (True, False, "longest", "max_length", "do_not_pad"):
            raise TokenizerError(
                f"padding={padding!r}; use True/'longest', 'max_length' or False."
            )
        if max_length is None and (truncation or padding == "max_length"):
            max_length = self.model_max_length
        if padding == "max_length" and max_length is None:
            raise TokenizerError("padding='max_length' needs max_length (this tokenizer has no "
                                 "model_max_length).")
        if max_length is not None and max_length < 1:
            raise TokenizerError(f"max_length must be >= 1; got {max_length}.")
        rows = self._encode_rows(texts, pairs, max_length if truncation else None,
                                 add_special_tokens) if texts else []
        keys = ["input_ids", "attention_mask"]
        if self.return_token_type_ids:
            keys.append("token_type_ids")
        if return_special_tokens_mask:
            keys.append("special_tokens_mask")
        if padding in (False, "do_not_pad"):
            out = {k: [] for k in keys}
            for ids, types, special in rows:
                cols = {"input_ids": ids, "attention_mask": [1] * len(ids),
                        "token_type_ids": types, "special_tokens_mask": special}
                for k in keys:
                    out[k].append(np.asarray(cols[k], np.int32))
            return out
        return self._pad(rows, keys, max_length if padding == "max_length" else None,
                         pad_to_multiple_of, padding_side or self.padding_side)

    def encode_words(self, words: Sequence[Sequence[str]], max_length: int,
                     add_special_tokens: bool = True) -> dict[str, np.ndarray]:
        """Tokenises pre-split words (NER, tagging), padded to exactly ``max_length``.

        ``words``: a batch of word lists. Returns ``input_ids``, ``attention_mask``
        (+ ``token_type_ids``) and ``word_ids``: int32 ``(B, max_length)``, where
        ``word_ids`` is the index of the word each token comes from, ``-1`` for
        special tokens and padding. Words past ``max_length`` are truncated away.
        """
        rows = self._encode_word_rows([[str(w) for w in ws] for ws in words], max_length,
                                      add_special_tokens)
        out = self._pad([(ids, types, [0] * len(ids)) for ids, types, _ in rows],
                        ["input_ids", "attention_mask", "token_type_ids"], max_length, None,
                        "right")
        word_ids = np.full((len(rows), max_length), -1, np.int32)
        for i, (_, _, wids) in enumerate(rows):
            word_ids[i, :len(wids)] = [-1 if w is None else w for w in wids]
        if not self.return_token_type_ids:
            out.pop("token_type_ids")
        out["word_ids"] = word_ids
        return out

    def _encode_word_rows(self, words: list[list[str]], max_length: int,
                          add_special_tokens: bool
                          ) -> list[tuple[list[int], list[int], list[int | None]]]:
        """Per word list: (ids, type_ids, word index or None per token), truncated."""
        raise TokenizerError(f"{type(self).__name__} cannot encode pre-split words (word ids "
                             "for NER label alignment); use a Hugging Face tokenizers "
                             "folder (tokenizer.json / vocab.txt).")

    def _pad(self, rows, keys, length, multiple, side) -> dict[str, np.ndarray]:
        longest = max((len(r[0]) for r in rows), default=0)
        target = max(longest, length or 0)
        if multiple:
            target = -(-target // multiple) * multiple
        pad_id = self.pad_token_id
        if pad_id is None and any(len(r[0]) < target for r in rows):
            raise TokenizerError(
                "This tokenizer has no pad token, so a batch of different lengths cannot be "
                "padded. Pass padding=False, or load it with pad_token=<a token>, e.g. "
                "load(path, pad_token=<its eos token>)."
            )
        out = {k: np.zeros((len(rows), target), np.int32) for k in keys}
        out["input_ids"][:] = pad_id if pad_id is not None else 0
        if "special_tokens_mask" in out:
            out["special_tokens_mask"][:] = 1
        for i, (ids, types, special) in enumerate(rows):
            n = len(ids)
            cols = slice(target - n, target) if side == "left" else slice(0, n)
            out["input_ids"][i, cols] = ids
            out["attention_mask"][i, cols] = 1
            if "token_type_ids" in out:
                out["token_type_ids"][i, cols] = types
            if "special_tokens_mask" in out:
                out["special_tokens_mask"][i, cols] = special
        return out

    def decode(self, ids: Any, skip_special_tokens: bool = True) -> str | list[str]:
        """Text of one sequence of ids (1-D) or of a batch (2-D / list of lists).

        Negative ids (the ``-100`` ignore index of labels) are dropped.
        """
        if isinstance(ids, list | tuple) and ids and not np.isscalar(ids[0]):
            rows = [np.asarray(r).reshape(-1) for r in ids]
            single = False
        else:
            arr = np.asarray(ids)
            if arr.ndim > 2:
                raise TokenizerError(f"decode expects 1-D or 2-D ids; got shape {arr.shape}.")
            single = arr.ndim <= 1
            rows = [arr.reshape(-1)] if single else list(arr)
        rows = [[int(i) for i in r if i >= 0] for r in rows]
        too_big = [i for r in rows for i in r if i >= self.vocab_size]
        if too_big:
            raise TokenizerError(
                f"decode: id {too_big[0]} is outside the vocabulary (size {self.vocab_size})."
            )
        texts = self._decode_rows(rows, skip_special_tokens)
        return texts[0] if single else texts

    def _config(self) -> dict[str, Any]:
        cfg = {f"{r}_token": t for r, t in self.special_tokens.items() if t is not None}
        cfg.update(model_max_length=self.model_max_length, padding_side=self.padding_side)
        names = ["input_ids", "attention_mask"]
        if self.return_token_type_ids:
            names.append("token_type_ids")
        cfg["model_input_names"] = names
        return cfg

    def _write_config(self, directory: str, extra: Mapping[str, Any]) -> None:
        cfg = {**self._config(), **extra}
        with open(os.path.join(directory, CONFIG_FILE), "w", encoding="utf-8") as f:
            json.dump(cfg, f, indent=2, sort_keys=True)
        specials = {k: v for k, v in cfg.items() if k.endswith("_token")}
        with open(os.path.join(directory, "special_tokens_map.json"), "w", encoding="utf-8") as f:
            json.dump(specials, f, indent=2, sort_keys=True)


def _truncate_pair(la: int, lb: int, budget: int) -> tuple[int, int]:
    """Longest-first: drop one token at a time from the longer segment."""
    while la + lb > budget:
        if la > lb:
            la -= 1
        else:
            lb -= 1
    return la, lb


def _check_budget(max_length: int | None, n_special: int) -> None:
    if max_length is not None and max_length <= n_special:
        raise TokenizerError(
            f"max_length={max_length} leaves no room for text: the special tokens alone take "
            f"{n_special}. Use a larger max_length or add_special_tokens=False."
        )


# ---------------------------------------------------------------------------
# Hugging Face `tokenizers` backend
# ---------------------------------------------------------------------------


class HFTokenizer(Tokenizer):
    """A Hugging Face ``tokenizers.Tokenizer`` (WordPiece, BPE, Unigram, ...)."""

    def __init__(self, tokenizer: Any, special_tokens: Mapping[str, str | None], **kwargs):
        self._tok = tokenizer
        self._tok.no_truncation()  # set per call (files may carry fixed settings)
        self._tok.no_padding()
        self._lock = threading.Lock()
        if "return_token_type_ids" not in kwargs:
            probe = self._tok.encode("a", "b")
            kwargs["return_token_type_ids"] = any(probe.type_ids)
        super().__init__(special_tokens, **kwargs)

    @property
    def vocab_size(self) -> int:
        return self._tok.get_vocab_size(with_added_tokens=True)

    def token_to_id(self, token: str) -> int | None:
        return self._tok.token_to_id(token)

    def id_to_token(self, index: int) -> str | None:
        return self._tok.id_to_token(index)

    def tokenize(self, text: str) -> list[str]:
        return self._tok.encode(text, add_special_tokens=False).tokens

    def encode_windows(self, texts: Sequence[str], pairs: Sequence[str], max_length: int,
                       stride: int) -> list[list[dict[str, np.ndarray]]]:
        """Doc-stride windows of text pairs (extractive QA: question, context).

        Each ``(text, pair)`` is encoded with special tokens; only the pair is cut,
        into windows of ``max_length`` tokens whose pair parts overlap by ``stride``
        tokens (the ``tokenizers`` library's truncation with overflow, in one batched
        call). Returns, per input, its windows in order, each a dict of int32 arrays:
        ``input_ids``, ``token_type_ids``, ``offsets`` ``(n, 2)`` (character offsets
        into the *pair* for its tokens, ``-1`` for the text's and special tokens).
        """
        if max_length < 1 or stride < 0:
            raise TokenizerError(f"encode_windows: max_length={max_length} must be >= 1 and "
                                 f"stride={stride} >= 0.")
        with self._lock:
            self._tok.enable_truncation(max_length, stride=stride, strategy="only_second")
            try:
                encodings = self._tok.encode_batch(list(zip(texts, pairs)))
            except Exception as e:  # tokenizers raises a bare Exception on impossible cuts
                raise TokenizerError(
                    f"encode_windows: cannot cut the text pairs into windows of {max_length} "
                    f"tokens with stride {stride} ({e}). The first text (question) and the "
                    "special tokens must leave more than `stride` tokens of the pair per "
                    "window: raise max_length or lower stride.") from None
            finally:
                self._tok.no_truncation()
        out = []
        for first in encodings:
            windows = []
            for e in [first, *first.overflowing]:
                offsets = np.asarray(e.offsets, np.int32).reshape(-1, 2)
                in_pair = np.asarray([s == 1 for s in e.sequence_ids])
                windows.append({"input_ids": np.asarray(e.ids, np.int32),
                                "token_type_ids": np.asarray(e.type_ids, np.int32),
                                "offsets": np.where(in_pair[:, None], offsets, -1)})
            out.append(windows)
        return out

    def _encode_rows(self, texts, pairs, max_length, add_special_tokens):
        n_special = self._tok.num_special_tokens_to_add(pairs is not None) if (
            add_special_tokens) else 0
        _check_budget(max_length, n_special)
        inputs = list(zip(texts, pairs)) if pairs is not None else texts
        with self._lock:  # truncation is tokenizer state; keep calls from interleaving
            if max_length is None:
                self._tok.no_truncation()
            else:
                self._tok.enable_truncation(max_length, strategy="longest_first")
            encodings = self._tok.encode_batch(inputs, add_special_tokens=add_special_tokens)
        return [(e.ids, e.type_ids, e.special_tokens_mask) for e in encodings]

    def _decode_rows(self, rows, skip_special_tokens):
        return self._tok.decode_batch(rows, skip_special_tokens=skip_special_tokens)

    def _encode_word_rows(self, words, max_length, add_special_tokens):
        n_special = self._tok.num_special_tokens_to_add(False) if add_special_tokens else 0
        _check_budget(max_length, n_special)
        space = self._word_space
        words = [ws[:1] + [space + w for w in ws[1:]] for ws in words] if space else words
        with self._lock:
            self._tok.enable_truncation(max_length, strategy="longest_first")
            encodings = self._tok.encode_batch(words, is_pretokenized=True,
                                               add_special_tokens=add_special_tokens)
        return [(e.ids, e.type_ids, e.word_ids) for e in encodings]

    @functools.cached_property
    def _word_space(self) -> str:
        """``" "`` when pre-split words must carry the space before them to be tokenised as
        in running text (byte-level BPE puts it in the token: ``Ġword``), else ``""``."""
        with self._lock:
            self._tok.no_truncation()
            text = self._tok.encode("a b", add_special_tokens=False).tokens
            split = self._tok.encode(["a", "b"], is_pretokenized=True,
                                     add_special_tokens=False).tokens
        return "" if text == split else " "

    def save(self, directory: str) -> str:
        os.makedirs(directory, exist_ok=True)
        self._tok.save(os.path.join(directory, "tokenizer.json"))
        self._write_config(directory, {"tokenizer_class": "PreTrainedTokenizerFast"})
        return directory


# ---------------------------------------------------------------------------
# SentencePiece backend
# ---------------------------------------------------------------------------


class SentencePieceTokenizer(Tokenizer):
    """A SentencePiece model; ``[bos] A [eos] (B [eos])`` with ``add_bos``/``add_eos``."""

    def __init__(self, model_proto: bytes, special_tokens: Mapping[str, str | None] | None = None,
                 *, add_bos: bool | None = None, add_eos: bool | None = None, **kwargs):
        import sentencepiece as spm

        self._proto = model_proto
        self._sp = spm.SentencePieceProcessor(model_proto=model_proto)
        sp = self._sp
        found = {"pad": sp.pad_id(), "unk": sp.unk_id(), "bos": sp.bos_id(), "eos": sp.eos_id()}
        specials = {r: sp.id_to_piece(i) for r, i in found.items() if i >= 0}
        mask = sp.piece_to_id("<mask>")
        if mask != sp.unk_id() and sp.id_to_piece(mask) == "<mask>":
            specials["mask"] = "<mask>"
        specials.update({k: v for k, v in (special_tokens or {}).items() if v is not None})
        self.add_bos = specials.get("bos") is not None if add_bos is None else add_bos
        self.add_eos = specials.get("eos") is not None if add_eos is None else add_eos
        super().__init__(specials, **kwargs)

    @property
    def vocab_size(self) -> int:
        return self._sp.get_piece_size()

    def token_to_id(self, token: str) -> int | None:
        i = self._sp.piece_to_id(token)
        return i if self._sp.id_to_piece(i) == token else None

    def id_to_token(self, index: int) -> str | None:
        return self._sp.id_to_piece(index) if 0 <= index < self.vocab_size else None

    def tokenize(self, text: str) -> list[str]:
        return self._sp.encode(text, out_type=str)

    def _encode_rows(self, texts, pairs, max_length, add_special_tokens):
        pre = [self.bos_token_id] if add_special_tokens and self.add_bos else []
        post = [self.eos_token_id] if add_special_tokens and self.add_eos else []
        n_special = len(pre) + len(post) * (2 if pairs is not None else 1)
        _check_budget(max_length, n_special)
        first = self._sp.encode(texts)
        second = self._sp.encode(pairs) if pairs is not None else [None] * len(texts)
        rows = []
        for a, b in zip(first, second):
            la, lb = len(a), len(b or [])
            if max_length is not None:
                la, lb = _truncate_pair(la, lb, max_length - n_special)
            ids = pre + a[:la] + post
            types = [0] * len(ids)
            special = [1] * len(pre) + [0] * la + [1] * len(post)
            if b is not None:
                ids += b[:lb] + post
                types += [1] * (lb + len(post))
                special += [0] * lb + [1] * len(post)
            rows.append((ids, types, special))
        return rows

    def _decode_rows(self, rows, skip_special_tokens):
        if skip_special_tokens:
            drop = set(self.all_special_ids)
            rows = [[i for i in r if i not in drop] for r in rows]
        return [self._sp.decode(r) for r in rows]

    def save(self, directory: str) -> str:
        os.makedirs(directory, exist_ok=True)
        with open(os.path.join(directory, SP_FILES[0]), "wb") as f:
            f.write(self._proto)
        self._write_config(directory, {"add_bos_token": self.add_bos,
                                       "add_eos_token": self.add_eos})
        return directory


# ---------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------


def _read_json(path: str) -> dict:
    if not os.path.isfile(path):
        return {}
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except json.JSONDecodeError as e:
        raise TokenizerError(f"{path} is not valid JSON: {e}") from None
    return data if isinstance(data, dict) else {}


def _token_str(value: Any) -> str | None:
    if isinstance(value, dict):  # serialised AddedToken
        return value.get("content")
    return value if isinstance(value, str) else None


def _roles_from(config: Mapping[str, Any], vocab_has, options: dict) -> dict[str, str | None]:
    """Special-token roles: explicit options, then config files, then known spellings."""
    roles: dict[str, str | None] = {}
    for role in ROLES:
        key = f"{role}_token"
        if key in options:
            roles[role] = options.pop(key)
        elif key in config:
            roles[role] = _token_str(config[key])
        else:
            roles[role] = next((t for t in _GUESSES[role] if vocab_has(t)), None)
    if not any(f"{r}_token" in config for r in ("cls", "sep")):
        # RoBERTa-style vocabularies use <s>/</s> as CLS/SEP too.
        if roles["cls"] is None and vocab_has("<s>") and vocab_has("</s>"):
            roles["cls"], roles["sep"] = "<s>", roles["sep"] or "</s>"
    return roles


def _common(config: Mapping[str, Any], options: dict) -> dict[str, Any]:
    max_len = options.pop("model_max_length", config.get("model_max_length"))
    if isinstance(max_len, int | float) and max_len > 1e9:  # HF's "no limit" sentinel
        max_len = None
    out = {"model_max_length": None if max_len is None else int(max_len),
           "padding_side": options.pop("padding_side", config.get("padding_side", "right"))}
    names = config.get("model_input_names")
    if "return_token_type_ids" in options:
        out["return_token_type_ids"] = options.pop("return_token_type_ids")
    elif isinstance(names, list):
        out["return_token_type_ids"] = "token_type_ids" in names
    return out


def _check_options(options: dict) -> None:
    if options:
        from jaxmm.config import nearest

        valid = [f"{r}_token" for r in ROLES] + [
            "model_max_length", "padding_side", "return_token_type_ids", "lowercase",
            "add_bos", "add_eos"]
        key = next(iter(options))
        close = nearest(key, valid)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise TokenizerError(f"Unknown tokenizer option {key!r}.{hint} Valid: {', '.join(valid)}.")


def _hf_from_files(kind: str, files: dict[str, str], config: dict, options: dict):
    from tokenizers import Tokenizer as RawTokenizer
    from tokenizers import implementations

    if kind == "json":
        try:
            return RawTokenizer.from_file(files["json"])
        except Exception as e:  # tokenizers raises a generic Exception on bad files
            raise TokenizerError(f"{files['json']} is not a valid tokenizer.json ({e}).") from None
    if kind == "wordpiece":
        lowercase = options.pop("lowercase", config.get("do_lower_case", True))
        impl = implementations.BertWordPieceTokenizer(
            files["vocab"], lowercase=lowercase, strip_accents=config.get("strip_accents"),
            handle_chinese_chars=config.get("tokenize_chinese_chars", True),
            **{f"{r}_token": _token_str(config.get(f"{r}_token")) or d for r, d in
               (("unk", "[UNK]"), ("sep", "[SEP]"), ("cls", "[CLS]"), ("pad", "[PAD]"),
                ("mask", "[MASK]"))})
        return impl._tokenizer
    impl = implementations.ByteLevelBPETokenizer(files["vocab"], files["merges"],
                                                 add_prefix_space=config.get("add_prefix_space",
                                                                             False))
    raw = impl._tokenizer
    if raw.token_to_id("<s>") is not None and raw.token_to_id("</s>") is not None:
        from tokenizers import processors

        raw.post_processor = processors.RobertaProcessing(
            ("</s>", raw.token_to_id("</s>")), ("<s>", raw.token_to_id("<s>")))
    return raw


def load(path: str | os.PathLike, **options) -> Tokenizer:
    """Loads a tokenizer from a folder or a file.

    Folders are searched for ``tokenizer.json`` (any HF fast tokenizer),
    ``vocab.txt`` (BERT WordPiece), ``vocab.json`` + ``merges.txt`` (byte-level
    BPE) or a SentencePiece model (``spiece.model``, ``tokenizer.model``, ...),
    in that order; ``tokenizer_config.json`` / ``special_tokens_map.json``
    supply the special tokens and ``model_max_length``. A file path selects by
    extension (``.json``, ``.txt``, ``.model``).

    Options: ``<role>_token`` (``pad_token``, ``mask_token``, ...) to set or
    override a special token, ``model_max_length``, ``padding_side``,
    ``return_token_type_ids``, ``lowercase`` (vocab.txt), ``add_bos``/``add_eos``
    (SentencePiece).
    """
    path = os.fspath(path)
    options = dict(options)
    if os.path.isdir(path):
        config = {**_read_json(os.path.join(path, "special_tokens_map.json")),
                  **_read_json(os.path.join(path, CONFIG_FILE))}
        join = lambda name: os.path.join(path, name)  # noqa: E731
        sp_file = next((join(f) for f in SP_FILES if os.path.isfile(join(f))), None)
        if os.path.isfile(join("tokenizer.json")):
            kind, files = "json", {"json": join("tokenizer.json")}
        elif os.path.isfile(join("vocab.txt")):
            kind, files = "wordpiece", {"vocab": join("vocab.txt")}
        elif os.path.isfile(join("vocab.json")) and os.path.isfile(join("merges.txt")):
            kind, files = "bpe", {"vocab": join("vocab.json"), "merges": join("merges.txt")}
        elif sp_file:
            kind, files = "sentencepiece", {"model": sp_file}
        else:
            raise TokenizerError(
                f"{path!r} holds no tokenizer: expected tokenizer.json, vocab.txt, "
                f"vocab.json + merges.txt, or a SentencePiece model ({', '.join(SP_FILES)})."
            )
    elif os.path.isfile(path):
        config = {}
        ext = os.path.splitext(path)[1]
        kinds = {".json": ("json", "json"), ".txt": ("wordpiece", "vocab"),
                 ".model": ("sentencepiece", "model")}
        if ext not in kinds:
            raise TokenizerError(
                f"Cannot tell the tokenizer type of {path!r}: use a tokenizer.json, a WordPiece "
                "vocab.txt, a SentencePiece .model file, or a folder holding one."
            )
        kind, key = kinds[ext]
        files = {key: path}
    else:
        raise TokenizerError(f"Tokenizer path {path!r} does not exist.")

    if kind == "sentencepiece":
        with open(files["model"], "rb") as f:
            proto = f.read()
        common = _common(config, options)
        roles = {r: options.pop(f"{r}_token", _token_str(config.get(f"{r}_token")))
                 for r in ROLES}
        add_bos = options.pop("add_bos", config.get("add_bos_token"))
        add_eos = options.pop("add_eos", config.get("add_eos_token"))
        _check_options(options)
        try:
            return SentencePieceTokenizer(proto, roles, add_bos=add_bos, add_eos=add_eos,
                                          **common)
        except RuntimeError as e:
            raise TokenizerError(f"{files['model']} is not a SentencePiece model ({e}).") from None
    raw = _hf_from_files(kind, files, config, options)
    common = _common(config, options)
    roles = _roles_from(config, lambda t: raw.token_to_id(t) is not None, options)
    _check_options(options)
    # Role tokens are special (skipped by decode, never split), as in transformers; files
    # without added-token records (GPT-2's vocab.json + merges.txt) do not mark them.
    present = [t for t in dict.fromkeys(roles.values()) if t and raw.token_to_id(t) is not None]
    raw.add_special_tokens(present)  # ids unchanged: the tokens are already in the vocabulary
    return HFTokenizer(raw, roles, **common)


# ---------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------


def _check_files(files: Sequence[str]) -> list[str]:
    files = [os.fspath(f) for f in ([files] if isinstance(files, str | os.PathLike) else files)]
    if not files:
        raise TokenizerError("train_tokenizer needs at least one text file.")
    for f in files:
        if not os.path.isfile(f):
            raise TokenizerError(f"Training file {f!r} does not exist.")
    if sum(os.path.getsize(f) for f in files) == 0:
        raise TokenizerError(f"Training files {files} are empty; a tokenizer needs text.")
    return files


def train_tokenizer(
    kind: str,
    files: str | Sequence[str],
    vocab_size: int,
    *,
    out_dir: str | None = None,
    min_frequency: int = 2,
    lowercase: bool = True,
    model_type: str = "unigram",
    model_max_length: int | None = 512,
    character_coverage: float = 0.9995,
) -> Tokenizer:
    """Trains a tokenizer on plain-text files (one or more sentences per line).

    Args:
      kind: ``"wordpiece"`` (BERT: ``[PAD] [UNK] [CLS] [SEP] [MASK]``, ``[CLS] A
        [SEP] B [SEP]`` with token types), ``"bpe"`` (byte-level BPE, RoBERTa
        layout ``<s> <pad> </s> <unk> <mask>``, ``<s> A </s></s> B </s>``) or
        ``"sentencepiece"`` (``<pad> <unk> <s> </s> <mask>``).
      vocab_size: target vocabulary size (including special tokens).
      out_dir: if given, the tokenizer is saved there (loadable with :func:`load`).
      min_frequency: minimum pair/word count (wordpiece, bpe).
      lowercase: lowercase text (wordpiece; sentencepiece case-folds).
      model_type: ``"unigram"`` or ``"bpe"`` (sentencepiece).
      model_max_length: default truncation length stored with the tokenizer.
      character_coverage: sentencepiece character coverage.
    """
    files = _check_files(files)
    if vocab_size < 10:
        raise TokenizerError(f"vocab_size must be at least 10; got {vocab_size}.")
    common = {"model_max_length": model_max_length}
    if kind == "sentencepiece":
        tok = _train_sentencepiece(files, vocab_size, lowercase, model_type, character_coverage,
                                   common)
    elif kind in ("wordpiece", "bpe"):
        tok = _train_hf(kind, files, vocab_size, min_frequency, lowercase, common)
    else:
        raise TokenizerError(
            f"Unknown tokenizer kind {kind!r}; use 'wordpiece', 'bpe' or 'sentencepiece'."
        )
    if out_dir is not None:
        tok.save(out_dir)
    return tok


def _train_hf(kind, files, vocab_size, min_frequency, lowercase, common) -> HFTokenizer:
    from tokenizers import Tokenizer as RawTokenizer
    from tokenizers import decoders, models, normalizers, pre_tokenizers, processors, trainers

    if kind == "wordpiece":
        specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
        raw = RawTokenizer(models.WordPiece(unk_token="[UNK]"))
        raw.normalizer = normalizers.BertNormalizer(lowercase=lowercase)
        raw.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        raw.decoder = decoders.WordPiece()
        seeded = _continuation_tokens(raw, files)
        trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, min_frequency=min_frequency,
                                            special_tokens=specials + seeded,
                                            show_progress=False)
        single, pair = "[CLS] $A [SEP]", "[CLS] $A [SEP] $B:1 [SEP]:1"
        bounds = ("[CLS]", "[SEP]")
        roles = dict(pad="[PAD]", unk="[UNK]", cls="[CLS]", sep="[SEP]", mask="[MASK]")
    else:
        specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
        raw = RawTokenizer(models.BPE())
        raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        raw.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency,
                                      special_tokens=specials, show_progress=False,
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
        single, pair = "<s> $A </s>", "<s> $A </s> </s> $B </s>"
        bounds = ("<s>", "</s>")
        roles = dict(pad="<pad>", unk="<unk>", cls="<s>", sep="</s>", mask="<mask>", bos="<s>",
                     eos="</s>")
    raw.train(files, trainer)
    if kind == "wordpiece":  # the seeded "##c" are ordinary vocabulary, not special tokens
        spec = json.loads(raw.to_str())
        spec["added_tokens"] = [t for t in spec["added_tokens"] if t["content"] in specials]
        raw = RawTokenizer.from_str(json.dumps(spec))
    raw.post_processor = processors.TemplateProcessing(
        single=single, pair=pair, special_tokens=[(t, raw.token_to_id(t)) for t in bounds])
    return HFTokenizer(raw, roles, **common)


def _continuation_tokens(raw: Any, files: Sequence[str]) -> list[str]:
    """Every word-continuation token ``##c`` WordPiece training creates, sorted.

    The Hugging Face trainer (``tokenizers`` 0.23) creates these tokens while
    iterating a hash map, so their ids -- and, through the tie-breaking of
    equally frequent merges, the vocabulary itself -- differ from one process
    to the next (huggingface/tokenizers#1794). Handing them to the trainer
    first, in sorted order, fixes their ids and makes training deterministic.
    """
    chars: set[str] = set()
    for path in files:
        with open(path, encoding="utf-8") as f:
            for line in f:
                text = raw.normalizer.normalize_str(line)
                for word, _ in raw.pre_tokenizer.pre_tokenize_str(text):
                    chars.update(word[1:])
    return ["##" + c for c in sorted(chars)]


def _train_sentencepiece(files, vocab_size, lowercase, model_type, coverage, common):
    import sentencepiece as spm

    if model_type not in ("unigram", "bpe"):
        raise TokenizerError(f"model_type={model_type!r}; use 'unigram' or 'bpe'.")
    with tempfile.TemporaryDirectory() as tmp:
        prefix = os.path.join(tmp, "sp")
        try:
            spm.SentencePieceTrainer.train(
                input=",".join(files), model_prefix=prefix, vocab_size=vocab_size,
                model_type=model_type, character_coverage=coverage, pad_id=0, unk_id=1,
                bos_id=2, eos_id=3, user_defined_symbols=["<mask>"], minloglevel=2,
                hard_vocab_limit=False,  # like the HF trainers: vocab_size is an upper bound
                normalization_rule_name="nmt_nfkc_cf" if lowercase else "nmt_nfkc",
                num_threads=os.cpu_count() or 1,
            )
        except RuntimeError as e:
            raise TokenizerError(f"SentencePiece training failed: {e}") from None
        with open(prefix + ".model", "rb") as f:
            proto = f.read()
    return SentencePieceTokenizer(proto, **common)
