"""NER training: the token_classification task's loss against NumPy, the classification
task's refusal of per-token labels, and one learning run through ``jaxmm train`` and
``jaxmm eval`` on CoNLL files of entity data made from WordNet glosses. (The conll2003
preset under tfds mock data: tests/train/test_configs_real_data.py.)"""

from __future__ import annotations

import json
import os
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxmm.config import ConfigError
from jaxmm.data.local import build_local
from jaxmm.models import build
from jaxmm.train.synthetic import make_batch
from jaxmm.train.tasks import get_task
from tests.train.helpers import CACHE, ROOT, losses, run_cli

NER_CONFIG = os.path.join(ROOT, "configs", "ner_bert.py")


def _tiny_tagger(num_labels=5):
    return build("bert_token_classifier", "tiny", vocab_size=64, num_labels=num_labels,
                 num_layers=1)


def test_token_classification_loss_matches_numpy():
    model = _tiny_tagger()
    task = get_task("token_classification").from_config({}, model)
    batch = make_batch("tagging", 0, 4, num_classes=5)
    batch["labels"][:, 1::3] = -100  # later sub-words
    batch["example_mask"] = np.asarray([1, 1, 1, 0], np.float32)  # a padding row
    variables = task.init(jax.random.key(0), batch)
    out = task.loss(variables, batch, train=False, rng=jax.random.key(1))
    logits = np.asarray(model.apply(variables, batch["input_ids"], batch["attention_mask"])
                        .logits, np.float64)
    logp = logits - logits.max(-1, keepdims=True)
    logp -= np.log(np.exp(logp).sum(-1, keepdims=True))
    labels = batch["labels"]
    keep = (labels != -100) & (batch["example_mask"][:, None] > 0)
    nll = -np.take_along_axis(logp, np.where(keep, labels, 0)[..., None], -1)[..., 0]
    assert float(out.weight) == keep.sum()
    assert float(out.loss) == pytest.approx(nll[keep].sum(), rel=1e-5)
    hits = (logits.argmax(-1) == labels) & keep
    assert out.metrics["accuracy"][0] == hits.sum()


def test_classification_task_refuses_per_token_labels():
    model = _tiny_tagger()
    task = get_task("classification").from_config({"modality": "text"}, model)
    batch = make_batch("tagging", 0, 2, num_classes=5)
    variables = task.init(jax.random.key(0), batch)
    with pytest.raises(ConfigError, match=r"per-token labels \(2, 16\).*token_classification"):
        task.loss(variables, batch, train=False, rng=jax.random.key(1))
    batch["label"] = jnp.asarray(batch.pop("labels"))
    with pytest.raises(ConfigError, match="token_classification"):
        task.loss(variables, batch, train=False, rng=jax.random.key(1))


@pytest.fixture(scope="module")
def wordpiece_dir(tmp_path_factory):
    from jaxmm.data.corpora import wordnet_glosses
    from jaxmm.data.tokenizers import train_tokenizer

    folder = tmp_path_factory.mktemp("tok")
    corpus = folder / "corpus.txt"
    corpus.write_text("\n".join(wordnet_glosses(limit=20000)))
    tok = train_tokenizer("wordpiece", [str(corpus)], vocab_size=8000, out_dir=str(folder / "wp"))
    return str(folder / "wp"), tok.vocab_size


# -- learning: colour entities in WordNet glosses ------------------------------------

COLOURS = set("red orange yellow green blue purple violet pink brown black white gray grey "
              "crimson scarlet golden silver".split())
SHADES = set("dark light pale bright deep".split())  # part of the entity only before a colour


def _tag(words):
    """IOB2 COL tags: a colour word, with a shade word right before it (``dark red``)."""
    low = [w.lower() for w in words]
    tags = ["O"] * len(words)
    for i, w in enumerate(low):
        if w in COLOURS and tags[i] == "O":
            if i and low[i - 1] in SHADES:
                tags[i - 1], tags[i] = "B-COL", "I-COL"
            else:
                tags[i] = "B-COL"
    return tags


def gloss_sentences(limit=1800):
    """Definitions (the text before the first ';') of WordNet glosses that mention a colour
    or a shade word, plus as many that mention neither, tokenised into words."""
    from jaxmm.data.corpora import wordnet_glosses

    with_entity, other = [], []
    for gloss in wordnet_glosses():
        words = re.findall(r"[A-Za-z]+(?:-[A-Za-z]+)*|\d+|[^\w\s]", gloss.split(";")[0])
        if not 3 <= len(words) <= 30:
            continue
        low = {w.lower() for w in words}
        (with_entity if low & (COLOURS | SHADES) else other).append(words)
    rng = np.random.default_rng(0)
    with_entity = [with_entity[i] for i in rng.permutation(len(with_entity))[:limit]]
    other = [other[i] for i in rng.permutation(len(other))[:limit // 2]]
    sentences = with_entity + other
    return [sentences[i] for i in rng.permutation(len(sentences))]


def _write_conll(path, sentences):
    with open(path, "w") as f:
        for words in sentences:
            f.write("".join(f"{w} {t}\n" for w, t in zip(words, _tag(words))) + "\n")


def unigram_tagger_f1(train, heldout):
    """Baseline: each word gets its most frequent training tag (unknown words: O)."""
    from seqeval.metrics import f1_score

    counts: dict = {}
    for words in train:
        for w, t in zip(words, _tag(words)):
            counts.setdefault(w.lower(), {}).setdefault(t, 0)
            counts[w.lower()][t] += 1
    best = {w: max(c, key=c.get) for w, c in counts.items()}
    pred = [[best.get(w.lower(), "O") for w in words] for words in heldout]
    return f1_score([_tag(w) for w in heldout], pred)


@pytest.mark.slow
@pytest.mark.heavy
def test_tiny_bert_learns_colour_entities_through_jaxmm_train_and_eval(tmp_path, wordpiece_dir):
    """Colour entities (``COL``: a colour word, with its shade: ``pale yellow``) tagged in
    real WordNet definitions, written as CoNLL files and built with the local CoNLL
    builder; a tiny BERT trained from scratch by ``jaxmm train`` (a separate process) and
    scored by ``jaxmm eval`` with seqeval reaches a held-out entity F1 far above the
    all-O baseline (F1 0: it finds no entity) and above a per-word majority-tag tagger
    (which cannot tell ``dark red``, one entity, from ``dark room``, none); its training
    loss falls."""
    tok_dir, vocab = wordpiece_dir
    sentences = gloss_sentences(limit=1800)
    split = int(0.85 * len(sentences))
    train, heldout = sentences[:split], sentences[split:]
    root = tmp_path / "conll"
    root.mkdir()
    _write_conll(root / "train.txt", train)
    _write_conll(root / "valid.txt", heldout)
    data_dir = str(tmp_path / "data")
    summary = build_local("conll", str(root), {"train": {"input": "train.txt"},
                                               "validation": {"input": "valid.txt"}},
                          data_dir, name="glosses", classes=("O", "B-COL", "I-COL"))
    assert summary["splits"] == {"train": len(train), "validation": len(heldout)}
    config = (f"{NER_CONFIG}:tiny,data=conll/glosses,labels=O+B-COL+I-COL,steps=600,batch=32,"
              f"seq_len=32,lr=1e-3,tokenizer={tok_dir},vocab={vocab},data_dir={data_dir}")
    workdir = str(tmp_path / "run")
    overrides = ["--config.log.tensorboard=false", "--config.log.progress=false",
                 "--config.log.mfu=false", "--config.log.every_steps=10",
                 "--config.checkpoint.every_steps=600", "--config.eval.every_steps=0",
                 "--config.checkpoint.export_params=false",
                 f"--config.compilation_cache_dir={CACHE}"]
    for command in ("train", "eval"):
        done = run_cli(command, "--config", config, "--workdir", workdir, *overrides, devices=1)
        assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout)
    assert result["step"] == 600
    metrics = result["metrics"]
    assert metrics["ner/num_sentences"] == len(heldout)
    f1 = metrics["ner/f1"]
    baseline = unigram_tagger_f1(train, heldout)
    curve = losses(workdir)
    first, last = np.mean(list(curve.values())[:3]), np.mean(list(curve.values())[-3:])
    print(f"NER learning: held-out entity F1 {f1:.3f} (P {metrics['ner/precision']:.3f}, "
          f"R {metrics['ner/recall']:.3f}); all-O baseline 0.0; per-word majority-tag "
          f"baseline {baseline:.3f}; train loss {first:.3f} -> {last:.3f}; {len(train)} train / "
          f"{len(heldout)} held-out sentences")
    assert last < 0.5 * first, curve
    assert f1 > 0.85 and f1 > baseline, (f1, baseline, metrics)
