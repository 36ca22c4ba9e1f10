"""Question answering over a knowledge base: documents -> chunks -> dense index.

::

    from jaxmm import kb

    docs = kb.load_folder("notes/")                     # or kb.load_tfds(name, split, feature)
    chunks = kb.chunk_documents(docs, size=128, overlap=32)
    embedder = kb.TextEmbedder(minilm_dir)              # any jaxmm text encoder folder
    base = kb.KnowledgeBase.build(chunks, embedder)     # faiss HNSW; kind="flat" is exact
    base.save("idx/")
    hits = kb.KnowledgeBase.load("idx/").search("a question", k=5)
    for hit in hits:
        print(hit.score, hit.chunk.source, hit.chunk.text)
    reader = kb.ExtractiveReader(qa_model_dir)          # bert_qa export or HF QA folder
    answer = reader.read("a question", hits)            # answer.text, answer.citation
    writer = kb.GenerativeReader(gpt2_or_t5_dir)        # passages [n] in the prompt
    answer = writer.read("a question", hits)            # answer.text, answer.citations

The command line is the same: ``jaxmm kb build`` and ``jaxmm kb ask``.
"""

from jaxmm.kb.documents import Chunk, Document, chunk_documents, load_folder, load_tfds
from jaxmm.kb.embed import TextEmbedder, mean_pool
from jaxmm.kb.generative import GeneratedAnswer, GenerativeReader, build_prompt
from jaxmm.kb.index import INDEX_KINDS, Hit, KnowledgeBase, build_index
from jaxmm.kb.reader import Answer, ExtractiveReader

__all__ = ["INDEX_KINDS", "Answer", "Chunk", "Document", "ExtractiveReader", "GeneratedAnswer",
           "GenerativeReader", "Hit", "KnowledgeBase", "TextEmbedder", "build_index",
           "build_prompt", "chunk_documents", "load_folder", "load_tfds", "mean_pool"]
