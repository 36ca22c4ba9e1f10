"""jaxmm.data.corpora: WordNet nouns and SQuAD-style questions over them, and rows stored
in a catalog dataset's features, read back by that preset's pipeline."""

import os
import re

import numpy as np
import pytest

from jaxmm.data import corpora, make_iterator
from jaxmm.data.catalog import data_config
from jaxmm.data.pipeline import MASK_KEY

needs_wordnet = pytest.mark.skipif(
    not os.path.isfile(os.path.join(corpora.WORDNET_DIR, "data.noun")),
    reason="Debian wordnet-base is not installed")


@needs_wordnet
def test_wordnet_nouns_are_entries_of_the_noun_file():
    nouns = corpora.wordnet_nouns(limit=50)
    assert len(nouns) == 50 and len({w for w, _, _ in nouns}) == 50
    with open(os.path.join(corpora.WORDNET_DIR, "data.noun"), encoding="utf-8") as f:
        lines = f.read().splitlines()
    for word, definition, example in nouns:
        assert re.fullmatch(r"[a-z]{3,12}", word)
        assert all(3 <= len(t.split()) <= 8 for t in (definition, example))
        # the synset line names the word and starts its gloss with the definition, then
        # the example (in quotes, case as written)
        line = next(x for x in lines if f" {word} " in x.split("|")[0]
                    and x.split("|", 1)[1].strip().startswith(definition + ";"))
        assert f'"{example}' in line.lower()
    assert ("clamber", "an awkward climb", "reaching the crest was a real clamber") in \
        corpora.wordnet_nouns(max_words=8)


@needs_wordnet
def test_wordnet_squad_answers_are_at_answer_start_and_follow_the_question():
    nouns = corpora.wordnet_nouns(limit=200)
    rows = corpora.wordnet_squad(nouns, 40, seed=3, distractors=4)
    assert rows == corpora.wordnet_squad(nouns, 40, seed=3, distractors=4)
    by_word = {w: (d, e) for w, d, e in nouns}
    definitions = {d for _, d, _ in nouns}
    kinds = set()
    for row in rows:
        (answer,), (start,) = row["answers"]["text"], row["answers"]["answer_start"]
        assert row["context"][start:start + len(answer)] == answer
        word = row["question"].removeprefix("what does ").removeprefix(
            "what is an example of ").split()[0].rstrip("?")
        definition, example = by_word[word]
        kinds.add(row["question"].startswith("what does"))
        assert answer == (definition if row["question"].startswith("what does") else example)
        # the entry and 4 other nouns' definitions, one sentence each
        others = [s for s in row["context"].split(". ") if s.rstrip(".") in definitions
                  and s.rstrip(".") != definition]
        assert len(others) == 4, row["context"]
    assert kinds == {True, False}


def test_store_rows_reads_back_through_the_catalog_presets(tmp_path):
    from jaxmm.data.tokenizers import train_tokenizer

    data_dir = str(tmp_path / "data")
    colours = ["red", "green", "blue", "yellow", "purple", "orange"]
    squad = [{"id": f"q{i}", "title": "t", "context": f"the {c} circle is left of the square",
              "question": "what circle is left?",
              "answers": {"text": [f"the {c} circle"], "answer_start": [0]}}
             for i, c in enumerate(colours)]
    corpora.store_rows(data_dir, "squad", {"train": squad, "validation": squad[:2]})
    summaries = [{"article": f"a {c} square is above a {c} circle", "highlights": f"{c} shapes",
                  "id": str(i)} for i, c in enumerate(colours)]
    folder = corpora.store_rows(data_dir, "cnn_dailymail", {"validation": summaries},
                                name="mine")
    assert folder == os.path.join(data_dir, "mine", "1.0.0")
    (tmp_path / "text.txt").write_text("\n".join(
        [r["context"] + " " + r["question"] for r in squad] + [r["article"] for r in summaries]
        + [r["highlights"] for r in summaries]))
    tok = train_tokenizer("wordpiece", str(tmp_path / "text.txt"), 100, min_frequency=1)

    kw = dict(shuffle=False, repeat=False, process_index=0, process_count=1, tokenizer=tok)
    cfg = data_config("squad", data_dir=data_dir, max_length=24, stride=4)
    with make_iterator(cfg, split="validation", batch_size=2, **kw) as it:
        batch = next(it)
    assert batch["id"].tolist() == [b"q0", b"q1"]
    assert batch["answers/text"][:, 0].tolist() == [b"the red circle", b"the green circle"]
    cfg = data_config("cnn_dailymail", data_dir=data_dir, max_length=12, target_length=6,
                      prefix="")
    cfg.name = "mine"
    with make_iterator(cfg, split="validation", batch_size=4, **kw) as it:
        batches = list(it)
    keep = np.concatenate([b[MASK_KEY] for b in batches]).astype(bool)
    refs = [r.decode() for b in batches for r in b["references"]]
    assert [r for r, k in zip(refs, keep) if k] == [r["highlights"] for r in summaries]
    labels = np.concatenate([b["labels"] for b in batches])[keep]
    assert tok.decode(labels) == [r["highlights"] for r in summaries]  # -100 dropped


def test_store_rows_refuses_an_unknown_layout(tmp_path):
    with pytest.raises(ValueError, match="Unknown layout 'wmt'"):
        corpora.store_rows(str(tmp_path), "wmt", {"train": []})
