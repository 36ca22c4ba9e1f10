"""``jaxmm demo``: train and evaluate multimodal models on the built-in data.

One command, run by the README's main set-up step (``make demo``)::

    jaxmm demo --workdir runs/demo [--size small] [--steps-scale 1.0] [--runs all]

1. builds the built-in ``jaxmm_scenes`` dataset (rendered scenes, captions,
   questions/answers) into ``WORKDIR/data`` and trains a WordPiece tokenizer on
   its training text;
2. trains models with the real trainer (``jaxmm.train.run``, configs in
   ``configs/demo.py``): by default (:data:`DEFAULT_RUNS`) a CLIP-style dual encoder
   (InfoNCE), a ViT->GPT captioner with cross-attention and an early-fusion VQA
   classifier; ``runs=`` adds a DETR object detector (``detection``: every run is
   :data:`RUNS`, ``--runs all``);
3. evaluates the exported params on the whole test split with the evaluators
   each run's config lists (:mod:`jaxmm.evaluate.evaluators`, the same ones
   ``jaxmm eval`` and training run): image<->text retrieval recall@K with all
   five captions per image, zero-shot classification, caption
   BLEU/METEOR/ROUGE-L/CIDEr of generated captions (``jaxmm.generate``),
   VQA accuracy by question type and COCO box mAP (pycocotools), each next to
   chance or a trivial baseline;
4. writes ``results.json``/``results.md``, ``samples.png`` (test images with
   generated captions, answers, detected boxes and the captioner's cross-attention
   map), ``attention.png`` (per-token cross-attention) and ``training_curves.png``.

Each run keeps its checkpoints and TensorBoard logs in ``WORKDIR/<run>``.
Re-running the command resumes unfinished training and reuses finished runs.
"""

from __future__ import annotations

import json
import os
import platform
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["run_demo"]

RUNS = ("clip", "captioner", "vqa", "detection")
# What ``jaxmm demo`` trains unless ``runs=`` says otherwise (the 15-minute default on
# two CPU cores); ``detection`` adds about 5 minutes (1500 steps of batch 64).
DEFAULT_RUNS = ("clip", "captioner", "vqa")


def resolve_runs(runs: str | Sequence[str] | None) -> tuple[str, ...]:
    """``"all"``, a comma-separated string or a sequence of run names (``None``: the
    default runs) -> the runs in :data:`RUNS` order."""
    if runs is None:
        return DEFAULT_RUNS
    names = [r.strip() for r in (runs.split(",") if isinstance(runs, str) else runs)
             if r.strip()]
    if names == ["all"]:
        return RUNS
    unknown = [r for r in names if r not in RUNS]
    if unknown or not names:
        raise ValueError(f"Unknown demo run {unknown[0] if unknown else ''!r}; choose from "
                         f"{', '.join(RUNS)} (comma-separated), or all.")
    return tuple(r for r in RUNS if r in names)


def _log(msg: str) -> None:
    print(f"[demo] {msg}", flush=True)


def _config_file() -> str:
    """``configs/demo.py``: from the source checkout, or shipped in the installed package
    (never a ``demo.py`` of the current directory)."""
    from jaxmm.config import builtin_config_dir

    path = str(builtin_config_dir() / "demo.py")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"configs/demo.py is missing from the jaxmm installation ({path}); "
                                "reinstall jaxmm.")
    return path


# ---------------------------------------------------------------------------
# Data and tokenizer
# ---------------------------------------------------------------------------


def _prepare(workdir: str, size: str):
    from jaxmm.data import builtin, tokenizers

    data_dir = os.path.join(workdir, "data")
    _log(f"building the built-in dataset (size={size}) in {data_dir}")
    builder = builtin.build(data_dir, size)
    tok_dir = os.path.join(workdir, "tokenizer")
    if not os.path.exists(os.path.join(tok_dir, "tokenizer.json")):
        tokenizers.train_tokenizer("wordpiece", builtin.corpus_path(builder), 256,
                                   out_dir=tok_dir, min_frequency=1, model_max_length=64)
    tok = tokenizers.load(tok_dir)
    return data_dir, tok_dir, tok, builder


def _test_examples(builder) -> list[dict[str, Any]]:
    """The raw test split (reference strings, questions, answers, labels)."""
    import tensorflow_datasets as tfds

    source = tfds.data_source(builder.info.full_name.rsplit("/", 1)[0],
                              data_dir=builder.data_dir_root, split="test")
    out = []
    for i in range(len(source)):
        ex = source[i]
        out.append({
            "image_id": int(ex["image_id"]),
            "image": ex["image"],
            "label": int(ex["label"]),
            "captions": [c.decode() for c in ex["captions"]],
            "questions": [q.decode() for q in ex["questions"]],
            "answers": [a.decode() for a in ex["answers"]],
            "question_types": [t.decode() for t in ex["question_types"]],
        })
    return out


def _batches(run: str, data_dir: str, tok, size: str, batch_size: int = 50,
             split: str = "test"):
    """A split's batches (default: test) with each run's evaluation preprocessing."""
    from jaxmm.config import load_config
    from jaxmm.data import make_iterator

    cfg = load_config(f"{_config_file()}:{run},data_dir={data_dir},size={size}")
    it = make_iterator(cfg.data, split=split, batch_size=batch_size, seed=0, shuffle=False,
                       repeat=False, process_index=0, process_count=1, tokenizer=tok)
    try:
        for batch in it:
            keep = np.asarray(batch.get("example_mask", np.ones(len(batch["image"])))) > 0
            yield {k: np.asarray(v)[keep] for k, v in batch.items()}
    finally:
        if hasattr(it, "close"):
            it.close()


# ---------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------


def _train(run: str, workdir: str, data_dir: str, tok_dir: str, vocab: int, size: str,
           steps_scale: float) -> dict:
    import jaxmm.train
    from jaxmm.config import load_config

    defaults = _default_steps()
    steps = max(10, int(round(defaults[run] * steps_scale)))
    cfg = load_config(f"{_config_file()}:{run},data_dir={data_dir},tokenizer={tok_dir},"
                      f"vocab={vocab},size={size},steps={steps}")
    run_dir = os.path.join(workdir, run)
    summary_path = os.path.join(run_dir, "summary.json")
    if os.path.exists(summary_path):
        with open(summary_path) as f:
            summary = json.load(f)
        if summary.get("step") == steps and not summary.get("preempted"):
            _log(f"{run}: already trained ({steps} steps), reusing {run_dir}")
            return summary
    _log(f"training {run} for {steps} steps -> {run_dir}")
    start = time.time()
    summary = jaxmm.train.run(cfg, run_dir)
    summary["train_seconds"] = time.time() - start
    return summary


def _demo_config_module():
    """``configs/demo.py`` as a module (its constants: steps, decodings)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("_jaxmm_demo_config", _config_file())
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _default_steps() -> dict[str, int]:
    return dict(_demo_config_module().DEFAULT_STEPS)


# ---------------------------------------------------------------------------
# Evaluation: the evaluators each run's config lists, on its exported params
# ---------------------------------------------------------------------------


def _evaluators(workdir: str, run: str, data_dir: str, tok_dir: str, vocab: int, size: str,
                only: tuple[str, ...] = (), validation: bool = False):
    """``(built run, {name: evaluator}, exported variables, validation evaluators)`` of a
    finished run (``only``: just these evaluators); the last (with ``validation``, else
    empty) are the same evaluators on the validation split."""
    from jaxmm.config import load_config
    from jaxmm.evaluate.evaluators import make_evaluators
    from jaxmm.train import build_run, load_exported

    built = build_run(load_config(f"{_config_file()}:{run},data_dir={data_dir},"
                                  f"tokenizer={tok_dir},vocab={vocab},size={size}"))
    _, variables = load_exported(os.path.join(workdir, run, "export"),
                                 shardings=built.variable_shardings)
    context = built.eval_context()
    evaluators = make_evaluators(built.config, context, only)
    on_validation = {}
    if validation:
        config = built.config.copy_and_resolve_references()
        with config.unlocked():
            for entry in config.eval.evaluators.values():
                entry.split = "validation"
        on_validation = make_evaluators(config, context, only)
    drop_loss = lambda d: {n: e for n, e in d.items() if n != "loss"}  # noqa: E731
    return built, drop_loss(evaluators), variables, drop_loss(on_validation)


def evaluate_clip(evaluators: dict, variables) -> dict[str, float]:
    """Retrieval recall@K (5 captions per image) and zero-shot shape accuracy (percent)."""
    out = evaluators["retrieval"](variables)
    out["zero_shot_accuracy"] = 100.0 * evaluators["zero_shot"](variables)["accuracy"]
    if "zero_shot_ensemble" in evaluators:
        out["zero_shot_ensemble_accuracy"] = 100.0 * evaluators["zero_shot_ensemble"](
            variables)["accuracy"]
    out["num_images"], out["num_texts"] = int(out["num_images"]), int(out["num_texts"])
    return out


def _evaluate(workdir: str, data_dir: str, tok_dir: str, tok, size: str,
              decodings: Sequence[str], runs: Sequence[str]
              ) -> tuple[dict[str, Any], dict[str, Any]]:
    """Scores of the exported ``runs`` on the test split (and the detector's image-blind
    baseline), and what the pictures need (the captioner, its first test images,
    generated tokens and captions, VQA answers, detections)."""
    where = (data_dir, tok_dir, tok.vocab_size, size)
    scores: dict[str, Any] = {}
    pictures: dict[str, Any] = {}
    if "clip" in runs:
        _, clip, variables, _ = _evaluators(workdir, "clip", *where)
        scores["clip"] = evaluate_clip(clip, variables)
    if "captioner" in runs:
        built, captioner, variables, on_validation = _evaluators(
            workdir, "captioner", *where, only=tuple(f"captions_{d}" for d in decodings),
            validation=True)
        scores["decodings"], best, predictions = evaluate_decodings(captioner, on_validation,
                                                                     variables)
        scores["captioner"] = dict(scores["decodings"][best], decoding=best)
        pictures["captioner"] = {
            "model": built.task.model, "params": variables["params"], "best": best,
            "images": next(_batches("captioner", data_dir, tok, size))["image"],
            "sequences": predictions[best].tokens,
            "captions": {int(i): c for i, c in zip(predictions[best].ids,
                                                    predictions[best].captions)},
            "decodings": {name: {int(i): c for i, c in zip(p.ids, p.captions)}
                          for name, p in predictions.items()},
        }
    if "vqa" in runs:
        _, vqa, variables, _ = _evaluators(workdir, "vqa", *where)
        scores["vqa"], pictures["answers"] = evaluate_vqa(vqa["vqa"], variables)
    if "detection" in runs:
        _, detection, variables, _ = _evaluators(workdir, "detection", *where)
        predictions = detection["coco"].predict(variables)
        scores["detection"] = detection["coco"].score(predictions)
        scores["detection_baseline"] = detection_baseline(
            _batches("detection", data_dir, tok, size, split="train"), predictions)
        pictures["detections"] = {int(i): (b, s, c) for i, b, s, c in zip(
            predictions.image_ids, predictions.boxes, predictions.scores, predictions.labels)}
    return scores, pictures


def detection_baseline(train_batches, test) -> dict[str, float]:
    """COCO scores (mAP, AP50, ...) on the test images of ``test``
    (:class:`~jaxmm.evaluate.evaluators.detection.DetectionPredictions`) of the
    image-blind detector that puts each class's mean training box on every image, scored
    by the class's frequency (:func:`jaxmm.evaluate.detection.mean_box_baseline`)."""
    from jaxmm.evaluate.detection import coco_box_metrics, mean_box_baseline

    boxes, labels = [], []
    for batch in train_batches:
        real = np.asarray(batch["box_mask"]) > 0
        boxes += [b[m] for b, m in zip(np.asarray(batch["boxes"]), real)]
        labels += [c[m] for c, m in zip(np.asarray(batch["labels"]), real)]
    if not boxes:
        raise ValueError("The detection baseline needs training boxes; the train split "
                         "has no examples.")
    guess = mean_box_baseline(boxes, labels, test.num_classes, len(test.gt_boxes))
    return coco_box_metrics(test.gt_boxes, test.gt_labels, *guess,
                            image_size=test.image_size, num_classes=test.num_classes)


def evaluate_decodings(test: dict, validation: dict, variables
                       ) -> tuple[dict[str, dict[str, float]], str, dict[str, Any]]:
    """Every decoding (``captions_<name>`` evaluators) on the test split, and the one with
    the best validation CIDEr (ties: the first in config order).

    Returns ``({name: test scores + validation_CIDEr}, best name, {name: test
    predictions})``."""
    scores, predictions = {}, {}
    order = list(_demo_config_module().DECODINGS)  # config order (the config sorts keys)
    for key in sorted(test, key=lambda k: order.index(k.removeprefix("captions_"))):
        evaluator, name = test[key], key.removeprefix("captions_")
        predictions[name] = evaluator.predict(variables)
        scores[name] = evaluator.score(predictions[name])
        scores[name]["validation_CIDEr"] = validation[key].evaluate(variables)["CIDEr"]
    best = max(scores, key=lambda n: scores[n]["validation_CIDEr"])  # first among equals
    return scores, best, predictions


def evaluate_vqa(evaluator, variables) -> tuple[dict[str, float], dict[int, list[str]]]:
    """VQA accuracy overall and by question type, and each image's answers."""
    predictions = evaluator.predict(variables)
    scores = evaluator.score(predictions)
    scores["num_questions"] = int(scores["num_questions"])
    answers: dict[int, list[str]] = {}
    for image_id, answer in zip(predictions.image_ids, predictions.predictions):
        answers.setdefault(int(image_id), []).append(answer)
    return scores, answers


def caption_baselines(train_captions: Sequence[str], examples) -> dict[str, dict]:
    """Two trivial captioners: every image gets the most frequent training caption
    ("constant"), or the first caption of a *different* test image ("random",
    the chance level of an image-blind captioner)."""
    from jaxmm.evaluate.captioning import score_captions

    common = Counter(train_captions).most_common(1)[0][0]
    refs = {e["image_id"]: e["captions"] for e in examples}
    shifted = {e["image_id"]: examples[(i + 1) % len(examples)]["captions"][0]
               for i, e in enumerate(examples)}
    return {"constant": dict(score_captions({k: common for k in refs}, refs), caption=common),
            "random": score_captions(shifted, refs)}


def vqa_baselines(train_source, examples) -> dict[str, float]:
    """Chance and the majority answer per question type (learned from train)."""
    from jaxmm.data.scenes import ANSWERS

    by_type: dict[str, Counter] = {}
    for ex in train_source:
        for a, t in zip(ex["answers"], ex["question_types"]):
            by_type.setdefault(t.decode(), Counter())[a.decode()] += 1
    prior = {t: c.most_common(1)[0][0] for t, c in by_type.items()}
    hits: dict[str, list[float]] = {}
    for e in examples:
        for a, t in zip(e["answers"], e["question_types"]):
            hits.setdefault(t, []).append(float(prior.get(t) == a))
    every = [x for v in hits.values() for x in v]
    out = {"majority_per_type": 100.0 * float(np.mean(every)), "chance": 100.0 / len(ANSWERS)}
    out.update({f"majority/{t}": 100.0 * float(np.mean(v)) for t, v in sorted(hits.items())})
    return out


# ---------------------------------------------------------------------------
# Pictures
# ---------------------------------------------------------------------------


# samples.png draws the detections whose class probability is at least this.
DETECTION_THRESHOLD = 0.5


def _display(image: np.ndarray) -> np.ndarray:
    """A raw uint8 test image -> floats in [0, 1]."""
    return np.asarray(image, np.float32) / 255.0


def _telling_example(decodings: dict[str, dict[int, str]], examples) -> int:
    """The test image that shows the decodings apart best: the first whose captions under
    the decodings differ most (most distinct captions, then most repeated 2-grams across
    them); the first image when all decodings agree everywhere."""
    from jaxmm.evaluate.captioning import repeated_ngram_rate

    def score(e):
        captions = [c[e["image_id"]] for c in decodings.values()]
        return len(set(captions)), repeated_ngram_rate(captions, 2)

    scores = [score(e) for e in examples]
    return scores.index(max(scores))  # the first among equals


def draw_samples(workdir: str, examples, tok, *, count: int = 8,
                 captioner: dict | None = None, answers: dict[int, list[str]] | None = None,
                 detections: dict[int, tuple] | None = None) -> str | None:
    """``samples.png``: the first ``count`` test images with what each trained run says
    about them: the caption (and, below, the captioner's cross-attention map of its first
    colour or shape word), the answer to the first question, and the detected boxes with
    their shape and probability (at least :data:`DETECTION_THRESHOLD`). With the
    captioner, also ``decodings.png`` (one image's caption under each decoding) and
    ``attention.png`` (the first image's per-word cross-attention). Returns the path of
    ``samples.png`` (``None`` when there are no test images)."""
    from jaxmm.data.scenes import COLORS, SHAPES
    from jaxmm.viz import (
        cross_attention_maps,
        save_attention_figure,
        save_caption_comparison,
        save_sample_grid,
    )

    n = min(count, len(examples))
    if n == 0:
        return None
    shown = [_display(e["image"]) for e in examples[:n]]
    texts: list[list[str]] = [[] for _ in range(n)]
    chosen = None
    if captioner is not None:
        c = captioner
        n = min(n, len(c["images"]))
        if c["decodings"]:
            i = _telling_example(c["decodings"], examples[:len(c["images"])])
            key = examples[i]["image_id"]
            save_caption_comparison(
                os.path.join(workdir, "decodings.png"), _display(examples[i]["image"]),
                {(f"{d} (chosen)" if d == c["best"] else d): caps[key]
                 for d, caps in c["decodings"].items()},
                examples[i]["captions"], title="the captioner's decodings of one test image")
        content = set(COLORS) | set(SHAPES)
        seqs = np.stack([np.asarray(q) for q in c["sequences"][:n]])
        maps = cross_attention_maps(c["model"], c["params"], c["images"][:n], seqs)
        special = set(tok.all_special_ids)
        chosen, picked = [], []
        for i in range(n):
            tokens = [int(t) for t in seqs[i, 1:]]
            words = [j for j, t in enumerate(tokens) if t not in special]
            # Attention of the first colour or shape word if there is one.
            pick = next((j for j in words if tok.id_to_token(tokens[j]) in content), None)
            pick = words[0] if pick is None and words else (0 if pick is None else pick)
            chosen.append(maps[i, pick])
            picked.append(tok.id_to_token(tokens[pick]))
            texts[i].append(c["captions"][examples[i]["image_id"]])
        tokens = [int(t) for t in seqs[0, 1:]]
        keep = [j for j, t in enumerate(tokens) if t not in special][:8]
        save_attention_figure(
            os.path.join(workdir, "attention.png"), shown[0],
            [tok.id_to_token(tokens[j]) for j in keep], [maps[0, j] for j in keep],
            title=f"captioner cross-attention: {c['captions'][examples[0]['image_id']]}")
    boxes = None
    for i, e in enumerate(examples[:n]):
        if answers is not None:
            texts[i].append(f"Q: {e['questions'][0]}? A: {answers[e['image_id']][0]}")
        if detections is not None:
            b, p, k = detections[e["image_id"]]
            keep = np.flatnonzero(np.asarray(p) >= DETECTION_THRESHOLD)
            boxes = boxes if boxes is not None else [[] for _ in range(n)]
            boxes[i] = [(b[j], f"{SHAPES[int(k[j])]} {p[j]:.2f}") for j in keep]
            texts[i].append(f"boxes: {len(keep)} detections (p >= {DETECTION_THRESHOLD:g})")
        if chosen is not None:
            texts[i].append(f"(map: '{picked[i]}')")
    return save_sample_grid(os.path.join(workdir, "samples.png"), shown[:n],
                            ["\n".join(t) for t in texts[:n]], attention=chosen, boxes=boxes)


# ---------------------------------------------------------------------------
# Orchestration
# ---------------------------------------------------------------------------


def _table(results: dict) -> str:
    rows = [("model", "metric", "jaxmm", "baseline", "baseline is")]
    b = results["baselines"]
    if "clip" in results:
        c = results["clip"]
        for k in ("i2t_R@1", "i2t_R@5", "t2i_R@1", "t2i_R@5"):
            rows.append(("CLIP", k, f"{c[k]:.1f}%", f"{b['retrieval'][k]:.1f}%", "chance"))
        rows.append(("CLIP", "zero-shot shape", f"{c['zero_shot_accuracy']:.1f}%",
                     f"{b['zero_shot_chance']:.1f}%", "chance"))
        if "zero_shot_ensemble_accuracy" in c:
            rows.append(("CLIP", "zero-shot shape, prompt ensemble",
                         f"{c['zero_shot_ensemble_accuracy']:.1f}%",
                         f"{b['zero_shot_chance']:.1f}%", "chance"))
    if "captioner" in results:
        cap, cb = results["captioner"], b["captioning"]
        for k in (k for k in ("BLEU-4", "CIDEr", "METEOR", "ROUGE-L") if k in cap):
            rows.append(("captioner", k, f"{cap[k]:.3f}", f"{cb['random'][k]:.3f}",
                         "caption of another image"))
            rows.append(("captioner", k, f"{cap[k]:.3f}", f"{cb['constant'][k]:.3f}",
                         "most frequent caption"))
        rows.append(("captioner", "repeated 2-grams", f"{cap['repeated_2grams']:.1f}%", "",
                     ""))
    if "vqa" in results:
        v, vb = results["vqa"], b["vqa"]
        rows.append(("VQA", "accuracy", f"{v['accuracy']:.1f}%",
                     f"{vb['majority_per_type']:.1f}%", "majority answer per question type"))
        rows.append(("VQA", "accuracy", f"{v['accuracy']:.1f}%", f"{vb['chance']:.1f}%",
                     "chance"))
        for key in sorted(k for k in v if k.startswith("accuracy/")):
            kind = key.split("/", 1)[1]
            if f"majority/{kind}" in vb:
                rows.append(("VQA", f"{kind} questions", f"{v[key]:.1f}%",
                             f"{vb[f'majority/{kind}']:.1f}%", "majority answer of the type"))
    if "detection" in results:
        d, db = results["detection"], b["detection"]
        for key, name in (("ap50", "box AP@0.5"), ("ap75", "box AP@0.75"),
                          ("map", "box mAP@[.5:.95]")):
            rows.append(("DETR", name, f"{100 * d[key]:.1f}", f"{100 * db[key]:.1f}",
                         "mean training box of each class"))
    return _markdown(rows)


def _decodings_table(results: dict) -> str:
    """The captioner's decodings side by side (test split; the chosen one is marked)."""
    rows = [("decoding", "CIDEr", "BLEU-4", "repeated 2-grams", "repeated 3-grams",
             "validation CIDEr")]
    best = results["captioner"]["decoding"]
    for name, d in results["decodings"].items():
        rows.append((f"{name} (chosen)" if name == best else name, f"{d['CIDEr']:.3f}",
                     f"{d['BLEU-4']:.3f}", f"{d['repeated_2grams']:.1f}%",
                     f"{d['repeated_3grams']:.1f}%", f"{d['validation_CIDEr']:.3f}"))
    return _markdown(rows)


def _markdown(rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["| " + " | ".join(x.ljust(w) for x, w in zip(r, widths)) + " |" for r in rows]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def results_markdown(results: dict) -> str:
    """``results.md``: the scores against baselines, then the captioner's decodings (only
    test-split scores: no timings, so two runs on one machine write the same file)."""
    if "decodings" not in results:
        return f"{_table(results)}\n"
    return (f"{_table(results)}\n\nThe captioner's decodings (test split; the chosen one "
            f"has the best validation CIDEr and draws `samples.png`):\n\n"
            f"{_decodings_table(results)}\n")


def _peak_rss_gb() -> float:
    """Peak resident memory of the demo process (GB; the short-lived Java tokenizer
    processes of the caption metrics are not counted)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def _retrieval_chance(num_images: int, num_texts: int) -> dict[str, float]:
    per_image = num_texts / num_images
    out = {}
    for k in (1, 5):
        # A random ranking of texts: P(some caption of the image in the top k).
        miss = 1.0
        for j in range(k):
            miss *= max(0.0, (num_texts - per_image - j) / (num_texts - j))
        out[f"i2t_R@{k}"] = 100.0 * (1.0 - miss)
        out[f"t2i_R@{k}"] = 100.0 * min(1.0, k / num_images)
    return out


README_START = "<!-- demo-results:start (scripts/demo_readme.py writes this block) -->"
README_END = "<!-- demo-results:end -->"


def readme_section(results: dict) -> str:
    """The README's demo-results block, rendered from a run's ``results.json``: how long
    each stage took and the ``results.md`` tables (never typed by hand)."""
    t = results.get("timing", {})
    train = results.get("train", {})
    runs = results.get("runs", DEFAULT_RUNS)
    minutes = "/".join(f"{(train.get(r, {}).get('train_seconds') or 0) / 60:.1f}" for r in runs)
    when = (f"{results['seconds'] / 60:.1f} minutes after installation: "
            f"{t.get('prepare_seconds', 0):.0f} s data and tokenizer, {minutes} minutes of "
            f"training ({', '.join(runs)}), {t.get('evaluate_seconds', 0) / 60:.1f} minutes of "
            f"evaluation and pictures; peak memory {t.get('peak_rss_gb', 0):.1f} GB")
    machine = results.get("machine", "")
    return (f"{README_START}\nResults of `make demo` (`--size {results['size']}`, "
            f"`--steps-scale {results['steps_scale']:g}`) on {machine or 'this machine'} "
            f"({when}):\n\n{results_markdown(results)}{README_END}")


def run_demo(workdir: str, *, size: str = "small", steps_scale: float = 1.0,
             samples: int = 8, decodings: Sequence[str] | None = None,
             runs: str | Sequence[str] | None = None) -> dict:
    """The whole demo; returns the results dict (also written to results.json).

    ``decodings``: the captioner decodings to score (names of ``configs/demo.py``'s
    ``DECODINGS``; default all). ``runs``: which runs to train and score (names of
    :data:`RUNS`, comma-separated, or ``"all"``; default :data:`DEFAULT_RUNS`)."""
    import tensorflow_datasets as tfds

    from jaxmm.data.scenes import SHAPES
    from jaxmm.viz import plot_training_curves, read_metrics

    runs = resolve_runs(runs)
    known = list(_demo_config_module().DECODINGS)
    decodings = tuple(decodings or known)
    unknown = [d for d in decodings if d not in known]
    if unknown:
        raise ValueError(f"Unknown decoding {unknown[0]!r}; choose from {', '.join(known)}.")
    workdir = os.path.abspath(workdir)
    os.makedirs(workdir, exist_ok=True)
    start = time.time()
    data_dir, tok_dir, tok, builder = _prepare(workdir, size)
    prepared = time.time()

    summaries = {run: _train(run, workdir, data_dir, tok_dir, tok.vocab_size, size, steps_scale)
                 for run in runs}

    _log("evaluating on the test split")
    trained = time.time()
    examples = _test_examples(builder)
    results: dict[str, Any] = {"size": size, "steps_scale": steps_scale, "runs": list(runs)}
    scores, pictures = _evaluate(workdir, data_dir, tok_dir, tok, size, decodings, runs)
    baselines: dict[str, Any] = {}
    if "detection" in runs:
        baselines["detection"] = scores.pop("detection_baseline")
    results.update(scores)

    train = tfds.data_source(builder.info.full_name.rsplit("/", 1)[0],
                             data_dir=builder.data_dir_root, split="train")
    if "clip" in runs:
        baselines["retrieval"] = _retrieval_chance(results["clip"]["num_images"],
                                                   results["clip"]["num_texts"])
        baselines["zero_shot_chance"] = 100.0 / len(SHAPES)
    if "captioner" in runs:
        train_captions = [c.decode() for i in range(len(train)) for c in train[i]["captions"]]
        baselines["captioning"] = caption_baselines(train_captions, examples)
    if "vqa" in runs:
        baselines["vqa"] = vqa_baselines((train[i] for i in range(len(train))), examples)
    results["baselines"] = baselines
    results["train"] = {run: {k: summaries[run].get(k) for k in
                              ("step", "num_params", "train_seconds", "eval")}
                        for run in runs}
    captioner = pictures.get("captioner")
    if captioner is not None:
        results["samples"] = {str(e["image_id"]): {"caption": captioner["captions"][
            e["image_id"]], "references": e["captions"]} for e in examples[:samples]}

    _log("drawing samples, attention maps and training curves")
    draw_samples(workdir, examples, tok, count=samples, captioner=captioner,
                 answers=pictures.get("answers"), detections=pictures.get("detections"))
    curves = {run: read_metrics(os.path.join(workdir, run, "metrics.jsonl")) for run in runs}
    plot_training_curves(curves, os.path.join(workdir, "training_curves.png"),
                         metrics=["train/loss"] + [m for m in (
                             "train/i2t_accuracy", "train/accuracy") if any(
                             m in r for recs in curves.values() for r in recs)])
    results["seconds"] = time.time() - start
    # Timings and the machine go to results.json only (results.md stays deterministic).
    results["timing"] = {"prepare_seconds": prepared - start,
                         "evaluate_seconds": time.time() - trained,
                         "peak_rss_gb": _peak_rss_gb()}
    results["machine"] = f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPU cores"
    table = results_markdown(results)
    with open(os.path.join(workdir, "results.json"), "w") as f:
        json.dump(results, f, indent=2, default=float)
    with open(os.path.join(workdir, "results.md"), "w") as f:
        f.write(table)
    print("\n" + table, flush=True)
    pngs = ["samples.png"] + (["attention.png"] if captioner is not None else []) + [
        "training_curves.png"]
    _log(f"done in {results['seconds'] / 60:.1f} min; results, {', '.join(pngs)} are in "
         f"{workdir}")
    return results
