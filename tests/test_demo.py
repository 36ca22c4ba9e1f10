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
def test_demo_end_to_end(tmp_path):
    workdir = tmp_path / "demo"
    proc = subprocess.run(
        [sys.executable, "-m", "jaxmm", "demo", "--workdir", str(workdir), "--size", "tiny",
         "--steps-scale", "0.6", "--samples", "4"],
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
    # Re-running reuses the finished runs instead of training again.
    again = subprocess.run(
        [sys.executable, "-m", "jaxmm", "demo", "--workdir", str(workdir), "--size", "tiny",
         "--steps-scale", "0.6", "--samples", "4"],
        cwd=ROOT, capture_output=True, text=True, timeout=DEMO_HANG_GUARD_S,
    )
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout.count("already trained") == 3
