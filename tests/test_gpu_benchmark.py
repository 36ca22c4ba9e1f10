"""benchmarks/gpu.py runs end to end (here on CPU at a tiny size) and its figures follow
their definitions: throughput = items / step time, model FLOPs ~ 6 x params x tokens (the
dense-transformer estimate), MFU = FLOPs / time / peak."""

import importlib.util
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _benchmark():
    spec = importlib.util.spec_from_file_location("gpu_bench",
                                                  os.path.join(ROOT, "benchmarks", "gpu.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_gpu_benchmark_reports_consistent_throughput_and_mfu(capsys):
    bench = _benchmark()
    report = bench.main(["--model", "gpt-tiny", "--steps", "2", "--seq", "32", "--batch", "2",
                         "--json"])
    tokens = 2 * 32
    assert report["tokens_per_second"] == pytest.approx(tokens / report["step_seconds"])
    # 3 x forward from XLA against 6 N T (N includes the tied output embedding, whose
    # matmul dominates this tiny model): the same order, within a factor of two.
    assert 0.5 < report["model_flops_per_step"] / (6 * report["params"] * tokens) < 2.0
    assert report["mfu"] == pytest.approx(report["model_flops_per_step"] / report["step_seconds"]
                                          / report["peak_flops"])
    assert report["attention"] == "auto" and report["peak_source"].startswith("measured")
    assert report["dtype"] == "bfloat16"
    # A named GPU gets its published peak.
    assert bench.GPU_PEAKS["H100"] == 989e12 and bench.GPU_PEAKS["A100"] == 312e12
