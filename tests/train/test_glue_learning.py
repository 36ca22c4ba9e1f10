"""GLUE-style sentence classification learns from real text: ``configs/glue_bert.py`` (the
classification task every GLUE task runs through) trains a tiny BERT from scratch to tell a
WordNet definition's part of speech (noun, verb, adjective or adverb) from its words, on a
table built with ``jaxmm data build-text-labels``; ``jaxmm eval`` scores held-out
definitions far above the majority class."""

import json
from collections import Counter, defaultdict

import pytest

from jaxmm.data.local import build_local
from tests.train.helpers import QUICK_CLI, train_and_eval_cli

PARTS = ("noun", "verb", "adj", "adv")


def definitions(per_part: int) -> dict[str, list[str]]:
    """The first ``per_part`` definitions (the gloss before its examples) of each part of
    speech, in WordNet file order."""
    from jaxmm.data.corpora import wordnet_glosses

    out = {}
    for part in PARTS:
        glosses = wordnet_glosses(parts=(part,))
        step = max(1, len(glosses) // per_part)  # spread over the whole file
        out[part] = [g.split(";")[0].strip() for g in glosses[::step][:per_part]]
    return out


@pytest.mark.slow
@pytest.mark.heavy
def test_bert_learns_part_of_speech_of_wordnet_definitions(tmp_path, capsys):
    from jaxmm.data.tokenizers import train_tokenizer

    defs = definitions(900)
    rows = {"train": [], "valid": []}
    for part, texts in defs.items():
        rows["train"] += [{"text": t, "label": part} for t in texts[:800]]
        rows["valid"] += [{"text": t, "label": part} for t in texts[800:]]
    root = tmp_path / "pos"
    root.mkdir()
    for name, items in rows.items():
        (root / f"{name}.jsonl").write_text("\n".join(json.dumps(r) for r in items) + "\n")
    data_dir = str(tmp_path / "data")
    build_local("text-labels", str(root), {"train": {"input": "train.jsonl"},
                                           "validation": {"input": "valid.jsonl"}},
                data_dir, name="pos", classes=PARTS)
    (tmp_path / "corpus.txt").write_text("\n".join(t for ts in defs.values() for t in ts))
    tok = train_tokenizer("wordpiece", str(tmp_path / "corpus.txt"), 3000,
                          out_dir=str(tmp_path / "wp"))
    config = (f"glue_bert.py:data=text_labels/pos,labels=4,size=tiny,seq_len=24,steps=300,"
              f"batch=32,vocab={tok.vocab_size},tokenizer={tmp_path / 'wp'},data_dir={data_dir}")
    overrides = [*QUICK_CLI, "--config.optimizer.learning_rate=1e-3",
                 "--config.eval.num_batches=None", "--config.checkpoint.every_steps=300"]
    result = train_and_eval_cli(config, str(tmp_path / "run"), overrides, capsys)
    metrics = result["metrics"]
    # baselines: the majority class, and each definition's first word's commonest class
    first = defaultdict(Counter)
    for r in rows["train"]:
        first[r["text"].split()[0]][r["label"]] += 1
    guess = [first[r["text"].split()[0]].most_common(1)[0][0] if first[r["text"].split()[0]]
             else "noun" for r in rows["valid"]]
    first_word = sum(g == r["label"] for g, r in zip(guess, rows["valid"])) / len(guess)
    print(f"part of speech of WordNet definitions: accuracy {metrics['cls/accuracy']:.3f}, "
          f"macro F1 {metrics['cls/macro_f1']:.3f}; majority 0.250, first-word rule "
          f"{first_word:.3f}")
    assert metrics["cls/accuracy"] > 0.6 and metrics["cls/macro_f1"] > 0.55, metrics
