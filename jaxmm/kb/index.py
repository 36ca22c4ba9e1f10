"""A knowledge base: chunks, their embeddings in a faiss index, save and load.

Index kinds (all on inner product of unit vectors, i.e. cosine similarity):

- ``"flat"``: exact search (``IndexFlatIP``), the reference.
- ``"hnsw"``: the default, a graph index (``IndexHNSWFlat``, ``M=32``,
  ``efSearch=128``), chosen on what ``benchmarks/kb_index.py`` measured against
  exact search (MiniLM embeddings of 20k WordNet definitions, 1 thread, one
  question at a time as ``ask`` does): recall@10 0.991 at 2.6x exact's
  queries/s, and with 200k more vectors 0.967 at 20x. IVF was faster but missed
  more (recall@10 0.69-0.87 at nprobe 8-32).
- ``"ivf"``: an inverted file (``IndexIVFFlat``, ``nlist ~ 4 sqrt(n)``,
  ``nprobe=16``), trained on the vectors themselves.

An index directory holds ``manifest.json`` (format, encoder, dimension,
chunking, index kind), ``chunks.jsonl`` (one chunk a line) and ``index.faiss``
(``faiss.write_index``). Nothing is pickled.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from jaxmm.errors import DataError, InputError
from jaxmm.kb.documents import Chunk

__all__ = ["INDEX_KINDS", "Hit", "KnowledgeBase", "build_index", "import_faiss"]

FORMAT = "jaxmm-kb"
VERSION = 1
MANIFEST, CHUNKS, INDEX = "manifest.json", "chunks.jsonl", "index.faiss"
INDEX_KINDS = ("flat", "hnsw", "ivf")
DEFAULT_INDEX = "hnsw"


def import_faiss() -> Any:
    try:
        import faiss
    except ImportError:
        raise InputError("The knowledge base needs faiss, which is not installed.",
                         hint="pip install 'jaxmm[kb]'") from None
    return faiss


def build_index(vectors: np.ndarray, kind: str = DEFAULT_INDEX, *, hnsw_m: int = 32,
                ef_search: int = 128, nprobe: int = 16) -> Any:
    """A faiss inner-product index of ``kind`` holding ``vectors`` ``(n, d)``."""
    faiss = import_faiss()
    vectors = np.ascontiguousarray(vectors, np.float32)
    n, d = vectors.shape
    if kind == "flat":
        index = faiss.IndexFlatIP(d)
    elif kind == "hnsw":
        index = faiss.IndexHNSWFlat(d, hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = 2 * ef_search
    elif kind == "ivf":
        nlist = max(1, min(int(4 * math.sqrt(n)), n // 39 or 1))  # faiss wants ~39 per list
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, nlist, faiss.METRIC_INNER_PRODUCT)
        index.train(vectors)
    else:
        raise InputError(f"Index kind {kind!r} is not one of {', '.join(INDEX_KINDS)}.")
    index.add(vectors)
    _set_search_params(faiss, index, ef_search, nprobe)
    return index


def _set_search_params(faiss: Any, index: Any, ef_search: int = 128, nprobe: int = 16) -> None:
    """Search-time knobs, which faiss does not keep in every index file."""
    if isinstance(index, faiss.IndexHNSW):
        index.hnsw.efSearch = ef_search
    elif isinstance(index, faiss.IndexIVF):
        index.nprobe = min(nprobe, index.nlist)


@dataclasses.dataclass(frozen=True)
class Hit:
    """One retrieved passage: its ``rank`` (0 = best), cosine ``score`` and ``chunk``."""

    rank: int
    score: float
    chunk: Chunk


class KnowledgeBase:
    """Chunks, their index and the encoder that embeds questions for it.

    Build one with :meth:`build` (or ``jaxmm kb build``), keep it with
    :meth:`save`, reopen it with :meth:`load`, query it with :meth:`search`.
    """

    def __init__(self, chunks: Sequence[Chunk], index: Any, manifest: dict[str, Any],
                 embedder: Any = None):
        self.chunks = list(chunks)
        self.index = index
        self.manifest = manifest
        self._embedder = embedder

    # -- build -----------------------------------------------------------
    @classmethod
    def build(cls, chunks: Sequence[Chunk], embedder: Any, *, kind: str = DEFAULT_INDEX,
              chunking: dict[str, Any] | None = None) -> KnowledgeBase:
        """Embeds ``chunks`` with ``embedder`` (a :class:`~jaxmm.kb.embed.TextEmbedder`)
        and indexes them."""
        if not chunks:
            raise InputError("No passages to index: the documents are empty.")
        vectors = embedder.encode([c.text for c in chunks])
        manifest = {"format": FORMAT, "version": VERSION,
                    "encoder": os.path.abspath(embedder.path),
                    "tokenizer": os.path.abspath(embedder.tokenizer_path),
                    "dim": int(vectors.shape[1]),
                    "max_length": embedder.max_length, "index": kind,
                    "chunking": dict(chunking or {}), "num_chunks": len(chunks),
                    "num_docs": len({c.doc_id for c in chunks})}
        return cls(chunks, build_index(vectors, kind), manifest, embedder)

    # -- query -----------------------------------------------------------
    @property
    def embedder(self) -> Any:
        """The manifest's encoder, loaded on first use."""
        if self._embedder is None:
            from jaxmm.kb.embed import TextEmbedder

            self._embedder = TextEmbedder(self.manifest["encoder"],
                                          tokenizer=self.manifest.get("tokenizer"),
                                          max_length=self.manifest.get("max_length", 256))
        return self._embedder

    def search_vectors(self, queries: np.ndarray, k: int = 5) -> list[list[Hit]]:
        """The ``k`` best chunks for each query vector (best first)."""
        queries = np.ascontiguousarray(np.atleast_2d(queries), np.float32)
        if queries.shape[1] != self.manifest["dim"]:
            raise InputError(f"Query vectors have {queries.shape[1]} dimensions but the index "
                             f"has {self.manifest['dim']}.",
                             hint="Embed the questions with the index's encoder.")
        scores, ids = self.index.search(queries, min(k, len(self.chunks)))
        return [[Hit(r, float(s), self.chunks[i]) for r, (s, i) in enumerate(zip(row_s, row_i))
                 if i >= 0] for row_s, row_i in zip(scores, ids)]

    def search(self, questions: str | Sequence[str], k: int = 5) -> Any:
        """The ``k`` best chunks for a question (a list of :class:`Hit`), or for each of
        a list of questions."""
        single = isinstance(questions, str)
        hits = self.search_vectors(self.embedder.encode([questions] if single else questions), k)
        return hits[0] if single else hits

    # -- save / load -----------------------------------------------------
    def save(self, directory: str | os.PathLike) -> str:
        faiss = import_faiss()
        directory = os.fspath(directory)
        os.makedirs(directory, exist_ok=True)
        faiss.write_index(self.index, os.path.join(directory, INDEX))
        with open(os.path.join(directory, CHUNKS), "w", encoding="utf-8") as f:
            for c in self.chunks:
                f.write(json.dumps(c.to_json(), ensure_ascii=False) + "\n")
        with open(os.path.join(directory, MANIFEST), "w", encoding="utf-8") as f:
            json.dump(self.manifest, f, indent=2)
        return directory

    @classmethod
    def load(cls, directory: str | os.PathLike, *, embedder: Any = None) -> KnowledgeBase:
        """Reopens a saved index directory; every problem is a one-line error."""
        faiss = import_faiss()
        directory = os.fspath(directory)
        fix = "Rebuild it with 'jaxmm kb build --docs DIR --out DIR --encoder MODEL'."
        if not os.path.isdir(directory):
            raise InputError(f"Index directory {directory!r} does not exist.", hint=fix)
        for name in (MANIFEST, CHUNKS, INDEX):
            if not os.path.isfile(os.path.join(directory, name)):
                raise DataError(f"Index directory {directory!r} has no {name}.", hint=fix)
        try:
            with open(os.path.join(directory, MANIFEST), encoding="utf-8") as f:
                manifest = json.load(f)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise DataError(f"{os.path.join(directory, MANIFEST)} is not valid JSON ({e}).",
                            hint=fix) from None
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
            raise DataError(f"{os.path.join(directory, MANIFEST)} is not a jaxmm knowledge-base "
                            "manifest.", hint=fix)
        chunks = []
        path = os.path.join(directory, CHUNKS)
        with open(path, encoding="utf-8") as f:
            for line_no, line in enumerate(f, 1):
                try:
                    chunks.append(Chunk.from_json(json.loads(line)))
                except (json.JSONDecodeError, KeyError, TypeError) as e:
                    raise DataError(f"{path} line {line_no} is not a chunk ({e}).",
                                    hint=fix) from None
        try:
            index = faiss.read_index(os.path.join(directory, INDEX))
        except RuntimeError as e:
            reason = str(e).strip().splitlines()[-1][:200] if str(e).strip() else "unreadable"
            raise DataError(f"{os.path.join(directory, INDEX)} is not a faiss index ({reason}).",
                            hint=fix) from None
        if index.ntotal != len(chunks) or index.d != manifest.get("dim"):
            raise DataError(f"Index directory {directory!r} is inconsistent: index.faiss holds "
                            f"{index.ntotal} vectors of {index.d} dims, chunks.jsonl "
                            f"{len(chunks)} chunks, the manifest {manifest.get('dim')} dims.",
                            hint=fix)
        _set_search_params(faiss, index)
        return cls(chunks, index, manifest, embedder)
