"""Identical runs on the same machine write bit-identical metrics.jsonl (wall-clock
fields aside): the tiny model with evaluation, and the demo's VQA run from its data and
tokenizer onwards, each in separate processes (hash seeds and thread timing differ)."""

import json
import os
import subprocess
import sys

import pytest

from tests.train.helpers import (
    HANG_GUARD_S,
    ROOT,
    cpu_env,
    metrics_without_wall_clock,
    run_cli,
    write_config,
)

CFG = {"num_steps": 6, "eval.every_steps": 2, "eval.at_end": True, "checkpoint.every_steps": 3,
       "mesh.data": 4, "mesh.fsdp": 2}


@pytest.mark.slow
def test_two_identical_runs_write_identical_metrics(tmp_path):
    cfg = write_config(tmp_path / "cfg.py", "lm", CFG)
    records = []
    for name in ("first", "second"):
        res = run_cli("train", "--config", cfg, "--workdir", str(tmp_path / name))
        assert res.returncode == 0, res.stderr[-3000:]
        records.append(metrics_without_wall_clock(tmp_path / name))
    assert [r["step"] for r in records[0] if "eval/loss" in r] == [2, 4, 6]
    assert sum("train/loss" in r for r in records[0]) == 6
    assert records[0] == records[1]


_PREPARE = """
import os, sys
from jaxmm.data import builtin, tokenizers
builder = builtin.build(os.path.join(sys.argv[1], "data"), "tiny")
tokenizers.train_tokenizer("wordpiece", builtin.corpus_path(builder), 256,
                           out_dir=os.path.join(sys.argv[1], "tokenizer"), min_frequency=1,
                           model_max_length=64)
"""


def _demo_vqa(root):
    """The demo's path at a tiny size: data, tokenizer, a few VQA steps, test-split VQA."""
    prep = subprocess.run([sys.executable, "-c", _PREPARE, str(root)], cwd=ROOT, env=cpu_env(1),
                          capture_output=True, text=True, timeout=HANG_GUARD_S)
    assert prep.returncode == 0, prep.stderr[-3000:]
    config = (f"configs/demo.py:vqa,data_dir={root / 'data'},tokenizer={root / 'tokenizer'},"
              "vocab=256,size=tiny,steps=8,batch=16")
    res = run_cli("train", "--config", config, "--workdir", str(root / "vqa"),
                  "--config.eval.evaluators.vqa.at_end=true", "--config.log.every_steps=2",
                  devices=1)
    assert res.returncode == 0, res.stderr[-3000:]
    return metrics_without_wall_clock(root / "vqa"), config


@pytest.mark.slow
@pytest.mark.heavy
def test_demo_vqa_runs_are_identical(tmp_path):
    (first, config), (second, _) = _demo_vqa(tmp_path / "first"), _demo_vqa(tmp_path / "second")
    assert any("eval/vqa/accuracy" in r for r in first)
    assert first == second
    tokenizers = [(tmp_path / n / "tokenizer" / "tokenizer.json").read_bytes()
                  for n in ("first", "second")]
    assert tokenizers[0] == tokenizers[1]
    assert os.path.exists(tmp_path / "first" / "vqa" / "config.0.json")

    # `jaxmm eval` resolves the same config, tokenizer and data as `train`: evaluating the
    # final checkpoint reproduces the run's own at-end evaluation.
    res = run_cli("eval", "--config", config, "--workdir", str(tmp_path / "first" / "vqa"),
                  "--evaluator", "vqa", devices=1)
    assert res.returncode == 0, res.stderr[-3000:]
    evaluated = json.loads(res.stdout)
    at_end = [r for r in first if "eval/vqa/accuracy" in r][-1]
    assert evaluated["step"] == at_end["step"] == 8
    assert evaluated["metrics"]["vqa/accuracy"] == at_end["eval/vqa/accuracy"]
