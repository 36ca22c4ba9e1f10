"""The loop's periodic hooks: when each runs, what lands in metrics.jsonl, best-checkpoint
tracking by an evaluator's metric, and ``jaxmm eval`` running a registered evaluator."""

import json
import os

import pytest

from jaxmm.train import run
from jaxmm.train.hooks import Hook
from jaxmm.train.logging import read_jsonl
from tests.train.helpers import run_cli, tiny_config, write_config


class _Probe(Hook):
    def __call__(self, step, state, report):
        return {}


@pytest.mark.parametrize("hook,due_steps", [
    (_Probe(3), [3, 6, 9]),
    (_Probe(3, at_end=True), [3, 6, 9, 10]),
    (_Probe(0, at_end=True), [10]),
    (_Probe(4, on_preemption=True), [4, 7, 8]),
    (_Probe(0), []),
])
def test_hook_due_steps(hook, due_steps):
    # Steps 1..10, the last one is 10, a preemption notice arrives at step 7.
    got = [s for s in range(1, 11) if hook.due(s, last=s == 10, preempted=s == 7)]
    assert got == due_steps


CLS = {
    "num_steps": 8, "log.every_steps": 2, "eval.every_steps": 3, "eval.at_end": True,
    "eval.evaluators.cls": {"type": "classification", "every_steps": 4, "at_end": False,
                            "num_batches": 1, "metrics": ("accuracy", "macro_f1")},
    "checkpoint.every_steps": 4, "checkpoint.keep": 1, "checkpoint.best_metric":
    "eval/cls/accuracy", "checkpoint.best_mode": "max", "checkpoint.keep_best": 1,
    "data.image_size": 16, "mesh.data": 4, "mesh.fsdp": 2,
}


@pytest.mark.slow
def test_hooks_run_on_schedule_and_evaluators_land_in_metrics(tmp_path):
    workdir = str(tmp_path / "run")
    summary = run(tiny_config("classification", CLS), workdir)
    records = read_jsonl(os.path.join(workdir, "metrics.jsonl"))

    def steps(key):
        return [r["step"] for r in records if key in r]

    assert steps("train/loss") == [2, 4, 6, 8]
    assert steps("eval/loss") == [3, 6, 8]  # every 3 steps, and at the end
    assert steps("eval/cls/accuracy") == [4, 8] == steps("eval/cls/macro_f1")
    accuracy = {r["step"]: r["eval/cls/accuracy"] for r in records if "eval/cls/accuracy" in r}
    assert summary["eval"]["cls/accuracy"] == accuracy[8]
    assert summary["eval"]["loss"] == [r for r in records if "eval/loss" in r][-1]["eval/loss"]
    # keep=1 latest, plus the best by eval/cls/accuracy among the saves at 4 and 8.
    if accuracy[4] > accuracy[8]:
        assert summary["checkpoints"] == [4, 8]
    elif accuracy[4] < accuracy[8]:
        assert summary["checkpoints"] == [8]
    # `jaxmm eval` runs the registered evaluator on the final checkpoint: same metrics.
    cfg = write_config(tmp_path / "cfg.py", "classification", CLS)
    res = run_cli("eval", "--config", cfg, "--workdir", workdir, "--evaluator", "cls")
    assert res.returncode == 0, res.stderr[-3000:]
    out = json.loads(res.stdout)
    assert out["step"] == 8 and set(out["metrics"]) == {"cls/accuracy", "cls/macro_f1",
                                                         "cls/num_examples"}
    assert out["metrics"]["cls/accuracy"] == pytest.approx(accuracy[8], abs=1e-9)
    assert json.load(open(os.path.join(workdir, "eval_8.json"))) == out
