"""Text-to-text learns on real text: T5 (configs/t5_text2text.py, ``seq2seq`` task) trained
and evaluated through ``jaxmm train`` / ``jaxmm eval`` on text from WordNet glosses, scored
by the ``text2text`` evaluator's BLEU (sacrebleu) on 128 held-out examples.

The task: write a run of 4-6 consecutive words of a WordNet gloss in reverse order ("of
usually red flowers" -> "flowers red usually of"). Nobody wrote the text for the test:
the runs are WordNet's own wording, cut where a word falls outside the 300 commonest gloss
words, which gives ~21k distinct runs over a small vocabulary, so the tiny model (width
64) sees each word often and cannot memorise the pairs. Reversal needs no knowledge that a
thousand CPU steps (lr 3e-3) cannot give, only copying the word before the one just
written, which attention learns; real text brings a real vocabulary with Zipfian word frequencies,
sub-word pieces and real lengths. (Whole definitions made of the 1,000 commonest words, 3.8k
of them, were memorised instead: BLEU 21 after 800 steps, eval loss above train loss.)
The data is stored in the catalog's ``cnn_dailymail`` format (``article`` ->
``highlights``) and read by that preset's pipeline. The trivial answers are the
baselines: copying the source (every word right, in the wrong order) and the most common
training target.
"""

import collections
import json
import os
import re

import numpy as np
import pytest

from jaxmm.data.corpora import WORDNET_DIR, store_rows, wordnet_glosses
from jaxmm.evaluate.evaluators.text_generation import bleu_score
from tests.train.helpers import CACHE, ROOT, run_cli

SRC_LEN = 16
VALIDATION = 128


def _word_runs(common: int = 300, longest: int = 6) -> list[str]:
    """Runs of 4-``longest`` consecutive words of WordNet glosses, all among the
    ``common`` most frequent gloss words (longer runs cut), unique, shuffled (seed 0)."""
    texts = [re.findall(r"[a-z]+|[^a-z\s]", g.lower()) for g in wordnet_glosses()]
    counts = collections.Counter(w for t in texts for w in t if w.isalpha())
    vocab = {w for w, _ in counts.most_common(common)}
    out, run = set(), []
    for word in (w for t in texts for w in [*t, "."]):
        if word in vocab:
            run.append(word)
            continue
        out.update(" ".join(run[i:i + longest]) for i in range(0, len(run), longest)
                   if len(run[i:i + longest]) >= 4)
        run = []
    kept = sorted(out)
    np.random.default_rng(0).shuffle(kept)
    return kept


def _reverse(text: str) -> str:
    return " ".join(text.split()[::-1])


@pytest.mark.slow
@pytest.mark.heavy
@pytest.mark.skipif(not os.path.isfile(os.path.join(WORDNET_DIR, "data.noun")),
                    reason="Debian wordnet-base is not installed")
def test_t5_learns_to_reverse_wordnet_text_through_the_cli(tmp_path):
    from jaxmm.data.tokenizers import train_tokenizer

    runs = _word_runs()
    train, valid = runs[VALIDATION:], runs[:VALIDATION]
    rows = {split: [{"article": d, "highlights": _reverse(d), "id": str(i)}
                    for i, d in enumerate(texts)]
            for split, texts in (("train", train), ("validation", valid))}
    data_dir = str(tmp_path / "data")
    store_rows(data_dir, "cnn_dailymail", rows, name="wordnet_reversed")
    (tmp_path / "corpus.txt").write_text("\n".join(train) + "\n")
    tok = train_tokenizer("sentencepiece", str(tmp_path / "corpus.txt"), 400,
                          out_dir=str(tmp_path / "tok"))  # <pad> 0, <s> 2, </s> 3
    pieces = tok.encode(runs, max_length=64, padding=False, truncation=False)["input_ids"]
    longest = max(map(len, pieces))
    assert longest <= SRC_LEN, longest  # nothing is cut

    config = (f"{ROOT}/configs/t5_text2text.py:size=tiny,data=cnn_dailymail,src_len={SRC_LEN},"
              f"tgt_len={SRC_LEN},prefix=none,metric=bleu,start=0,eos=3,pad=0,beams=2,"
              f"vocab={tok.vocab_size},tokenizer={tmp_path / 'tok'},steps=1000,batch=32,"
              f"data_dir={data_dir}")
    overrides = ["--config.data.name=wordnet_reversed", "--config.optimizer.learning_rate=3e-3",
                 "--config.eval.every_steps=0",
                 "--config.eval.at_end=false", "--config.log.every_steps=50",
                 "--config.log.tensorboard=false", "--config.log.progress=false",
                 "--config.checkpoint.export_params=false",
                 "--config.checkpoint.best_metric=None",
                 f"--config.eval.num_batches={VALIDATION // 32}",
                 f"--config.eval.evaluators.text.num_batches={VALIDATION // 32}",
                 f"--config.compilation_cache_dir={CACHE}"]
    workdir = str(tmp_path / "run")
    for command in ("train", "eval"):
        res = run_cli(command, "--config", config, "--workdir", workdir, *overrides, devices=1)
        assert res.returncode == 0, res.stderr[-3000:]
    metrics = json.loads(res.stdout)["metrics"]
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        losses = [r["train/loss"] for r in map(json.loads, f) if "train/loss" in r]

    # trivial answers: the source copied, and the most common training target
    refs = [[_reverse(d)] for d in valid]
    common = collections.Counter(_reverse(d) for d in train).most_common(1)[0][0]
    baselines = {"copy the source": bleu_score(valid, refs)["bleu"],
                 "most common target": bleu_score([common] * len(valid), refs)["bleu"]}
    baseline = max(baselines.values())
    print("train losses", [round(x, 2) for x in losses])
    print(f"reversed WordNet word runs ({len(train)} train, {len(valid)} validation): "
          f"BLEU {metrics['text/bleu']:.1f} vs best trivial baseline {baseline:.1f} "
          f"({', '.join(f'{k} {v:.1f}' for k, v in baselines.items())})")
    assert metrics["text/num_examples"] == len(valid)
    assert metrics["text/bleu"] > baseline + 25, (metrics, baselines)
    assert np.mean(losses[-2:]) < 0.5 * losses[0], losses

