"""Each registered evaluator against an independent reference: the model applied
unsharded, one batch (or example) at a time, and the metric recomputed with NumPy,
scikit-learn, jiwer or pycocoevalcap.

Evaluators run on the 8-device mesh, on batches that do not fill the last one
(padding rows must not count), with their eval data given directly as batches.
"""

import dataclasses

import jax
import numpy as np
import pytest
import sklearn.metrics

import jaxmm
from jaxmm.config import ConfigError
from jaxmm.evaluate import caption_metrics, cer, repeated_ngram_rate, wer
from jaxmm.evaluate.evaluators import EVALUATORS, make_evaluators
from jaxmm.train import build_run, resolve_config
from tests.train.helpers import tiny_config

WORDS = ["red", "blue", "green", "circle", "square", "left", "right", "a", "the", "big",
         "small", "on", "is", "shape", "two", "one"]


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    from jaxmm.data.tokenizers import train_tokenizer

    rng = np.random.default_rng(0)
    folder = tmp_path_factory.mktemp("tok")
    corpus = folder / "corpus.txt"
    corpus.write_text("\n".join(" ".join(rng.choice(WORDS, 6)) for _ in range(300)))
    train_tokenizer("wordpiece", str(corpus), 40, out_dir=str(folder / "tok"), min_frequency=1,
                    model_max_length=16)
    return str(folder / "tok")


def _evaluators(task, overrides, entry, batches, name="ev"):
    """A tiny run's evaluators (fresh params) fed ``batches``; ``entry`` is added as ``name``."""
    built = build_run(tiny_config(task, {"eval.num_batches": -1, **overrides,
                                         f"eval.evaluators.{name}": entry}))
    context = dataclasses.replace(built.eval_context(),
                                  make_source=lambda *args: iter([dict(b) for b in batches]))
    evaluators = make_evaluators(built.config, context)
    return built, evaluators, jax.device_get(built.init_state().variables)


def _scrambled(variables, rng, scale=0.5):
    """Random weights of ``variables``' shapes: a fresh decoder emits mostly special
    tokens (empty texts); random weights make it say words."""
    return jax.tree.map(lambda x: (scale * rng.normal(size=x.shape)).astype(x.dtype), variables)


def _log_softmax(x):
    x = np.asarray(x, np.float64)
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def _normalize(x):
    x = np.asarray(x, np.float64)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


# -- loss and perplexity --------------------------------------------------------


def _text_batches(rng, sizes, vocab=64, length=12):
    out = []
    for n in sizes:
        ids = rng.integers(4, vocab, (n, length)).astype(np.int32)
        mask = (np.arange(length)[None] < rng.integers(3, length + 1, (n, 1))).astype(np.int32)
        out.append({"input_ids": ids * mask, "attention_mask": mask})
    return out


@pytest.mark.slow
def test_loss_and_perplexity_match_numpy_nll(rng):
    batches = _text_batches(rng, [16, 16, 5])  # the last batch is padded to 16 rows
    built, evaluators, variables = _evaluators("lm", {"task.label_smoothing": 0.2},
                                               {"type": "perplexity"}, batches)
    nll = uniform = count = 0.0
    for b in batches:
        logits = built.task.model.apply(variables, b["input_ids"], b["attention_mask"]).logits
        logp = _log_softmax(logits)[:, :-1]
        target, valid = b["input_ids"][:, 1:], b["attention_mask"][:, 1:] > 0
        nll -= np.take_along_axis(logp, target[..., None], -1)[..., 0][valid].sum()
        uniform -= logp.mean(-1)[valid].sum()
        count += valid.sum()
    got = evaluators["ev"](variables)
    assert got["tokens"] == count
    np.testing.assert_allclose(got["nll"], nll / count, rtol=1e-5)
    np.testing.assert_allclose(got["perplexity"], np.exp(nll / count), rtol=1e-5)
    # The task's own loss keeps the label smoothing: (1 - eps) NLL + eps mean_k(-log p_k).
    np.testing.assert_allclose(evaluators["loss"](variables)["loss"],
                               (0.8 * nll + 0.2 * uniform) / count, rtol=1e-5)


# -- dual encoders: retrieval and zero-shot -------------------------------------

DUAL = {"model.name": "test_tiny_dual_encoder"}


def _image_text_batches(rng, sizes, captions=3, length=8, image_size=16):
    out, first = [], 100
    for n in sizes:
        ids = rng.integers(4, 40, (n, captions, length)).astype(np.int32)
        mask = np.ones_like(ids)
        mask[0, -1] = 0  # the first image of each batch has one caption fewer
        out.append({"image": rng.normal(size=(n, image_size, image_size, 3)).astype(np.float32),
                    "input_ids": ids, "attention_mask": mask,
                    "image_id": np.arange(first, first + n, dtype=np.int32)})
        first += n
    return out


def _brute_force_ranks(sim, ids, owner):
    """Each media item's best rank of its own texts, and each text's rank of its item."""
    i2t = [min(list(np.argsort(-sim[i])).index(t) for t in np.where(owner == ids[i])[0])
           for i in range(len(ids))]
    t2i = [list(np.argsort(-sim[:, t])).index(int(np.where(ids == owner[t])[0][0]))
           for t in range(len(owner))]
    return i2t, t2i


def _text_owners(batches):
    valid = [b["attention_mask"][:, :, 0] > 0 for b in batches]
    return np.concatenate([np.repeat(b["image_id"], v.sum(1)) for b, v in zip(batches, valid)])


def test_audio_text_retrieval_ranks_clips_against_their_captions(rng):
    """retrieval over an audio-text dual encoder: raw 16 kHz clips become the AST tower's
    log-mel features; metrics a2t / t2a, checked by brute-force ranking."""
    from jaxmm.train.tasks.modalities import log_mel
    from tests.train.test_modalities import _dual

    batches = _image_text_batches(rng, [16, 7])
    for b in batches:
        b["audio"] = 0.1 * rng.normal(size=(len(b.pop("image")), 4000)).astype(np.float32)
    built, evaluators, variables = _evaluators("contrastive", {
        "model": {"name": "dual_encoder", "config": _dual("audio", "text", projection_dim=8)},
        "task.modalities": ("audio", "text")}, {"type": "retrieval", "ks": (1, 5)}, batches)
    model = built.task.model
    clips = _normalize(np.concatenate([
        model.apply(variables, log_mel(b["audio"], n_mels=16, frames=16),
                    method="encode_audio") for b in batches]))
    texts = _normalize(np.concatenate([
        model.apply(variables, b["input_ids"][v], b["attention_mask"][v], method="encode_text")
        for b in batches for v in [b["attention_mask"][:, :, 0] > 0]]))
    ids = np.concatenate([b["image_id"] for b in batches])
    a2t, t2a = _brute_force_ranks(clips @ texts.T, ids, _text_owners(batches))
    got = evaluators["ev"](variables)
    assert got["num_images"] == 23 and "i2t_R@1" not in got
    for k in (1, 5):
        assert got[f"a2t_R@{k}"] == pytest.approx(100 * np.mean(np.array(a2t) < k))
        assert got[f"t2a_R@{k}"] == pytest.approx(100 * np.mean(np.array(t2a) < k))
    with pytest.raises(ConfigError, match="needs a dual encoder with encode_video"):
        _evaluators("contrastive", DUAL, {"type": "retrieval", "modality": "video"}, batches)


@pytest.mark.slow
def test_retrieval_recall_matches_brute_force_ranking(rng):
    batches = _image_text_batches(rng, [16, 16, 6])
    built, evaluators, variables = _evaluators(
        "contrastive", DUAL, {"type": "retrieval", "ks": (1, 5)}, batches)
    model = built.task.model
    images = _normalize(np.concatenate([
        model.apply(variables, b["image"], method="encode_image") for b in batches]))
    texts = []
    for b in batches:
        valid = b["attention_mask"][:, :, 0] > 0
        texts.append(model.apply(variables, b["input_ids"][valid], b["attention_mask"][valid],
                                 method="encode_text"))
    texts = _normalize(np.concatenate(texts))
    owner = np.concatenate([np.repeat(b["image_id"], (b["attention_mask"][:, :, 0] > 0).sum(1))
                            for b in batches])
    ids = np.concatenate([b["image_id"] for b in batches])
    i2t, t2i = _brute_force_ranks(images @ texts.T, ids, owner)
    got = evaluators["ev"](variables)
    assert got["num_images"] == 38 and got["num_texts"] == 38 * 3 - 3
    for k in (1, 5):
        assert got[f"i2t_R@{k}"] == pytest.approx(100 * np.mean(np.array(i2t) < k))
        assert got[f"t2i_R@{k}"] == pytest.approx(100 * np.mean(np.array(t2i) < k))
    assert 0 < got["i2t_R@5"] < 100  # neither trivial nor empty


def test_identical_captions_get_identical_embeddings(rng):
    """Two images share a caption at different batch positions: one embedding, exact ties."""
    batches = _image_text_batches(rng, [16, 16])
    for key in ("input_ids", "attention_mask"):
        batches[1][key][9, 2] = batches[0][key][3, 1]
    _, evaluators, variables = _evaluators("contrastive", DUAL, {"type": "retrieval"}, batches)
    with jax.set_mesh(evaluators["ev"].mesh):
        rows = evaluators["ev"].embeddings(variables)
    first = np.where(rows["text_image_id"] == 103)[0][1]  # image 3's caption 1
    second = np.where(rows["text_image_id"] == 125)[0][2]  # image 16 + 9's caption 2
    np.testing.assert_array_equal(rows["texts"][first], rows["texts"][second])
    assert len(rows["texts"]) == 32 * 3 - 2  # the first image of each batch has 2 captions


@pytest.mark.slow
def test_zero_shot_accuracy_matches_numpy(rng, tokenizer_dir):
    from jaxmm.data.tokenizers import load

    names, templates = ("red", "blue", "green"), ("a {} shape", "the {}")
    batches = [{"image": rng.normal(size=(n, 16, 16, 3)).astype(np.float32),
                "label": rng.integers(0, 3, n).astype(np.int32)} for n in (16, 9)]
    built, evaluators, variables = _evaluators(
        "contrastive", {**DUAL, "tokenizer": tokenizer_dir},
        {"type": "zero_shot", "class_names": names, "templates": templates, "max_length": 8},
        batches)
    model, tok = built.task.model, load(tokenizer_dir)
    enc = tok.encode([t.format(n) for n in names for t in templates], max_length=8,
                     padding="max_length")
    classes = _normalize(model.apply(variables, enc["input_ids"], enc["attention_mask"],
                                     method="encode_text")).reshape(3, 2, -1).mean(1)
    images = np.concatenate([model.apply(variables, b["image"], method="encode_image")
                             for b in batches])
    pred = (_normalize(images) @ _normalize(classes).T).argmax(-1)
    labels = np.concatenate([b["label"] for b in batches])
    got = evaluators["ev"](variables)
    assert got["num_images"] == 25
    assert got["accuracy"] == pytest.approx(np.mean(pred == labels))


# -- classifiers -----------------------------------------------------------------


@pytest.mark.slow
def test_classification_and_glue_match_sklearn(rng):
    batches = [{"image": rng.normal(size=(n, 16, 16, 3)).astype(np.float32),
                "label": rng.integers(0, 4, n).astype(np.int32)} for n in (16, 16, 3)]
    built, evaluators, variables = _evaluators(
        "classification", {"eval.evaluators.glue": {"type": "glue", "task": "cola"}},
        {"type": "classification", "metrics": ("accuracy", "macro_f1", "matthews")}, batches)
    pred = np.concatenate([np.asarray(built.task.model.apply(variables, b["image"]).logits)
                           .argmax(-1) for b in batches])
    labels = np.concatenate([b["label"] for b in batches])
    assert len(set(pred)) > 1  # a non-constant classifier, so F1/MCC mean something
    got = evaluators["ev"](variables)
    assert got["num_examples"] == 35
    assert got["accuracy"] == pytest.approx(sklearn.metrics.accuracy_score(labels, pred))
    assert got["macro_f1"] == pytest.approx(
        sklearn.metrics.f1_score(labels, pred, average="macro"))
    assert got["matthews"] == pytest.approx(sklearn.metrics.matthews_corrcoef(labels, pred))
    assert evaluators["glue"](variables) == {"matthews": pytest.approx(got["matthews"]),
                                             "num_examples": 35.0}


# -- VQA -------------------------------------------------------------------------

ANSWERS = ("yes", "no", "red", "blue", "2", "3")
VQA = {"model.name": "vqa", "model.size": "tiny", "model.config": {
    "num_answers": 6, "encoders": {"text": {"vocab_size": 50}, "image": {"patch_size": 4}}}}


@pytest.mark.slow
def test_vqa_accuracy_by_question_type_matches_exact_match(rng):
    built = build_run(tiny_config("vqa", VQA))
    size = built.example["image"].shape[1]
    batches = []
    for b, n in enumerate((8, 3)):
        ids = rng.integers(4, 50, (n, 3, 6)).astype(np.int32)
        mask = np.ones_like(ids)
        mask[0, 2] = 0  # an empty (padding) question
        label = rng.integers(0, 6, (n, 3)).astype(np.int32)
        batches.append({
            "image": rng.normal(size=(n, size, size, 3)).astype(np.float32),
            "input_ids": ids, "attention_mask": mask, "label": label,
            "answers": np.asarray([[ANSWERS[i].encode() for i in row] for row in label], object),
            "question_types": np.asarray([[b"color", b"count", b"color"]] * n, object),
            "image_id": np.arange(10 * b, 10 * b + n, dtype=np.int32)})
    built, evaluators, variables = _evaluators(
        "vqa", VQA, {"type": "vqa", "answers": ANSWERS, "batch_size": 8}, batches)
    hits: dict[str, list[float]] = {"color": [], "count": []}
    for batch in batches:
        for i in range(len(batch["image"])):
            for q in range(3):
                if batch["attention_mask"][i, q, 0] == 0:
                    continue
                logits = built.task.model.apply(
                    variables, image=batch["image"][i:i + 1],
                    input_ids=batch["input_ids"][i, q][None],
                    attention_mask=batch["attention_mask"][i, q][None]).logits
                kind = batch["question_types"][i, q].decode()
                hits[kind].append(float(int(np.argmax(logits)) == batch["label"][i, q]))
    got = evaluators["ev"](variables)
    assert got["num_questions"] == 3 * 11 - 2
    assert got["accuracy"] == pytest.approx(100 * np.mean(hits["color"] + hits["count"]))
    assert got["accuracy/color"] == pytest.approx(100 * np.mean(hits["color"]))
    assert got["accuracy/count"] == pytest.approx(100 * np.mean(hits["count"]))
    predictions = evaluators["ev"].predict(variables)
    assert list(predictions.image_ids[:3]) == [0, 0, 1]  # image 0's third question is padding


@pytest.mark.slow
def test_generative_vqa_answers_match_generate_answers(rng, tokenizer_dir):
    from jaxmm.data.tokenizers import load
    from jaxmm.generation import generate_answers

    tok = load(tokenizer_dir)
    v = tok.vocab_size
    config = {"task.mode": "generate", "tokenizer": tokenizer_dir, "model.name": "vqa",
              "model.config": {
                  "mode": "generate", "encoders": {"text": {"vocab_size": v}},
                  "fusion": {"kind": "early", "modalities": ("image", "text"), "num_layers": 1,
                             "d_model": 32, "num_heads": 4, "mlp_dim": 64, "max_positions": 32},
                  "decoder": {"vocab_size": v, "max_position_embeddings": 16, "num_layers": 1,
                              "d_model": 24, "num_heads": 4, "mlp_dim": 48, "bos_token_id": 2,
                              "eos_token_id": 3, "pad_token_id": 0}}}
    size = build_run(tiny_config("vqa", config)).example["image"].shape[1]
    gold = rng.choice(WORDS, (12, 2))
    batches = [{"image": rng.normal(size=(n, size, size, 3)).astype(np.float32),
                "input_ids": rng.integers(5, v, (n, 2, 5)).astype(np.int32),
                "attention_mask": np.ones((n, 2, 5), np.int32),
                "answers": np.asarray([[a.encode() for a in row] for row in gold[o:o + n]],
                                      object)} for o, n in ((0, 8), (8, 4))]
    built, evaluators, variables = _evaluators(
        "vqa", config, {"type": "vqa", "max_new_tokens": 3, "batch_size": 8}, batches)
    variables = _scrambled(variables, rng, scale=0.3)
    want = []
    for b in batches:
        for i in range(len(b["image"])):
            seq = generate_answers(built.task.model, variables["params"], b["image"][[i, i]],
                                   b["input_ids"][i], b["attention_mask"][i], max_new_tokens=3)
            want += tok.decode(seq)
    predictions = evaluators["ev"].predict(variables)
    assert predictions.predictions == want and len(set(want)) > 1
    assert predictions.gold == [[a] for a in gold.reshape(-1)]
    hits = [p == g for p, g in zip(want, gold.reshape(-1))]
    assert evaluators["ev"].score(predictions)["accuracy"] == pytest.approx(100 * np.mean(hits))


# -- generated text: captions and transcripts ------------------------------------


def _captioner(vocab):
    tower = {"num_layers": 1, "d_model": 32, "num_heads": 2, "mlp_dim": 64}
    return {"model.name": "captioner", "model.config": {
        "encoder": "vit", "encoder_config": {**tower, "image_size": 16, "patch_size": 8},
        "decoder": {**tower, "vocab_size": vocab, "max_position_embeddings": 16,
                    "bos_token_id": 2, "eos_token_id": 3, "pad_token_id": 0}}}


@pytest.mark.slow
@pytest.mark.parametrize("decoding", [
    {}, {"num_beams": 3, "length_penalty": 0.6, "repetition_penalty": 1.5,
         "no_repeat_ngram_size": 2}], ids=["greedy", "beam-penalties"])
def test_captioning_matches_generate_and_pycocoevalcap(rng, tokenizer_dir, decoding):
    from jaxmm.data.tokenizers import load

    tok = load(tokenizer_dir)
    caption = lambda: " ".join(rng.choice(WORDS, 4)).encode()  # noqa: E731
    batches = [{"image": rng.normal(size=(n, 16, 16, 3)).astype(np.float32),
                "image_id": np.arange(100 * i, 100 * i + n, dtype=np.int32),
                "captions": np.asarray([[caption(), caption()] for _ in range(n)], object)}
               for i, n in enumerate((16, 4))]
    built, evaluators, variables = _evaluators(
        "captioning", {**_captioner(tok.vocab_size), "tokenizer": tokenizer_dir},
        {"type": "captioning", "max_new_tokens": 6, **decoding}, batches)
    variables = _scrambled(variables, rng)
    model = built.task.model
    images = np.concatenate([b["image"] for b in batches])
    enc = model.apply(variables, images, method="encode")
    tokens = jaxmm.generate(model, variables["params"], encoder_outputs=enc.last_hidden_state,
                            max_new_tokens=6, **decoding).sequences
    want = tok.decode(np.asarray(tokens))
    if decoding.get("no_repeat_ngram_size") == 2:  # the option reached the generator
        for row in np.asarray(tokens):
            bigrams = list(zip(row[:-1], row[1:]))
            real = [g for g in bigrams if 0 not in g]
            assert len(real) == len(set(real))
    ids = [int(i) for b in batches for i in b["image_id"]]
    refs = {i: [c.decode() for c in row] for b in batches
            for i, row in zip(b["image_id"].tolist(), b["captions"])}
    predictions = evaluators["ev"].predict(variables)
    assert predictions.captions == want and predictions.ids.tolist() == ids
    assert len(set(want)) > 1  # image-dependent captions
    scores = evaluators["ev"].score(predictions)
    metrics = caption_metrics(dict(zip(ids, want)), refs)
    assert {k: scores[k] for k in metrics} == pytest.approx(metrics)
    assert scores["repeated_2grams"] == pytest.approx(repeated_ngram_rate(want, 2))


@pytest.mark.slow
def test_wer_matches_jiwer(rng, tokenizer_dir):
    from jaxmm.data.tokenizers import load

    tok = load(tokenizer_dir)
    whisper = {"model.name": "whisper", "model.size": "tiny", "model.config": {
        "vocab_size": tok.vocab_size, "num_mel_bins": 16, "max_source_positions": 16,
        "num_layers": 1, "num_decoder_layers": 1}, "tokenizer": tokenizer_dir}
    batches = [{"input_features": rng.normal(size=(n, 16, 32)).astype(np.float32),
                "text": np.asarray([" ".join(rng.choice(WORDS, 3)).encode() for _ in range(n)],
                                   object)} for n in (8, 8, 2)]
    built, evaluators, variables = _evaluators(
        "asr", whisper, {"type": "wer", "max_new_tokens": 5, "batch_size": 8}, batches)
    variables = _scrambled(variables, rng)
    model = built.task.model
    features = np.concatenate([b["input_features"] for b in batches])
    enc = model.apply(variables, features, method="encode")
    hyps = tok.decode(np.asarray(jaxmm.generate(
        model, variables["params"], encoder_outputs=enc.last_hidden_state,
        max_new_tokens=5).sequences))
    refs = [t.decode() for b in batches for t in b["text"]]
    got = evaluators["ev"](variables)
    assert got["num_examples"] == 18 and len(set(hyps)) > 1
    assert got["wer"] == pytest.approx(wer(refs, hyps))
    assert got["cer"] == pytest.approx(cer(refs, hyps))


def test_caption_scores_without_java(monkeypatch):
    """No Java on the machine: caption scoring still works (BLEU/ROUGE-L/CIDEr on
    whitespace tokens, no METEOR) instead of failing after training."""
    import shutil

    from jaxmm.evaluate.captioning import score_captions

    refs = {1: ["a red circle", "one red shape"], 2: ["a blue square", "two shapes"],
            3: ["a green diamond", "green shapes"]}
    hyps = {1: "a red circle", 2: "a blue circle", 3: "a red diamond"}
    real_which = shutil.which
    monkeypatch.setattr(shutil, "which", lambda cmd, *a, **k: None if cmd == "java"
                        else real_which(cmd, *a, **k))
    scores = score_captions(hyps, refs)
    assert "METEOR" not in scores
    expected = caption_metrics(hyps, refs, metrics=("bleu", "rouge", "cider"), tokenize=False)
    assert scores == expected and scores["CIDEr"] > 0


# -- configuration -----------------------------------------------------------------


@pytest.mark.parametrize("entry,match", [
    ({"type": "retreival"}, r"Unknown evaluator 'retreival'.*Did you mean 'retrieval'"),
    ({"type": "retrieval", "kss": (1,)}, r"Unknown config key 'eval.evaluators.ev.kss'.*"
                                         r"'eval.evaluators.ev.ks'"),
    ({"type": "retrieval", "ks": (0,)}, r"eval.evaluators.ev: ks must be positive"),
    ({"every_steps": 3}, r"eval.evaluators.ev must be a section with a 'type'"),
])
def test_bad_evaluator_config_names_the_key(entry, match):
    with pytest.raises(ConfigError, match=match):
        resolve_config(tiny_config("lm", {"eval.evaluators.ev": entry}))


def test_evaluator_config_is_completed_and_overridable():
    cfg = resolve_config(tiny_config("lm", {"eval.evaluators.ev": {"type": "retrieval"}}),
                         ["--config.eval.evaluators.ev.ks=(1, 2)",
                          "--config.eval.evaluators.ev.every_steps=7"])
    entry = cfg.eval.evaluators.ev
    assert entry.ks == (1, 2) and entry.every_steps == 7 and entry.split is None
    assert set(cfg.eval.evaluators) == {"loss", "ev"}  # merged into the default loss one
    dropped = resolve_config(tiny_config("lm", {"eval.evaluators.loss": None}))
    assert not dropped.eval.evaluators
    assert set(EVALUATORS.names()) >= {"loss", "perplexity", "retrieval", "zero_shot",
                                       "captioning", "vqa", "classification", "glue", "wer"}
    built = build_run(tiny_config("lm"))
    with pytest.raises(ConfigError, match=r"No evaluator named 'lss'.*Did you mean 'loss'"):
        make_evaluators(built.config, built.eval_context(), ("lss",))


DETR = {"model.name": "detr", "model.size": "tiny", "task.name": "detection",
        "model.config": {"num_layers": 1, "d_model": 32, "num_heads": 2, "mlp_dim": 64,
                         "num_queries": 4, "num_classes": 3, "dropout_rate": 0.0}}


def test_coco_map_scores_the_models_detections_with_pycocotools(rng):
    """predict() gives every real image's detections (the model applied unsharded) and
    ground truth in order; score() is pycocotools' COCOeval of them."""
    from jaxmm.evaluate.detection import coco_box_metrics, detr_detections

    batches = []
    for b, n in enumerate((8, 3)):
        centres = rng.uniform(0.3, 0.7, (n, 3, 2))
        sizes = rng.uniform(0.1, 0.4, (n, 3, 2))
        mask = (rng.random((n, 3)) < 0.7).astype(np.float32)
        mask[:, 0] = 1.0
        batches.append({
            "image": rng.normal(size=(n, 32, 32, 3)).astype(np.float32),
            "boxes": (np.concatenate([centres, sizes], -1) * mask[..., None]).astype(
                np.float32),
            "labels": (rng.integers(0, 3, (n, 3)) * mask).astype(np.int32),
            "box_mask": mask, "image_id": np.arange(10 * b, 10 * b + n, dtype=np.int32)})
    built, evaluators, variables = _evaluators(
        "detection", DETR, {"type": "coco_map", "batch_size": 8, "image_size": 64}, batches)
    out = [built.task.model.apply(variables, b["image"]) for b in batches]
    boxes, scores, labels = detr_detections(np.concatenate([o.logits for o in out]),
                                            np.concatenate([o.pred_boxes for o in out]))
    real = np.concatenate([b["box_mask"] for b in batches]) > 0
    gt_boxes = [x[m] for x, m in zip(np.concatenate([b["boxes"] for b in batches]), real)]
    gt_labels = [x[m] for x, m in zip(np.concatenate([b["labels"] for b in batches]), real)]

    predictions = evaluators["ev"].predict(variables)
    assert list(predictions.image_ids) == [0, 1, 2, 3, 4, 5, 6, 7, 10, 11, 12]
    np.testing.assert_allclose(predictions.boxes, boxes, atol=1e-5)
    np.testing.assert_allclose(predictions.scores, scores, atol=1e-5)
    np.testing.assert_array_equal(predictions.labels, labels)
    for got, want in zip(predictions.gt_boxes, gt_boxes):
        np.testing.assert_array_equal(got, want)
    assert (predictions.image_size, predictions.num_classes) == (64, 3)
    want = coco_box_metrics(gt_boxes, gt_labels, list(boxes), list(scores), list(labels),
                            image_size=64, num_classes=3)
    got = evaluators["ev"](variables)
    assert got.pop("num_images") == 11
    assert got == pytest.approx(want, abs=1e-6)
    # Ground-truth boxes as detections score 1 (the metric is not blind to the boxes).
    perfect = dataclasses.replace(
        predictions, boxes=np.stack([np.pad(g, ((0, 4 - len(g)), (0, 0))) for g in gt_boxes]),
        scores=np.stack([np.pad(np.ones(len(g)), (0, 4 - len(g))) for g in gt_boxes]),
        labels=np.stack([np.pad(g, (0, 4 - len(g))) for g in gt_labels]))
    assert evaluators["ev"].score(perfect)["ap50"] == pytest.approx(1.0)
