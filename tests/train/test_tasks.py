"""Every task trains end to end through jaxmm.train.run and learns (metrics asserted).

Tasks whose model family is not yet on main run on tiny models built from
jaxmm.layers (tests/train/tiny_models.py); the real families are used where
they exist (ViT for classification and distillation).
"""

import json
import math
import os
import struct

import numpy as np
import pytest

from jaxmm.train import evaluate_checkpoint, run
from jaxmm.train.logging import read_jsonl
from tests.train.helpers import tiny_config

COMMON = {"num_steps": 30, "optimizer.learning_rate": 3e-3, "log.every_steps": 5,
          "eval.at_end": True, "eval.num_batches": 2, "mesh.data": 4, "mesh.fsdp": 2}
VIT = {"model.name": "vit_classifier", "model.size": "tiny",
       "model.config": {"num_labels": 4, "num_layers": 1}}


def _train(tmp_path, task, overrides):
    workdir = str(tmp_path / task)
    summary = run(tiny_config(task, {**COMMON, **overrides}), workdir)
    first_loss = read_jsonl(os.path.join(workdir, "metrics.jsonl"))[0]["train/loss"]
    return workdir, summary["eval"], first_loss


def _tb_scalars(logdir):
    """Tags in TensorBoard event files, read with the TFRecord framing + tensorboardX protos."""
    from tensorboardX.proto import event_pb2

    tags = set()
    for name in os.listdir(logdir):
        with open(os.path.join(logdir, name), "rb") as f:
            data = f.read()
        pos = 0
        while pos < len(data):
            (length,) = struct.unpack("<Q", data[pos:pos + 8])
            event = event_pb2.Event.FromString(data[pos + 12:pos + 12 + length])
            tags.update(v.tag for v in event.summary.value)
            pos += 12 + length + 4
    return tags


GPT = {"model.name": "gpt", "model.size": "tiny",
       "model.config": {"vocab_size": 64, "max_position_embeddings": 32, "num_layers": 1}}


@pytest.mark.slow
def test_lm_learns_and_logs_with_gpt(tmp_path):
    workdir, ev, first = _train(tmp_path, "lm", {
        **GPT, "log.tensorboard": True, "log.mfu": True, "checkpoint.export_params": True})
    assert ev["loss"] < first - 0.5 and ev["accuracy"] > 0.2  # chance is 1/60
    assert ev["perplexity"] == pytest.approx(math.exp(ev["loss"]))
    records = read_jsonl(os.path.join(workdir, "metrics.jsonl"))
    train = [r for r in records if "train/loss" in r]
    assert [r["step"] for r in train] == [5, 10, 15, 20, 25, 30]
    assert all(r["train/tokens_per_sec"] > 0 and 0 < r["train/mfu"] < 1 for r in train[1:])
    assert {"train/loss", "train/mfu", "eval/loss"} <= _tb_scalars(f"{workdir}/tensorboard")
    summary = json.load(open(os.path.join(workdir, "summary.json")))
    assert summary["step"] == 30 and summary["mfu_peak_source"] == "measured f32 matmul"
    # The checkpoint and the export evaluate to the same metrics as the run's final eval.
    again = evaluate_checkpoint(tiny_config("lm", {**COMMON, **GPT}), workdir)
    assert again["step"] == 30 and again["metrics"]["loss"] == pytest.approx(ev["loss"], 1e-6)
    exported = evaluate_checkpoint(tiny_config("lm", {**COMMON, **GPT}), workdir,
                                   params_dir=f"{workdir}/export")
    assert exported["metrics"]["loss"] == pytest.approx(ev["loss"], 1e-6)


@pytest.mark.slow
def test_mlm_learns_with_bert(tmp_path):
    _, ev, first = _train(tmp_path, "mlm", {
        "model.name": "bert_mlm", "model.size": "tiny", "num_steps": 80, "mesh.fsdp": 1,
        "mesh.data": 8, "model.config": {"vocab_size": 64, "num_layers": 1, "d_model": 64,
                                         "mlp_dim": 128},
        "task.mask_token_id": 3, "task.mlm_probability": 0.3})
    # Below the entropy of a uniform guess over the 60 content tokens (it uses the
    # context), and above-chance accuracy on the masked tokens.
    assert ev["loss"] < math.log(60) - 0.15 < first and ev["accuracy"] > 2 / 60


@pytest.fixture(scope="module")
def vit_classifier_run(tmp_path_factory):
    return _train(tmp_path_factory.mktemp("cls"), "classification",
                  {**VIT, "checkpoint.export_params": True, "data.image_size": 32})


@pytest.mark.slow
def test_classification_learns_with_vit(vit_classifier_run):
    _, ev, first = vit_classifier_run
    assert ev["accuracy"] > 0.6 and ev["loss"] < first  # chance 0.25


@pytest.mark.slow
def test_distillation_from_exported_vit_teacher(tmp_path, vit_classifier_run):
    teacher_dir, teacher_eval, _ = vit_classifier_run
    _, ev, _ = _train(tmp_path, "distillation", {
        **VIT, "model.config": {"num_labels": 4, "num_layers": 1, "d_model": 32,
                                "num_heads": 2, "mlp_dim": 64},
        "teacher.name": "vit_classifier", "teacher.size": "tiny",
        "teacher.config": {"num_labels": 4, "num_layers": 1},
        "teacher.params": f"{teacher_dir}/export", "data.image_size": 32,
        "task.alpha": 0.7})
    assert ev["agreement"] > 0.6 and ev["accuracy"] > 0.5
    assert np.isfinite(ev["kd_loss"])


@pytest.mark.slow
def test_contrastive_learns(tmp_path):
    _, ev, first = _train(tmp_path, "contrastive", {
        "model.name": "test_tiny_dual_encoder", "data.num_classes": 16})
    assert ev["loss"] < first - 0.3 and ev["i2t_accuracy"] > 0.25  # chance 1/16


@pytest.mark.parametrize("task,extra", [
    ("captioning", {"model.name": "test_tiny_seq2seq"}),
    ("asr", {"model.name": "whisper", "model.size": "tiny",
             "model.config": {"vocab_size": 64, "num_mel_bins": 16, "max_source_positions": 16,
                              "num_layers": 1, "num_decoder_layers": 1}}),
    ("vqa", {"model.name": "test_tiny_seq2seq", "task.mode": "generate"}),
], ids=["captioning", "asr-whisper", "vqa-generate"])
@pytest.mark.slow
def test_generative_tasks_learn(tmp_path, task, extra):
    _, ev, first = _train(tmp_path, task, extra)
    assert ev["loss"] < first - 0.5 and ev["accuracy"] > 0.4


def test_contrastive_eval_on_retrieval_layout_scores_first_caption():
    """A (B, captions, T) retrieval eval batch is scored on each image's first caption."""
    import flax.linen as nn
    import jax

    from jaxmm.train import build_task, resolve_config

    config = resolve_config({"task": {"name": "contrastive"},
                             "model": {"name": "clip", "size": "tiny",
                                       "config": {"text": {"num_layers": 1},
                                                  "vision": {"num_layers": 1}}}})
    task = build_task(config)
    rng = np.random.default_rng(0)
    ids = rng.integers(1, 126, (4, 3, 8)).astype(np.int32)
    ids[..., -1] = 127  # EOS, the token CLIP pools
    mask = np.ones_like(ids)
    image = rng.normal(size=(4, 32, 32, 3)).astype(np.float32)
    variables = nn.meta.unbox(jax.jit(task.init)(jax.random.PRNGKey(0), {
        "image": image, "input_ids": ids[:, 0], "attention_mask": mask[:, 0]}))
    key = jax.random.PRNGKey(1)
    loss = jax.jit(lambda b: task.loss(variables, task.prepare(b, key, False), train=False,
                                       rng=key).loss)
    multi = loss({"image": image, "input_ids": ids, "attention_mask": mask})
    first, other = (loss({"image": image, "input_ids": ids[:, c], "attention_mask": mask[:, c]})
                    for c in (0, 1))
    assert float(multi) == pytest.approx(float(first), rel=1e-6)
    assert float(other) != pytest.approx(float(first), rel=1e-3)
