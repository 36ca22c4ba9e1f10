"""Tasks over any modality: contrastive (any pair, InfoNCE/SigLIP/triplet), captioning
(image/video/audio encoders) and classification (audio, video, multimodal fusion).

Init examples come from each model's declared input specs (jaxmm.models.specs);
the training combinations each overfit one fixed synthetic batch through the
real sharded train step of ``jaxmm.train.build_run``.
"""

import jax
import numpy as np
import pytest

from jaxmm import losses
from jaxmm.config import ConfigError
from jaxmm.models import build
from jaxmm.models.specs import example_inputs, input_specs
from jaxmm.train import build_run, build_task, resolve_config
from jaxmm.train.input import make_source
from tests.train.helpers import CACHE

AST = {"num_mel_bins": 16, "max_frames": 16, "patch_size": 8, "num_layers": 1, "d_model": 32,
       "num_heads": 2, "mlp_dim": 64}
VIDEO = {"num_frames": 4, "tubelet_size": 2, "num_temporal_layers": 1,
         "spatial": {"image_size": 16, "patch_size": 8, "num_layers": 1, "d_model": 32,
                     "num_heads": 4, "mlp_dim": 64, "use_pooler": False}}
TEXT = {"size": "tiny", "num_layers": 1}
TINY_DECODER = {"vocab_size": 64, "num_layers": 1, "d_model": 32, "num_heads": 2, "mlp_dim": 64,
                "max_position_embeddings": 32, "bos_token_id": 1, "eos_token_id": 2,
                "pad_token_id": 0}


def _dual(a, b, **extra):
    towers = {"audio": AST, "video": VIDEO, "text": TEXT, "image": {"size": "tiny",
                                                                     "num_layers": 1}}
    return {"modalities": [a, b], f"{a}_encoder_config": towers[a],
            f"{b}_encoder_config": towers[b], "text_pool": "last", "projection_dim": 16,
            **extra}


def _config(task, name, model, **task_opts):
    model = dict(model)
    size = model.pop("size", None)
    return {"task": {"name": task, **task_opts},
            "model": {"name": name, "config": model, **({"size": size} if size else {})},
            "batch_size": 8, "mesh": {"data": 4, "fsdp": 2},
            "data": {"name": "synthetic", "num_classes": 8, "seq_len": 8},
            "optimizer": {"learning_rate": 3e-3}, "schedule": {"name": "constant"},
            "compilation_cache_dir": CACHE}


# -- init examples from the declared specs ---------------------------------------------


@pytest.mark.parametrize("name,config,expected", [
    ("vit", {"size": "tiny"}, {"image": (32, 32, 3)}),
    ("ast_classifier", AST, {"input_features": (16, 16)}),  # (num_mel_bins, max_frames)
    ("video", VIDEO, {"video": (4, 16, 16, 3)}),
    ("whisper_encoder", {"size": "tiny", "num_mel_bins": 16}, {"input_features": (16, 64)}),
    ("bert_classifier", {"size": "tiny"},
     {"input_ids": (16,), "attention_mask": (16,), "token_type_ids": (16,)}),
    ("dual_encoder", _dual("audio", "text"),
     {"input_features": (16, 16), "input_ids": (16,), "attention_mask": (16,)}),
    ("captioner", {"encoder": "video", "encoder_config": VIDEO, "decoder": TINY_DECODER},
     {"video": (4, 16, 16, 3), "decoder_input_ids": (16,), "decoder_attention_mask": (16,)}),
])
def test_init_example_has_the_declared_shapes(name, config, expected):
    config = dict(config)
    model = build(name, config.pop("size", None), **config)
    specs = input_specs(model)
    example = example_inputs(specs, 2)
    assert {k: v.shape[1:] for k, v in example.items()} == expected
    assert example["attention_mask"].min() == 1 if "attention_mask" in example else True
    jax.eval_shape(lambda: model.init(jax.random.key(0), **example))  # the model takes it


def test_tasks_init_examples_follow_the_model_not_the_image_layout():
    """classification(modality=audio/video/multimodal) and contrastive audio-text build
    their init batch from the model's specs (AST's max_frames, the video layout)."""
    ast = build_task(resolve_config(_config("classification", "ast_classifier",
                                            {**AST, "max_frames": 32}, modality="audio")))
    assert ast.example_batch(1)["input_features"].shape == (1, 16, 32)
    mm = build_task(resolve_config(_config(
        "classification", "multimodal_classifier",
        {"fusion": {"kind": "hybrid", "modalities": ["video", "audio", "text"], "num_layers": 2,
                    "fusion_layer": 1, "d_model": 32, "num_heads": 2, "mlp_dim": 64,
                    "max_positions": 64}}, modality="multimodal")))
    batch = mm.example_batch(2)
    assert batch["video"].shape == (2, 4, 16, 16, 3)
    assert batch["input_features"].shape == (2, 16, 32) and "label" in batch
    assert {"video", "input_features", "audio", "input_ids"} <= set(mm.model_inputs)
    jax.eval_shape(mm.init, jax.random.key(0), batch)


@pytest.mark.parametrize("encoder,config", [
    ("vit", {"size": "tiny", "num_layers": 1}), ("clip_vision", {"size": "tiny", "num_layers": 1}),
    ("resnet", "tiny"), ("video", VIDEO), ("ast", AST),
    ("whisper_encoder", {"size": "tiny", "num_mel_bins": 16, "num_layers": 1}),
])
def test_captioner_takes_every_encoder_with_one_contract(encoder, config):
    """Image, video and audio encoders share the call contract the captioner uses
    (``output_attentions`` / ``output_hidden_states``; VideoEncoder lacked the latter)."""
    model = build("captioner", {"encoder": encoder, "encoder_config": config,
                                "decoder": TINY_DECODER})
    specs = input_specs(model)
    field = model.config.encoder_input
    assert field == {"video": "video", "ast": "input_features",
                     "whisper_encoder": "input_features"}.get(encoder, "image")
    example = example_inputs(specs, 2, image_size=16)
    out, _ = jax.eval_shape(lambda: model.init_with_output(
        jax.random.key(0), **example, output_attentions=True, output_hidden_states=True))
    assert out.logits.shape == (2, 16, 64)
    assert out.encoder_hidden_states is not None


# -- errors ---------------------------------------------------------------------------


def test_unknown_or_missing_modality_is_a_one_line_config_error():
    with pytest.raises(ConfigError, match=r"unknown modality 'depth'"):
        build_task(resolve_config(_config("contrastive", "dual_encoder", _dual("audio", "text"),
                                          modalities=("depth", "text"))))
    with pytest.raises(ConfigError, match=r"asks for video.*no encoder.*reads text, audio"):
        build_task(resolve_config(_config("contrastive", "dual_encoder", _dual("audio", "text"),
                                          modalities=("video", "text"))))
    with pytest.raises(ConfigError, match=r"task.modality asks for audio.*reads image") as e:
        build_task(resolve_config(_config("classification", "vit_classifier", {"size": "tiny"},
                                          modality="audio")))
    assert "ast_classifier" in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(ConfigError, match=r"modalities must be two different"):
        build("dual_encoder", _dual("audio", "text", modalities=["audio", "smell"]))


# -- losses and features against independent references ------------------------------


def _np_triplet(a, p, margin, mining):
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    p = p / np.linalg.norm(p, axis=1, keepdims=True)
    d = 1.0 - a @ p.T
    n = len(a)
    per = []
    for i in range(n):
        hinge = [max(0.0, d[i, i] - d[i, j] + margin) for j in range(n) if j != i]
        per.append(max(hinge) if mining == "hardest" else np.mean(hinge))
    return float(np.mean(per))


@pytest.mark.parametrize("mining", ["hardest", "all"])
def test_triplet_task_loss_matches_numpy(mining):
    """The contrastive task with loss=triplet: the mean of both directions' hinge,
    checked on the model's own embeddings against a NumPy formula."""
    task = build_task(resolve_config(_config(
        "contrastive", "dual_encoder", _dual("video", "text"), loss="triplet", margin=0.3,
        mining=mining)))
    batch = {k: jax.numpy.asarray(v) for k, v in task.example_batch(4).items()}
    batch["input_ids"] = batch["input_ids"].at[:, 1].set(np.arange(4) + 5)
    batch["video"] = jax.random.normal(jax.random.key(1), batch["video"].shape)
    variables = task.init(jax.random.key(0), batch)
    out = task.loss(variables, batch, train=False, rng=jax.random.key(2))
    emb = task.model.apply(variables, **task.inputs(batch))
    v, t = np.asarray(emb.video_embeds), np.asarray(emb.text_embeds)
    ref = 0.5 * (_np_triplet(v, t, 0.3, mining) + _np_triplet(t, v, 0.3, mining))
    assert float(out.loss / out.weight) == pytest.approx(ref, rel=1e-4, abs=1e-6)
    assert ref > 0 and set(out.metrics) == {"v2t_accuracy", "t2v_accuracy"}
    assert float(losses.triplet_loss(v, t, margin=0.3, mining=mining)) == pytest.approx(
        _np_triplet(v, t, 0.3, mining), rel=1e-4, abs=1e-6)


@pytest.mark.parametrize("loss", ["infonce", "siglip"])
def test_hard_negative_captions_join_the_loss(loss):
    """task.hard_negatives='foil_' (NegCLIP): the foil texts, encoded by the text tower,
    are extra image->text candidates; a foil equal to its caption is left out. Checked
    on a text-image dual encoder's own embeddings against a NumPy formula."""
    task = build_task(resolve_config(_config(
        "contrastive", "dual_encoder", _dual("text", "image"), loss=loss,
        hard_negatives="foil_")))
    batch = {k: jax.numpy.asarray(v) for k, v in task.example_batch(4).items()}
    ids = np.asarray(batch["input_ids"]).copy()
    ids[:, 1] = np.arange(4) + 5
    foils = ids.copy()
    foils[:, 2] = np.arange(4) + 20
    foils[3] = ids[3]  # no word to swap: not a negative
    batch.update(input_ids=ids, foil_input_ids=foils,
                 foil_attention_mask=np.asarray(batch["attention_mask"]),
                 image=jax.random.normal(jax.random.key(1), batch["image"].shape))
    variables = task.init(jax.random.key(0), batch)
    out = task.loss(variables, batch, train=False, rng=jax.random.key(2))
    emb = task.model.apply(variables, **task.inputs(batch))
    img, txt = np.asarray(emb.image_embeds), np.asarray(emb.text_embeds)
    neg = np.asarray(task.model.apply(variables, foils, batch["attention_mask"],
                                      method=type(task.model).encode_text))
    scale = np.log(1 / 0.07)
    valid = np.array([True, True, True, False])
    if loss == "infonce":
        from tests.test_losses import np_negclip
        ref = np_negclip(img, txt, neg, valid, scale)
    else:
        from tests.test_losses import np_sigmoid_negatives
        ref = np_sigmoid_negatives(img, txt, neg, valid, scale, -10.0)
    assert float(out.loss / out.weight) == pytest.approx(ref, rel=1e-4)
    # Eval batches without foils are scored without them; training batches must have them.
    plain = {k: v for k, v in batch.items() if not k.startswith("foil_")}
    without = task.loss(variables, plain, train=False, rng=jax.random.key(2))
    assert float(without.loss) < float(out.loss)
    with pytest.raises(ConfigError, match="training batch has no foil_input_ids"):
        task.loss(variables, plain, train=True, rng=jax.random.key(2))
    with pytest.raises(ConfigError, match="not triplet"):
        build_task(resolve_config(_config("contrastive", "dual_encoder", _dual("text", "image"),
                                          loss="triplet", hard_negatives="foil_")))
    with pytest.raises(ConfigError, match="needs a text side"):
        build_task(resolve_config(_config("contrastive", "dual_encoder",
                                          _dual("audio", "image"), hard_negatives="foil_")))


def test_raw_audio_becomes_the_declared_features():
    """The scenes' raw `audio` -> the audio tower's (n_mels, frames) log-mel features on
    device; at 80 mels they equal Whisper's feature extractor (the reference)."""
    from jaxmm.audio_features import whisper_log_mel
    from jaxmm.train.tasks.modalities import log_mel

    audio = np.random.default_rng(0).normal(size=(2, 5000)).astype(np.float32) * 0.1
    ours = log_mel(audio, n_mels=80, frames=40)
    ref = whisper_log_mel(audio, sample_rate=16000, n_mels=80, chunk_seconds=40 * 160 / 16000)
    np.testing.assert_allclose(np.asarray(ours), np.asarray(ref), atol=1e-5)
    task = build_task(resolve_config(_config("contrastive", "dual_encoder",
                                             _dual("audio", "text"))))
    batch = task.prepare({"audio": audio, "input_ids": np.ones((2, 8), np.int32)},
                         jax.random.key(0), train=True)
    assert batch["input_features"].shape == (2, 16, 16)
    assert "audio" not in task.inputs(batch)


# -- every combination learns a fixed batch through the real train step ---------------

MM_FUSION = {"num_layers": 1, "d_model": 32, "num_heads": 2, "mlp_dim": 64, "max_positions": 64}
KINDS = {"early": {}, "late": {}, "hybrid": {"num_layers": 2, "fusion_layer": 1},
         "cross_attention": {"bidirectional": True}}
COMBOS = {
    "contrastive-audio-text-infonce": ("contrastive", "dual_encoder", _dual("audio", "text"), {}),
    "contrastive-video-text-triplet": ("contrastive", "dual_encoder", _dual("video", "text"),
                                       {"loss": "triplet", "mining": "all"}),
    "contrastive-video-audio-siglip": ("contrastive", "dual_encoder", _dual(
        "video", "audio", logit_bias_init_value=-10.0), {"loss": "siglip"}),
    "captioning-video": ("captioning", "captioner", {"encoder": "video", "encoder_config": VIDEO,
                                                     "decoder": TINY_DECODER}, {}),
    "captioning-audio": ("captioning", "captioner", {"encoder": "ast", "encoder_config": AST,
                                                     "decoder": TINY_DECODER}, {}),
    "classification-audio-ast": ("classification", "ast_classifier", {**AST, "num_labels": 8},
                                 {"modality": "audio"}),
    "classification-video": ("classification", "video_classifier", {**VIDEO, "num_labels": 8},
                             {"modality": "video"}),
    **{f"classification-multimodal-{kind}": (
        "classification", "multimodal_classifier",
        {"num_labels": 8, "fusion": {"kind": kind, "modalities": ["image", "audio", "text"],
                                     **MM_FUSION, **extra}}, {"modality": "multimodal"})
       for kind, extra in KINDS.items()},
}


# The train-step runs cover one case per task and new input kind (CI time). Video
# classification and audio captioning share these steps' code paths (their init and
# forward are the fast tests above); the fusion kinds have their own tests in
# tests/models.
TRAINED = ("contrastive-audio-text-infonce", "contrastive-video-text-triplet",
           "contrastive-video-audio-siglip", "captioning-video", "classification-audio-ast",
           "classification-multimodal-cross_attention")


@pytest.mark.slow
@pytest.mark.parametrize("combo", TRAINED)
def test_every_modality_combination_overfits_a_fixed_batch(combo):
    """A few real train steps (build_run's jitted step) on one fixed synthetic batch shaped
    as the model declares: the loss falls steadily."""
    task, name, model, opts = COMBOS[combo]
    config = _config(task, name, model, **opts)
    config["mesh"] = {"data": 1, "fsdp": 1}
    config["optimizer"]["learning_rate"] = 1e-3 if "siglip" in combo else 3e-3
    if task == "contrastive":  # distinct classes: no in-batch duplicate is a false negative
        config["data"]["num_classes"] = 64
    mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]).reshape(1, 1, 1),
                             ("data", "fsdp", "tensor"))
    run = build_run(config, mesh)
    state = run.init_state()
    source = make_source(run.config.data, task=run.task, split="train", batch_size=8, seed=0,
                         shuffle=False, repeat=True)
    batch = next(source)
    history = []
    for _ in range(12):
        state, metrics = run.train_step(state, batch, run.constants)
        history.append(float(metrics["loss"]))
    assert np.isfinite(history).all()
    assert history[-1] < 0.85 * history[0], history  # fell by more than 15%
    assert np.mean(history[-3:]) < np.mean(history[:3]), history


# -- end to end on the built-in scenes: the audio_text preset's raw speech is read -----


@pytest.mark.slow
def test_audio_text_contrastive_trains_on_the_scenes_speech(tmp_path):
    """`jaxmm.train.run` on the built-in scenes' audio_text preset (raw 16 kHz `audio`: the
    spoken captions of jaxmm.data.speech, one formant-tone pattern per word, not yet real
    TTS): an AST-text dual encoder learns to match the audio to its caption."""
    import math

    from jaxmm.data import builtin
    from jaxmm.data.catalog import data_config
    from jaxmm.data.tokenizers import train_tokenizer
    from jaxmm.train import run
    from jaxmm.train.logging import read_jsonl

    data_dir = str(tmp_path / "scenes")
    builtin.build(data_dir, "tiny", name="test", train_size=48, validation_size=16,
                  test_size=16)
    corpus = str(tmp_path / "scenes" / "jaxmm_scenes" / "test" / "train_text.txt")
    train_tokenizer("wordpiece", corpus, 96, out_dir=str(tmp_path / "tok"), min_frequency=1)
    data = data_config("scenes", task="audio_text", data_dir=data_dir, audio_seconds=1.0,
                       max_length=16)
    data.name = "jaxmm_scenes/test"
    ast = {"num_mel_bins": 32, "max_frames": 96, "patch_size": 16, "num_layers": 1,
           "d_model": 32, "num_heads": 2, "mlp_dim": 64}
    model = _dual("audio", "text", audio_encoder_config=ast,
                  text_encoder_config={**TEXT, "vocab_size": 96})
    config = {**_config("contrastive", "dual_encoder", model), "data": data.to_dict(),
              "tokenizer": str(tmp_path / "tok"), "num_steps": 40,
              "mesh": {"data": -1, "fsdp": 1}, "optimizer": {"learning_rate": 1e-3},
              "log": {"every_steps": 1, "tensorboard": False, "mfu": False,
                      "progress": False},
              "eval": {"every_steps": 0, "num_batches": 2, "at_end": True},
              "checkpoint": {"every_steps": 1000, "export_params": False}}
    workdir = str(tmp_path / "run")
    summary = run(config, workdir)
    first = read_jsonl(f"{workdir}/metrics.jsonl")[0]["train/loss"]
    ev = summary["eval"]
    # chance: loss log(8) on batches of 8, accuracy 1/8
    assert ev["loss"] < min(first, math.log(8)) - 0.3, (first, ev)
    assert ev["a2t_accuracy"] + ev["t2a_accuracy"] > 2 / 8, ev
