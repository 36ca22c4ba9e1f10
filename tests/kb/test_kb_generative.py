"""The generative reader: the prompt of numbered passages, greedy answers equal to
transformers' GPT-2 ``generate`` on the same weights, prompt fitting and citations."""

import numpy as np
import pytest

from jaxmm import kb
from jaxmm.data import tokenizers

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
PASSAGES = [
    "Mars is the fourth planet from the Sun and is often called the Red Planet.",
    "The piano is a keyboard instrument invented in Italy around 1700 by Cristofori.",
    "Bread is a staple food prepared from a dough of flour and water.",
]


def test_generative_reader_matches_transformers_greedy_and_cites(tmp_path):
    folder = str(tmp_path / "gpt")
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(PASSAGES * 3 + [kb.generative.PROMPT] * 3) + "\n")
    tok = tokenizers.train_tokenizer("bpe", str(corpus), 300, out_dir=folder)
    config = transformers.GPT2Config(vocab_size=tok.vocab_size, n_positions=512, n_embd=32,
                                     n_layer=2, n_head=2, bos_token_id=tok.eos_token_id,
                                     eos_token_id=tok.eos_token_id,
                                     pad_token_id=tok.pad_token_id, initializer_range=0.5)
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(config).eval()
    model.save_pretrained(folder)
    hits = [kb.Hit(r, 0.9 - r / 10, kb.Chunk(r, r, f"doc{r}.txt", "t", 0, len(p), p))
            for r, p in enumerate(PASSAGES)]
    question = "Which planet is red?"

    reader = kb.GenerativeReader(folder, max_prompt_tokens=256, max_new_tokens=8)
    answer = reader.read(question, hits)
    assert answer.prompt == kb.build_prompt(question, hits)
    assert "[2] (doc1.txt) The piano" in answer.prompt and answer.prompt.endswith("Answer:")
    ids = tok.encode([answer.prompt], padding=False, truncation=False)["input_ids"][0]
    with torch.no_grad():
        ref = model.generate(torch.tensor(ids[None].astype(np.int64)), max_new_tokens=8,
                             do_sample=False, pad_token_id=tok.pad_token_id,
                             attention_mask=torch.ones((1, len(ids)), dtype=torch.long))
    new = ref[0, len(ids):].tolist()
    assert answer.token_ids[:len(new)] == tuple(new) and len(new) == 8
    assert answer.text == tok.decode(new, skip_special_tokens=True).strip() and answer.text
    if not answer.cited_explicitly:  # a random model names no [n]: all passages are credited
        assert answer.citations == answer.hits == tuple(hits)

    # A prompt budget that holds two passages drops the lowest-ranked one.
    two = len(tok.encode([kb.build_prompt(question, hits[:2])], padding=False,
                         truncation=False)["input_ids"][0])
    short = kb.GenerativeReader(folder, max_prompt_tokens=two, max_new_tokens=2)
    assert short.read(question, hits).hits == tuple(hits[:2])
    # Citations are the [n] the answer names, within the prompt's passages.
    short.tokenizer.decode = lambda *a, **k: "Mars [1], see also [2] and [7]"
    cited = short.read(question, hits)
    assert cited.cited_explicitly and cited.citations == tuple(hits[:2])
