"""Documents and their chunks: the passages a knowledge base indexes.

A :class:`Document` is one text with an id and a source (a file path or
``tfds:name/split#i``). :func:`chunk_documents` cuts each into overlapping
:class:`Chunk` s, by whitespace words or by tokenizer tokens; every chunk keeps
its document id, its source, its title and the character offsets
``[start, end)`` of its text in the document, so ``doc.text[start:end] ==
chunk.text`` and an answer can cite where it came from.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Iterable, Sequence
from typing import Any

from jaxmm.errors import DataError, InputError

__all__ = ["Chunk", "Document", "chunk_documents", "load_folder", "load_tfds"]

TEXT_SUFFIXES = (".txt", ".md")
_WORD = re.compile(r"\S+")


@dataclasses.dataclass(frozen=True)
class Document:
    """One source text: ``doc_id`` (its position), ``source`` (path or tfds
    reference), ``title`` and ``text``."""

    doc_id: int
    source: str
    title: str
    text: str


@dataclasses.dataclass(frozen=True)
class Chunk:
    """A passage of a document: ``doc.text[start:end] == text``."""

    chunk_id: int
    doc_id: int
    source: str
    title: str
    start: int
    end: int
    text: str

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, row: dict[str, Any]) -> Chunk:
        return cls(**{f.name: row[f.name] for f in dataclasses.fields(cls)})


def load_folder(directory: str | os.PathLike, suffixes: Sequence[str] = TEXT_SUFFIXES
                ) -> list[Document]:
    """The ``.txt``/``.md`` files under ``directory`` (recursively, sorted by
    path), read as UTF-8; a file's title is its first non-empty line."""
    directory = os.fspath(directory)
    if not os.path.isdir(directory):
        raise InputError(f"Document folder {directory!r} does not exist.",
                         hint="Pass a folder of .txt/.md files (--docs DIR).")
    paths = sorted(os.path.join(root, name) for root, _, names in os.walk(directory)
                   for name in names if name.lower().endswith(tuple(suffixes)))
    if not paths:
        raise InputError(f"Document folder {directory!r} has no {'/'.join(suffixes)} files.",
                         hint="Put the documents there as UTF-8 text files.")
    docs = []
    for path in paths:
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read()
        except UnicodeDecodeError as e:
            raise DataError(f"Document {path!r} is not UTF-8 text ({e.reason} at byte "
                            f"{e.start}).", hint="Re-encode it as UTF-8 or remove it.") from None
        title = next((line.strip().lstrip("#").strip() for line in text.splitlines()
                      if line.strip()), os.path.basename(path))
        docs.append(Document(len(docs), os.path.relpath(path, directory), title, text))
    return docs


def load_tfds(name: str, split: str, feature: str, *, title_feature: str | None = None,
              data_dir: str | None = None, limit: int | None = None) -> list[Document]:
    """Documents from the text ``feature`` of a prepared tfds dataset (no download)."""
    import tensorflow_datasets as tfds

    try:
        ds = tfds.load(name, split=split, data_dir=data_dir, download=False)
    except Exception as e:  # noqa: BLE001 - tfds raises several kinds for a missing dataset
        raise InputError(f"Cannot load tfds dataset {name!r} split {split!r}: "
                         f"{str(e).splitlines()[0]}",
                         hint="Prepare it first (tfds build) or pass --data-dir.") from None
    if feature not in ds.element_spec:
        raise InputError(f"tfds dataset {name!r} has no feature {feature!r}; it has "
                         f"{sorted(ds.element_spec)}.")
    if limit is not None:
        ds = ds.take(limit)
    docs = []
    for i, ex in enumerate(tfds.as_numpy(ds)):
        text = _as_text(ex[feature])
        first_line = text.strip().split("\n", 1)[0][:80]
        title = _as_text(ex[title_feature]) if title_feature else first_line
        docs.append(Document(i, f"tfds:{name}/{split}#{i}", title, text))
    return docs


def _as_text(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _windows(n: int, size: int, overlap: int) -> Iterable[tuple[int, int]]:
    step = size - overlap
    for first in range(0, max(n, 1), step):
        yield first, min(first + size, n)
        if first + size >= n:
            return


def chunk_documents(docs: Sequence[Document], *, size: int = 128, overlap: int = 32,
                    unit: str = "words", tokenizer: Any = None) -> list[Chunk]:
    """Overlapping chunks of ``size`` units, consecutive chunks sharing ``overlap``.

    ``unit="words"`` counts whitespace-separated words; ``unit="tokens"`` counts
    the tokens of ``tokenizer`` (a :mod:`jaxmm.data.tokenizers` tokenizer with
    character offsets, i.e. a Hugging Face ``tokenizers`` one). A chunk runs from
    its first unit's first character to its last unit's last character. Empty
    documents give no chunk.
    """
    if size < 1 or not 0 <= overlap < size:
        raise InputError(f"Chunking needs size >= 1 and 0 <= overlap < size; got size={size}, "
                         f"overlap={overlap}.")
    if unit not in ("words", "tokens"):
        raise InputError(f"Chunk unit {unit!r} is not 'words' or 'tokens'.")
    if unit == "tokens" and not hasattr(tokenizer, "encode_windows"):
        raise InputError("Chunking by tokens needs a tokenizer with character offsets "
                         "(a Hugging Face tokenizer folder).", hint="Or chunk by words.")
    chunks: list[Chunk] = []
    for doc in docs:
        if unit == "words":
            spans = [(m.start(), m.end()) for m in _WORD.finditer(doc.text)]
        else:
            spans = _token_spans(tokenizer, doc.text)
        if not spans:
            continue
        for a, b in _windows(len(spans), size, overlap):
            start, end = spans[a][0], spans[b - 1][1]
            chunks.append(Chunk(len(chunks), doc.doc_id, doc.source, doc.title, start, end,
                                doc.text[start:end]))
    return chunks


def _token_spans(tokenizer: Any, text: str) -> list[tuple[int, int]]:
    """Character spans of ``text`` 's tokens (no special tokens), in order."""
    # One window as long as the text: encode_windows returns the offsets into the pair.
    (window,), = tokenizer.encode_windows([""], [text], max_length=len(text) + 8, stride=0)
    spans: list[tuple[int, int]] = []
    for s, e in window["offsets"].tolist():
        if s < 0 or e <= s:
            continue
        if spans and s < spans[-1][1]:  # a word-piece continuing the same characters
            spans[-1] = (spans[-1][0], max(e, spans[-1][1]))
            continue
        spans.append((s, e))
    return spans
