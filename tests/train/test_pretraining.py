"""BERT pre-training (``pretraining`` task, ``configs/mlm_bert.py:nsp=true``): the joint
MLM + NSP loss against NumPy, learning on the synthetic sentence pairs, and a tiny BERT
learning next-sentence prediction on documents of real WordNet text through ``jaxmm
train`` / ``jaxmm eval``, far above the majority answer."""

from __future__ import annotations

import json
import os

import jax
import numpy as np
import pytest

from jaxmm.config import ConfigError
from jaxmm.models import build
from jaxmm.train import run
from jaxmm.train.synthetic import make_batch
from jaxmm.train.tasks import get_task
from tests.train.helpers import CACHE, QUICK_CLI, ROOT, run_cli, tiny_config

MLM_CONFIG = os.path.join(ROOT, "configs", "mlm_bert.py")


def _log_softmax(x):
    x = np.asarray(x, np.float64)
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def test_loss_is_mean_mlm_plus_mean_nsp_as_numpy_computes_it():
    model = build("bert_pretraining", "tiny", vocab_size=64, num_layers=1)
    task = get_task("pretraining").from_config({"mask_token_id": 3, "nsp_weight": 0.5}, model)
    batch = make_batch("sentence_pairs", 0, 6, vocab_size=64)
    batch["example_mask"] = np.asarray([1, 1, 1, 1, 1, 0], np.float32)
    variables = task.init(jax.random.key(0), batch)
    batch = task.prepare(batch, jax.random.key(2), train=True)
    out = task.loss(variables, batch, train=False, rng=jax.random.key(1))
    pred = model.apply(variables, batch["input_ids"], batch["attention_mask"],
                       batch["token_type_ids"])
    labels = np.asarray(batch["labels"])
    keep = (labels != -100) & (batch["example_mask"][:, None] > 0)
    assert keep.sum() > 3
    mlm = -np.take_along_axis(_log_softmax(pred.prediction_logits),
                              np.where(keep, labels, 0)[..., None], -1)[..., 0][keep].mean()
    rows = batch["example_mask"] > 0
    nsp = -_log_softmax(pred.seq_relationship_logits)[
        np.arange(6), batch["next_sentence_label"]][rows].mean()
    assert float(out.loss / out.weight) == pytest.approx(mlm + 0.5 * nsp, rel=1e-5)
    assert float(out.metrics["nsp_loss"][0] / out.metrics["nsp_loss"][1]) == pytest.approx(
        nsp, rel=1e-5)
    assert float(out.metrics["nsp_accuracy"][1]) == 5
    del batch["next_sentence_label"]
    with pytest.raises(ConfigError, match="next_sentence_label"):
        task.loss(variables, batch, train=False, rng=jax.random.key(1))


def test_pretraining_learns_synthetic_sentence_pairs(tmp_path):
    summary = run(tiny_config("pretraining", {
        "model.name": "bert_pretraining", "model.size": "tiny", "num_steps": 120,
        "model.config": {"vocab_size": 64, "num_layers": 2, "d_model": 64, "mlp_dim": 128},
        "task.mask_token_id": 3, "eval.at_end": True, "eval.num_batches": 4,
        "mesh.data": 8, "mesh.fsdp": 1}), str(tmp_path / "run"))
    ev = summary["eval"]
    # B continues A's arithmetic sequence or is another sequence: far above a coin flip
    assert ev["nsp_accuracy"] > 0.8, ev
    assert ev["accuracy"] > 2 / 60 and ev["perplexity"] == pytest.approx(
        np.exp(ev["mlm_loss"]), rel=1e-6)


# -- learning on real text ----------------------------------------------------------

def wordnet_documents() -> list[str]:
    """One two-sentence document per WordNet noun (``jaxmm.data.corpora.wordnet_nouns``):
    "clamber means an awkward climb. for example, reaching the crest was a real
    clamber." The true next sentence is the noun's own usage example; a random one is
    another noun's definition or usage example."""
    from jaxmm.data.corpora import wordnet_nouns

    return [f"{word} means {definition}. for example, {example}."
            for word, definition, example in wordnet_nouns()]


@pytest.mark.slow
@pytest.mark.heavy
def test_tiny_bert_learns_next_sentence_prediction_on_wordnet(tmp_path):
    """Documents of a noun's WordNet definition and usage (:func:`wordnet_documents`);
    the sentence pairs are built inside the tf.data pipeline of ``jaxmm train`` (B the
    true continuation, or from another document of the window; as in BERT, a chunk left
    with one sentence is always paired at random, so about 2/3 of the pairs are random);
    ``jaxmm eval`` scores the held-out documents' pairs. NSP accuracy must be far above
    the majority label."""
    from jaxmm.data.local import build_local
    from jaxmm.data.tokenizers import train_tokenizer

    docs = wordnet_documents()
    split = int(0.85 * len(docs))
    root = tmp_path / "docs"
    root.mkdir()
    for name, rows in (("train", docs[:split]), ("valid", docs[split:])):
        with open(root / f"{name}.jsonl", "w", encoding="utf-8") as f:
            f.writelines(json.dumps({"text": d}) + "\n" for d in rows)
    data_dir = str(tmp_path / "data")
    build_local("text", str(root), {"train": {"input": "train.jsonl"},
                                    "validation": {"input": "valid.jsonl"}},
                data_dir, name="wn")
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(docs))
    tok = train_tokenizer("wordpiece", [str(corpus)], vocab_size=3000,
                          out_dir=str(tmp_path / "wp"))
    config = (f"{MLM_CONFIG}:tiny,nsp=true,data=text/wn,steps=400,batch=32,seq_len=32,"
              f"tokenizer={tmp_path / 'wp'},vocab={tok.vocab_size},mask={tok.mask_token_id},"
              f"data_dir={data_dir}")
    workdir = str(tmp_path / "run")
    overrides = [*QUICK_CLI, "--config.eval.num_batches=40", "--config.log.every_steps=50",
                 "--config.optimizer.learning_rate=1e-3", "--config.log.mfu=false",
                 "--config.checkpoint.every_steps=400", f"--config.compilation_cache_dir={CACHE}"]
    for command in ("train", "eval"):
        done = run_cli(command, "--config", config, "--workdir", workdir, *overrides, devices=1)
        assert done.returncode == 0, done.stderr[-3000:]
    metrics = json.loads(done.stdout)["metrics"]
    # the majority label of the held-out rows, from the same pipeline
    from jaxmm.data import make_iterator
    from jaxmm.data.catalog import data_config
    from jaxmm.data.tokenizers import load

    cfg = data_config("text/wn", task="pretraining", data_dir=data_dir, max_length=32)
    with make_iterator(cfg, split="validation", batch_size=32, shuffle=False, repeat=False,
                       process_index=0, process_count=1, tokenizer=load(str(tmp_path / "wp"))
                       ) as it:
        labels = np.concatenate([b["next_sentence_label"] for b in it])
    majority = max(labels.mean(), 1 - labels.mean())
    print(f"NSP on WordNet documents: accuracy {metrics['nsp_accuracy']:.3f} vs majority "
          f"{majority:.3f}; masked-token accuracy {metrics['accuracy']:.3f}; "
          f"{len(labels)} held-out pairs")
    assert metrics["nsp_accuracy"] > majority + 0.1, (metrics, majority)
