"""End to end: the README's main job (``jaxmm demo``) at a small size.

Runs the real path (dataset build, tokenizer, three ``jaxmm.train.run`` runs,
test-split evaluation, pictures) on the tiny built-in dataset with fewer steps,
and checks that every model beats chance / its trivial baseline.
"""

import json
import os
import subprocess
import sys

import pytest
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# A hang guard, not a time limit (several times the quiet-machine time): the demo's
# budget is its number of steps (--steps-scale), so a busy machine only makes it slower.
DEMO_HANG_GUARD_S = 3600


@pytest.mark.slow
@pytest.mark.heavy
def test_demo_end_to_end(tmp_path):
    workdir = tmp_path / "demo"
    proc = subprocess.run(
        [sys.executable, "-m", "jaxmm", "demo", "--workdir", str(workdir), "--size", "tiny",
         "--steps-scale", "0.4", "--samples", "4", "--decodings", "greedy,beam_no_repeat_3gram"],
        cwd=ROOT, capture_output=True, text=True, timeout=DEMO_HANG_GUARD_S,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "| model" in proc.stdout  # the printed results table
    results = json.loads((workdir / "results.json").read_text())
    base = results["baselines"]
    clip = results["clip"]
    # Retrieval: far above chance in both directions.
    assert clip["i2t_R@5"] > 3 * base["retrieval"]["i2t_R@5"]
    assert clip["t2i_R@5"] > 3 * base["retrieval"]["t2i_R@5"]
    # Captions are image-specific: better than captions of other images (chance).
    assert results["captioner"]["CIDEr"] > 1.5 * base["captioning"]["random"]["CIDEr"]
    assert results["captioner"]["BLEU-4"] > base["captioning"]["random"]["BLEU-4"]
    # VQA beats answering each question type's most common answer, and reads colours
    # from the image (far above that prior on colour questions).
    vqa, vb = results["vqa"], base["vqa"]
    assert vqa["accuracy"] > max(vb["majority_per_type"], 2 * vb["chance"])
    assert vqa["accuracy/color"] > 2 * vb["majority/color"]
    # Artefacts: checkpoints, TensorBoard logs, pictures.
    for run in ("clip", "captioner", "vqa"):
        assert os.listdir(workdir / run / "checkpoints")
        assert any(f.startswith("events.out.tfevents")
                   for f in os.listdir(workdir / run / "tensorboard"))
    for png in ("samples.png", "attention.png", "training_curves.png"):
        assert Image.open(workdir / png).size[0] > 200
    # The decodings asked for (two of the four, to keep the test short; each decoding is
    # its own compiled program) are scored side by side; the chosen one has the best
    # validation CIDEr.
    decodings = results["decodings"]
    assert list(decodings) == ["greedy", "beam_no_repeat_3gram"]
    chosen = results["captioner"]["decoding"]
    assert decodings[chosen]["validation_CIDEr"] == max(
        d["validation_CIDEr"] for d in decodings.values())
    assert decodings[chosen]["CIDEr"] == results["captioner"]["CIDEr"]
    assert decodings["beam_no_repeat_3gram"]["repeated_3grams"] == 0.0
    assert (workdir / "results.md").read_text().count("(chosen)") == 1
    assert Image.open(workdir / "decodings.png").size[0] > 200
    # Re-running reuses the finished runs instead of training again (scoring one decoding).
    again = subprocess.run(
        [sys.executable, "-m", "jaxmm", "demo", "--workdir", str(workdir), "--size", "tiny",
         "--steps-scale", "0.4", "--samples", "4", "--decodings", "greedy"],
        cwd=ROOT, capture_output=True, text=True, timeout=DEMO_HANG_GUARD_S,
    )
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout.count("already trained") == 3
    assert list(json.loads((workdir / "results.json").read_text())["decodings"]) == ["greedy"]


@pytest.mark.slow
@pytest.mark.heavy
def test_demo_detection_run_learns_boxes(tmp_path):
    """``--runs detection`` trains only the DETR: box AP far above the image-blind
    baseline (each class's mean training box on every image), scored by pycocotools on
    the test split; samples.png draws the boxes; no other run's files or rows."""
    workdir = tmp_path / "demo"
    args = [sys.executable, "-m", "jaxmm", "demo", "--workdir", str(workdir), "--size", "tiny",
            "--steps-scale", "0.4", "--samples", "4", "--runs", "detection"]
    proc = subprocess.run(args, cwd=ROOT, capture_output=True, text=True,
                          timeout=DEMO_HANG_GUARD_S)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = json.loads((workdir / "results.json").read_text())
    assert results["runs"] == ["detection"] and results["train"]["detection"]["step"] == 600
    det, base = results["detection"], results["baselines"]["detection"]
    assert det["num_images"] == 64
    assert det["ap50"] > max(0.05, 5 * base["ap50"]), (det, base)
    assert det["map"] > 5 * base["map"]
    assert not any(k in results for k in ("clip", "captioner", "vqa", "decodings"))
    table = (workdir / "results.md").read_text()
    assert table.count("| DETR ") == 3 and "decodings" not in table
    assert sorted(os.listdir(workdir)) == ["data", "detection", "results.json", "results.md",
                                           "samples.png", "tokenizer", "training_curves.png"]
    assert Image.open(workdir / "samples.png").size[0] > 200


def test_demo_runs_are_named_or_all():
    from jaxmm.demo import DEFAULT_RUNS, RUNS, resolve_runs

    assert resolve_runs(None) == DEFAULT_RUNS == ("clip", "captioner", "vqa")
    assert resolve_runs("all") == RUNS and "detection" in RUNS
    assert resolve_runs("detection, clip") == ("clip", "detection")  # RUNS order
    assert resolve_runs(["vqa"]) == ("vqa",)
    for bad in ("clip,detr", ""):
        with pytest.raises(ValueError, match="choose from clip, captioner, vqa, detection"):
            resolve_runs(bad)
    proc = subprocess.run([sys.executable, "-m", "jaxmm", "demo", "--workdir",
                           "unused", "--runs", "clip,ocr"], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 2 and "Unknown demo run 'ocr'" in proc.stderr
    assert not os.path.exists(os.path.join(ROOT, "unused"))


def test_results_table_has_the_detection_rows_of_the_runs_it_has():
    from jaxmm.demo import results_markdown

    detection = {"map": 0.412, "ap50": 0.9, "ap75": 0.5, "num_images": 250.0}
    both = results_markdown(_results(runs=["clip", "captioner", "vqa", "detection"],
                                     detection=detection,
                                     baselines=dict(_results()["baselines"], detection={
                                         "map": 0.001, "ap50": 0.02, "ap75": 0.0})))
    assert "| DETR      | box AP@0.5       | 90.0" in both and "| 2.0 " in both
    assert "| DETR      | box mAP@[.5:.95] | 41.2" in both
    assert both.count("| CLIP ") == 5 and "(chosen)" in both
    alone = {"size": "tiny", "runs": ["detection"], "detection": detection,
             "baselines": {"detection": {"map": 0.001, "ap50": 0.02, "ap75": 0.0}}}
    table = results_markdown(alone)
    assert table.count("| DETR ") == 3 and "CLIP" not in table and "decodings" not in table


def _results(**over) -> dict:
    """A results.json as jaxmm demo writes it (the fields the README block renders)."""
    dec = {"CIDEr": 1.2, "BLEU-4": 0.4, "repeated_2grams": 3.0, "repeated_3grams": 1.0,
           "validation_CIDEr": 1.1}
    cap = {"BLEU-4": 0.43, "CIDEr": 1.25, "repeated_2grams": 2.5}
    results = {
        "size": "small", "steps_scale": 1.0, "seconds": 600.0,
        "machine": "Linux x86_64, 2 CPU cores",
        "timing": {"prepare_seconds": 20.0, "evaluate_seconds": 90.0, "peak_rss_gb": 2.1},
        "train": {r: {"train_seconds": 120.0} for r in ("clip", "captioner", "vqa")},
        "clip": {"i2t_R@1": 30.0, "i2t_R@5": 65.0, "t2i_R@1": 14.0, "t2i_R@5": 50.0,
                 "zero_shot_accuracy": 40.0},
        "captioner": dict(cap, decoding="beam"),
        "decodings": {"greedy": dict(dec, CIDEr=1.0), "beam": dec},
        "vqa": {"accuracy": 61.0, "accuracy/color": 80.0},
        "baselines": {"retrieval": {"i2t_R@1": 0.4, "i2t_R@5": 2.0, "t2i_R@1": 0.4,
                                    "t2i_R@5": 2.0},
                      "zero_shot_chance": 25.0,
                      "captioning": {"random": cap, "constant": cap},
                      "vqa": {"majority_per_type": 33.0, "chance": 4.0,
                              "majority/color": 16.0}},
    }
    results.update(over)
    return results


def test_readme_block_is_rendered_from_results_json(tmp_path):
    sys.path.insert(0, os.path.join(ROOT, "scripts"))
    try:
        import demo_readme
    finally:
        sys.path.remove(os.path.join(ROOT, "scripts"))
    from jaxmm.demo import README_END, README_START

    text = f"intro\n{README_START}\nstale table\n{README_END}\noutro\n"
    new = demo_readme.render(text, _results())
    assert new.startswith("intro\n") and new.endswith(f"{README_END}\noutro\n")
    assert "stale table" not in new
    # The tables, the chosen decoding and the timing line come from the numbers.
    assert "| CLIP      | zero-shot shape  | 40.0% | 25.0%" in new
    assert "| beam (chosen) | 1.200 |" in new and "| greedy        | 1.000 |" in new
    assert "10.0 minutes after installation: 20 s data and tokenizer, 2.0/2.0/2.0" in new
    assert demo_readme.render(new, _results()) == new  # idempotent
    with pytest.raises(SystemExit, match="no demo-results block"):
        demo_readme.render("no markers", _results())
    # The README in the repository is exactly the rendering of the stored results.
    assert demo_readme.main(["--check"]) == 0


def test_decodings_figure_shows_the_image_where_decodings_differ_most():
    from jaxmm.demo import _telling_example

    examples = [{"image_id": i} for i in (7, 8, 9, 10)]
    decodings = {"greedy": {7: "a b", 8: "on on on on", 9: "x y", 10: "p q"},
                 "beam": {7: "a b", 8: "on a gray", 9: "x z", 10: "p r"}}
    # Images 8, 9 and 10 have two distinct captions; 8's have the most repeated 2-grams.
    assert _telling_example(decodings, examples) == 1
    same = {"greedy": {7: "a", 8: "b"}, "beam": {7: "a", 8: "b"}}
    assert _telling_example(same, examples[:2]) == 0  # all agree: the first image


def test_demo_clip_with_foils_trains_on_shape_swapped_hard_negatives():
    """configs/demo.py:clip,foils=true wires the swap_words foils into the training data
    and the contrastive task's hard negatives (the default keeps plain CLIP)."""
    from jaxmm.config import load_config

    path = os.path.join(ROOT, "configs", "demo.py")
    plain, foils = (load_config(f"{path}:clip{extra}") for extra in ("", ",foils=true"))
    assert plain.task.hard_negatives == "" and "swap_words" not in plain.data.pp_train
    assert foils.task.hard_negatives == "foil_"
    assert "swap_words(('circle', 'square', 'triangle', 'diamond'))" in foils.data.pp_train
    assert "'foil_input_ids', 'foil_attention_mask'" in foils.data.pp_train
    assert foils.data.pp_eval == plain.data.pp_eval
