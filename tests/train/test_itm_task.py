"""The ``itm`` task: ITM cross-entropy over in-batch hard negatives + image-text contrastive.

The loss equals a NumPy computation over pairs built by hand (the model's logits on
them, its embeddings); negatives never repeat the positive's caption; bad batches are
refused; ``jaxmm train`` / ``jaxmm eval`` run configs/itm.py; and a tiny model learns
to tell matching captions of the built-in scenes from other scenes' captions.
"""

import os
import subprocess
import sys

import flax.linen as nn
import jax
import numpy as np
import pytest

from jaxmm.config import ConfigError
from jaxmm.train import build_task, resolve_config
from jaxmm.train.logging import read_jsonl
from jaxmm.train.tasks.itm import same_caption, sample_negatives
from tests.train.helpers import (
    HANG_GUARD_S,
    ROOT,
    cpu_env,
    run_cli,
)

NO_DROPOUT = {"dropout_rate": 0.0, "attention_dropout_rate": 0.0}


def _task(**options):
    config = resolve_config({
        "task": {"name": "itm", **options},
        "model": {"name": "itm", "size": "tiny", "config": {
            "fusion": NO_DROPOUT, "encoders": {"text": {"vocab_size": 64}}}}})
    return build_task(config)


def _batch(rng, captions, images=None):
    """Rows with the given caption ids (a row per entry; equal ids = identical captions)."""
    length = 6
    table = rng.integers(5, 64, (max(captions) + 1, length)).astype(np.int32)
    ids = table[list(captions)]
    mask = np.ones_like(ids)
    mask[:, 4:] = 0
    ids[:, 4:] = 0
    images = list(range(len(captions))) if images is None else images
    pixels = rng.normal(size=(max(images) + 1, 16, 16, 3)).astype(np.float32)
    return {"image": pixels[list(images)], "input_ids": ids, "attention_mask": mask}


def _log_softmax(x):
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def _pair_logits(task, variables, batch, pairs):
    """The model's ITM logits of (image row, caption row, _) pairs, run on those rows."""
    img_rows, txt_rows, _ = (np.array(x) for x in zip(*pairs))
    return np.asarray(task.model.apply(
        variables, batch["image"][img_rows], batch["input_ids"][txt_rows],
        batch["attention_mask"][txt_rows]).logits, np.float64)


def _reference(task, variables, batch, pairs, weights, itc_weight):
    """ITM cross-entropy over ``pairs`` [(image row, caption row, is_match)] with ``weights``,
    plus ``itc_weight`` x symmetric InfoNCE, in NumPy from the model's logits/embeddings."""
    labels = np.array([p[2] for p in pairs])
    logits = _pair_logits(task, variables, batch, pairs)
    nll = -_log_softmax(logits)[np.arange(len(labels)), labels]
    w = np.asarray(weights, np.float64)
    itm = (nll * w).sum() / w.sum()
    emb = task.model.apply(variables, batch["image"], batch["input_ids"],
                           batch["attention_mask"], method="embed")
    img, txt = np.asarray(emb.image_embeds, np.float64), np.asarray(emb.text_embeds, np.float64)
    scale = min(np.exp(float(emb.logit_scale)), 100.0)
    sim = scale * img @ txt.T
    diag = np.arange(len(img))
    itc = 0.5 * (-_log_softmax(sim)[diag, diag].mean() - _log_softmax(sim.T)[diag, diag].mean())
    return itm + itc_weight * itc, itm, itc


def _loss(task, variables, batch, train, seed=0):
    key = jax.random.key(seed)
    return task.loss(variables, task.prepare(batch, key, train), train=train, rng=key)


@pytest.mark.parametrize("train", [True, False], ids=["train-hard", "eval-uniform"])
def test_loss_equals_numpy_itm_plus_infonce(train):
    task = _task(itc_weight=0.5)
    # Row 0 is unique; rows 1 and 2 are the same image and caption, so every draw gives
    # the same pairs: image 0 with caption 1 (= 2), images 1 and 2 with caption 0 only.
    batch = _batch(np.random.default_rng(0), captions=[0, 1, 1], images=[0, 1, 1])
    variables = nn.unbox(task.init(jax.random.key(0), batch))
    pairs = [(0, 0, 1), (1, 1, 1), (2, 2, 1),          # matches
             (0, 1, 0), (1, 0, 0), (2, 0, 0),          # each image, a negative caption
             (1, 0, 0), (0, 1, 0), (0, 2, 0)]          # each caption, a negative image
    want, itm, itc = _reference(task, variables, batch, pairs, np.ones(9), 0.5)
    for seed in range(3):
        out = _loss(task, variables, batch, train, seed)
        assert float(out.weight) == 3
        assert float(out.loss) / 3 == pytest.approx(want, rel=1e-4)
    sums = {k: float(s) / float(c) for k, (s, c) in out.metrics.items()}
    assert sums["itm_loss"] == pytest.approx(itm, rel=1e-4)
    assert sums["itc_loss"] == pytest.approx(itc, rel=1e-4)
    # Ranking: match (row p % 3) vs the negative pair p, by logit margin.
    margin = np.diff(_pair_logits(task, variables, batch, pairs), axis=-1)[:, 0]
    assert sums["itm_ranking_accuracy"] == pytest.approx(
        np.mean([margin[p % 3] > margin[p] for p in range(3, 9)]))


def test_rows_without_a_different_caption_have_no_negative_pairs():
    """Every caption identical: the negative pairs are dropped, ITM is over the matches."""
    task = _task(itc_weight=1.0)
    batch = _batch(np.random.default_rng(1), captions=[0, 0, 0])
    variables = nn.unbox(task.init(jax.random.key(0), batch))
    pairs = [(i, i, 1) for i in range(3)] + [(i, i, 0) for i in range(3)] * 2
    want, itm, _ = _reference(task, variables, batch, pairs, [1] * 3 + [0] * 6, 1.0)
    out = _loss(task, variables, batch, train=True)
    assert float(out.loss) / float(out.weight) == pytest.approx(want, rel=1e-4)
    assert float(out.metrics["itm_neg_accuracy"][1]) == 0  # no negative pair counted
    assert float(out.metrics["itm_pos_accuracy"][1]) == 3


def test_negatives_are_never_the_positive_nor_an_identical_caption():
    rng = np.random.default_rng(2)
    # 10 rows, 4 distinct captions; row 9's caption is unique, rows 0-2 share one.
    captions = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2, 3])
    ids = _batch(rng, list(captions))["input_ids"]
    same = captions[:, None] == captions[None, :]
    np.testing.assert_array_equal(np.asarray(same_caption(ids)), same)
    # The similarity favours the identical captions by far: they must still never be drawn.
    sim = np.where(same, 30.0, rng.normal(size=same.shape)).astype(np.float32)
    keys = jax.random.split(jax.random.key(0), 500)
    t4i, i4t, has = jax.jit(jax.vmap(lambda k: sample_negatives(k, sim, ids)))(keys)
    t4i, i4t = np.asarray(t4i), np.asarray(i4t)
    assert np.asarray(has).all()
    assert (captions[t4i] != captions[None, :]).all()
    assert (captions[i4t] != captions[None, :]).all()
    # Uniform draws reach every allowed row.
    t4i, _, _ = jax.vmap(lambda k: sample_negatives(k, np.zeros_like(sim), ids))(keys)
    for i in range(10):
        assert set(np.asarray(t4i)[:, i]) == set(np.flatnonzero(~same[i]))
    # Hard draws follow the similarity: a much closer allowed caption is drawn mostly.
    hard = np.where(same, -np.inf, 0.0).astype(np.float32)
    hard[:, 9], hard[9, 0] = 5.0, 5.0
    t4i, _, _ = jax.vmap(lambda k: sample_negatives(k, hard, ids))(keys)
    assert (np.asarray(t4i)[:, :9] == 9).mean() > 0.9


def test_a_batch_of_one_caption_draws_each_row_itself_and_flags_it():
    ids = np.tile(np.arange(1, 7, dtype=np.int32), (4, 1))
    t4i, i4t, has = sample_negatives(jax.random.key(0), np.zeros((4, 4), np.float32), ids)
    assert not np.asarray(has).any()
    np.testing.assert_array_equal(np.asarray(t4i), np.arange(4))
    np.testing.assert_array_equal(np.asarray(i4t), np.arange(4))


def test_eval_is_deterministic_and_reports_balanced_accuracy():
    task = _task()
    batch = _batch(np.random.default_rng(3), captions=list(range(6)))
    variables = nn.unbox(task.init(jax.random.key(0), batch))
    first, second = (_loss(task, variables, batch, train=False, seed=s) for s in (0, 1))
    assert float(first.loss) == float(second.loss)
    means = {k: float(s) / float(c) for k, (s, c) in first.metrics.items()}
    summary = task.summarize(means)
    assert summary["balanced_accuracy"] == pytest.approx(
        0.5 * (means["itm_pos_accuracy"] + means["itm_neg_accuracy"]))
    # The retrieval eval layout (B, captions, T) is matched on the first caption.
    grouped = dict(batch, input_ids=np.stack([batch["input_ids"]] * 3, 1),
                   attention_mask=np.stack([batch["attention_mask"]] * 3, 1))
    assert float(_loss(task, variables, grouped, train=False).loss) == float(first.loss)


def test_bad_input_and_options_are_clear_config_errors():
    task = _task()
    batch = _batch(np.random.default_rng(4), captions=[0, 1])
    with pytest.raises(ConfigError, match="task 'itm' needs image in the batch"):
        task.prepare({k: v for k, v in batch.items() if k != "image"}, jax.random.key(0), True)
    with pytest.raises(ConfigError, match="negatives"):
        _task(negatives="hardest")
    with pytest.raises(ConfigError, match="itc_weight"):
        _task(itc_weight=-1.0)


def _train_cli(tmp_path, config, *overrides):
    """``jaxmm train`` on one device, evaluated at the end on every eval batch; the final
    eval record of metrics.jsonl."""
    res = run_cli("train", "--config", config, "--workdir", str(tmp_path / "run"),
                  "--config.eval.every_steps=0", "--config.log.every_steps=50",
                  "--config.log.tensorboard=false", "--config.log.progress=false",
                  "--config.checkpoint.export_params=false", *overrides, devices=1)
    assert res.returncode == 0, res.stderr[-3000:]
    return [r for r in read_jsonl(os.path.join(tmp_path, "run", "metrics.jsonl"))
            if "eval/balanced_accuracy" in r][-1]


def _report(name, final):
    print(f"{name}: balanced accuracy {final['eval/balanced_accuracy']:.3f} (matches "
          f"{final['eval/itm_pos_accuracy']:.3f}, non-matches "
          f"{final['eval/itm_neg_accuracy']:.3f}), ranking accuracy "
          f"{final['eval/itm_ranking_accuracy']:.3f} (chance 0.5 each), ITC i2t accuracy "
          f"{final['eval/i2t_accuracy']:.3f}")


@pytest.mark.slow
def test_itm_learns_to_match_and_never_learns_from_duplicate_captions(tmp_path):
    """Synthetic image-caption pairs of 4 classes: a batch of 32 holds ~8 identical captions
    per class, none of which may serve as a negative. The matcher separates matching from
    non-matching pairs almost perfectly."""
    final = _train_cli(tmp_path, "configs/itm.py:tiny,steps=120,batch=32,res=32",
                       "--config.eval.num_batches=4")
    _report("synthetic ITM", final)
    assert final["eval/balanced_accuracy"] > 0.9


_PREPARE = """
import os, sys
from jaxmm.data import builtin, tokenizers
builder = builtin.build(os.path.join(sys.argv[1], "data"), "tiny")
tokenizers.train_tokenizer("wordpiece", builtin.corpus_path(builder), 256,
                           out_dir=os.path.join(sys.argv[1], "tokenizer"), min_frequency=1,
                           model_max_length=64)
"""


@pytest.mark.slow
@pytest.mark.heavy
def test_itm_learns_to_match_the_builtin_scenes_captions(tmp_path):
    """Real captions of the built-in scenes, held-out images: the matcher tells an image's
    own caption from another scene's (balanced accuracy, chance 0.5) and the contrastive
    half aligns images with captions (i2t, chance 1/32).

    Uniform negatives: tiny towers trained from scratch with hard negatives from the start
    barely leave the ITM prior (balanced accuracy 0.53 after 1500 steps: the negatives are
    confusable before the fusion has learnt anything); ALBEF's hard negatives start from
    pretrained towers. About 110 s wall / 160 s CPU on two cores.
    """
    prep = subprocess.run([sys.executable, "-c", _PREPARE, str(tmp_path)], cwd=ROOT,
                          env=cpu_env(1), capture_output=True, text=True, timeout=HANG_GUARD_S)
    assert prep.returncode == 0, prep.stderr[-3000:]
    config = (f"configs/itm.py:tiny,steps=800,batch=32,res=32,negatives=uniform,data=scenes,"
              f"data_size=tiny,data_dir={tmp_path / 'data'},tokenizer={tmp_path / 'tokenizer'},"
              "vocab=256")
    final = _train_cli(tmp_path, config, "--config.eval.num_batches=-1",
                       "--config.optimizer.learning_rate=2e-3")
    _report("scenes ITM", final)
    assert final["eval/balanced_accuracy"] > 0.7  # measured 0.855
    assert final["eval/i2t_accuracy"] > 0.3  # measured 0.656


def test_fusion_projection_init_option():
    """``projection_init='lecun'`` keeps unit-scale encoder outputs at unit scale after the
    fusion's input projection; the default N(0, 0.02) shrinks them (width 64: ~0.16x)."""
    from jaxmm.models import build

    rng = np.random.default_rng(5)
    tokens = {"text": rng.normal(size=(4, 6, 64)).astype(np.float32),
              "image": rng.normal(size=(4, 9, 64)).astype(np.float32)}

    def projected_std(init):
        model = build("fusion", dict(kind="cross_attention", modalities=("text", "image"),
                                     cross_query="text", num_layers=1, d_model=64,
                                     num_heads=4, mlp_dim=128, projection_init=init))
        params = nn.unbox(model.init(jax.random.key(0), tokens)["params"])
        return float(np.std(tokens["image"] @ np.asarray(params["image_projection"]["kernel"])))

    assert projected_std("lecun") == pytest.approx(1.0, abs=0.15)
    assert projected_std("normal") == pytest.approx(0.02 * 8, abs=0.03)
    with pytest.raises(ConfigError, match="projection_init"):
        build("fusion", dict(projection_init="xavier"))
