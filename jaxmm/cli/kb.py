"""``jaxmm kb build|ask``: question answering over a knowledge base.

``jaxmm kb build --docs DIR --out IDX --encoder MODEL`` chunks the ``.txt``/``.md``
files of ``DIR`` (or a tfds text dataset: ``--tfds NAME --split S --feature F``),
embeds the chunks with the text encoder ``MODEL`` (a Hugging Face BERT folder
such as all-MiniLM-L6-v2, or a jaxmm model folder) and writes a faiss index
directory. ``jaxmm kb ask IDX "question" [--k 5]`` prints the best passages with
their cosine scores and citations ``[n] source (chunk c, chars a-b)``; with
``--reader QA_MODEL`` (a ``bert_qa`` export or a Hugging Face
``BertForQuestionAnswering`` folder) it first prints the answer span read out of
those passages and the citation of the passage it came from; with
``--generator LM`` (GPT-2, Llama or T5 folder) a language model writes the
answer from a prompt holding the numbered passages, citing them as ``[n]``.
"""

from __future__ import annotations

import argparse
import json
import os
import textwrap

from jaxmm.cli.failures import command
from jaxmm.errors import InputError

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="jaxmm kb", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="chunk, embed and index documents")
    src = b.add_mutually_exclusive_group(required=True)
    src.add_argument("--docs", help="folder of .txt/.md files (searched recursively)")
    src.add_argument("--tfds", metavar="NAME", help="a prepared tfds dataset (no download)")
    b.add_argument("--split", default="train", help="tfds split (with --tfds)")
    b.add_argument("--feature", default="text", help="tfds text feature (with --tfds)")
    b.add_argument("--title-feature", help="tfds feature holding a title (with --tfds)")
    b.add_argument("--data-dir", help="tfds data_dir (with --tfds)")
    b.add_argument("--limit", type=int, help="first N tfds examples only")
    b.add_argument("--out", required=True, help="index directory to write")
    b.add_argument("--encoder", required=True,
                   help="text encoder folder (HF BERT such as all-MiniLM-L6-v2, or jaxmm)")
    b.add_argument("--tokenizer", help="tokenizer folder (default: the encoder's)")
    b.add_argument("--unit", choices=["words", "tokens"], default="words",
                   help="chunk by whitespace words or by tokenizer tokens")
    b.add_argument("--chunk-size", type=int, default=128, help="units per chunk")
    b.add_argument("--overlap", type=int, default=32, help="units shared by neighbour chunks")
    b.add_argument("--index", choices=["hnsw", "flat", "ivf"], default="hnsw",
                   help="faiss index: hnsw (default, approximate), flat (exact), ivf")
    b.add_argument("--max-length", type=int, default=256, help="encoder tokens per chunk")
    b.add_argument("--batch-size", type=int, default=32)
    a = sub.add_parser("ask", help="retrieve (and read) the passages that answer a question")
    a.add_argument("index", help="index directory from 'jaxmm kb build'")
    a.add_argument("question")
    a.add_argument("--k", type=int, default=5, help="passages to retrieve")
    a.add_argument("--encoder", help="question encoder folder (default: the manifest's)")
    a.add_argument("--reader", help="extractive-QA model folder: answer with a cited span")
    a.add_argument("--reader-tokenizer", help="the reader's tokenizer (default: its folder)")
    a.add_argument("--reader-max-length", type=int, default=384,
                   help="tokens per (question, passage) window")
    a.add_argument("--generator", help="GPT-2/Llama/T5 folder: write the answer from the "
                                       "numbered passages")
    a.add_argument("--max-new-tokens", type=int, default=48, help="generator answer length")
    a.add_argument("--max-prompt-tokens", type=int, default=512,
                   help="generator prompt budget (passages are dropped from the last)")
    a.add_argument("--json", action="store_true", help="print one JSON object")
    return p


def _build(args: argparse.Namespace) -> int:
    from jaxmm import kb

    if args.docs:
        docs = kb.load_folder(args.docs)
        source = {"docs": os.path.abspath(args.docs)}
    else:
        docs = kb.load_tfds(args.tfds, args.split, args.feature, title_feature=args.title_feature,
                            data_dir=args.data_dir, limit=args.limit)
        source = {"tfds": args.tfds, "split": args.split, "feature": args.feature}
    if not os.path.isdir(args.encoder):
        raise InputError(f"Encoder folder {args.encoder!r} (--encoder) does not exist.",
                         hint="Pass a Hugging Face BERT folder or a jaxmm model folder.")
    embedder = kb.TextEmbedder(args.encoder, tokenizer=args.tokenizer,
                               max_length=args.max_length, batch_size=args.batch_size)
    chunking = {"unit": args.unit, "size": args.chunk_size, "overlap": args.overlap, **source}
    chunks = kb.chunk_documents(docs, size=args.chunk_size, overlap=args.overlap,
                                unit=args.unit, tokenizer=embedder.tokenizer)
    base = kb.KnowledgeBase.build(chunks, embedder, kind=args.index, chunking=chunking)
    base.save(args.out)
    print(f"Indexed {len(chunks)} chunks of {len(docs)} documents ({args.index}, "
          f"{base.manifest['dim']} dims) into {args.out}")
    return 0


def _ask(args: argparse.Namespace) -> int:
    from jaxmm import kb

    if args.k < 1:
        raise InputError(f"--k must be >= 1; got {args.k}.")
    base = kb.KnowledgeBase.load(args.index)
    if args.encoder:
        base.manifest["encoder"] = base.manifest["tokenizer"] = args.encoder
    elif not os.path.isdir(base.manifest["encoder"]):
        raise InputError(f"The index's encoder {base.manifest['encoder']!r} is gone.",
                         hint="Pass the same encoder folder with --encoder.")
    if args.reader and args.generator:
        raise InputError("Pass --reader (extractive) or --generator (generative), not both.")
    for flag, folder in (("--reader", args.reader), ("--generator", args.generator)):
        if folder and not os.path.isdir(folder):
            raise InputError(f"Model folder {folder!r} ({flag}) does not exist.",
                             hint="Pass a Hugging Face or jaxmm model folder.")
    hits = base.search(args.question, k=args.k)
    answer = None
    if args.reader:
        reader = kb.ExtractiveReader(args.reader, tokenizer=args.reader_tokenizer,
                                     max_length=args.reader_max_length,
                                     stride=min(128, args.reader_max_length // 4))
        answer = reader.read(args.question, hits)
    generated = None
    if args.generator:
        writer = kb.GenerativeReader(args.generator, max_prompt_tokens=args.max_prompt_tokens,
                                     max_new_tokens=args.max_new_tokens)
        generated = writer.read(args.question, hits)
    rows = [{"citation": f"[{h.rank + 1}]", "score": round(h.score, 4),
             "source": h.chunk.source, "chunk": h.chunk.chunk_id, "start": h.chunk.start,
             "end": h.chunk.end, "text": h.chunk.text} for h in hits]
    cited = None if answer is None else {
        "text": answer.text, "score": round(answer.score, 4), "citation": answer.citation,
        "source": answer.hit.chunk.source, "start": answer.start, "end": answer.end}
    if generated is not None:
        cited = {"text": generated.text, "citations": [f"[{h.rank + 1}]" for h in
                                                       generated.citations],
                 "cited_explicitly": generated.cited_explicitly,
                 "passages_in_prompt": len(generated.hits)}
    if args.json:
        answered = args.reader or args.generator
        print(json.dumps({"question": args.question, **({"answer": cited} if answered else {}),
                          "passages": rows}, ensure_ascii=False))
        return 0
    if generated is not None:
        mark = "" if generated.cited_explicitly else " (cites none: from passages)"
        print(f"Answer: {generated.text} {' '.join(cited['citations'])}{mark}\n")
    if args.reader:
        print(f"Answer: {cited['text']} {cited['citation']} ({cited['source']}, chars "
              f"{cited['start']}-{cited['end']})" if cited else "Answer: (no span found)")
        print()
    for r in rows:
        print(f"{r['citation']} {r['score']:.4f}  {r['source']} (chunk {r['chunk']}, chars "
              f"{r['start']}-{r['end']})")
        print(textwrap.indent(textwrap.fill(" ".join(r["text"].split()), 96), "    "))
    return 0


@command("jaxmm kb")
def main(argv: list[str]) -> int:
    """``jaxmm kb`` entry point."""
    args = _parser().parse_args(argv)
    return _build(args) if args.command == "build" else _ask(args)
