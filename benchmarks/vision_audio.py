"""Vision/audio encoder throughput: jaxmm (jit) vs Hugging Face PyTorch, same weights.

Measures, in one run on this machine:

* ViT-B/16 forward, batch 8, 224x224 (``ViTModel``);
* the Whisper-tiny-sized encoder forward (80 mels x 3000 frames, batch 2);
* the Whisper log-mel front end on 30 s of audio (batch 2) vs
  ``WhisperFeatureExtractor`` (NumPy);

each as the median of ``--reps`` timed calls after warm-up, the ratio
``torch_time / jax_time`` (> 1: jaxmm is faster), and model FLOP utilisation
(XLA's FLOP count / time) against a measured float32 matmul peak. Prints a
table and, with ``--json``, a JSON line. The CPU is shared: medians of
several repetitions are reported, but other load still moves the numbers.

    python benchmarks/vision_audio.py [--reps 5] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402


def _median_time(fn, reps: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _flops(jitted, *args) -> float:
    cost = jitted.lower(*args).compile().cost_analysis()
    cost = cost[0] if isinstance(cost, list | tuple) else cost
    return float(cost.get("flops", 0.0)) if cost else 0.0


def matmul_peak(reps: int) -> float:
    """Measured float32 matmul FLOP/s (2048^3 GEMM under jit)."""
    n = 2048
    a = jnp.ones((n, n), jnp.float32)
    f = jax.jit(lambda a: a @ a)
    t = _median_time(lambda: f(a).block_until_ready(), reps)
    return 2 * n**3 / t


def bench_vit(reps: int, tmp: str) -> dict:
    import torch
    import transformers

    from jaxmm.convert import from_hf

    torch.manual_seed(0)
    hf = transformers.ViTModel(transformers.ViTConfig()).eval()  # B/16 at 224
    path = os.path.join(tmp, "vit")
    hf.save_pretrained(path)
    model, params, _ = from_hf(path)
    x = np.random.default_rng(0).normal(size=(8, 224, 224, 3)).astype(np.float32)
    xt = torch.from_numpy(x.transpose(0, 3, 1, 2).copy())
    f = jax.jit(lambda p, x: model.apply({"params": p}, x).last_hidden_state)
    with torch.no_grad():
        ref = hf(pixel_values=xt).last_hidden_state.numpy()
    err = float(np.abs(np.asarray(f(params, x)) - ref).max())

    def run_torch():
        with torch.no_grad():
            hf(pixel_values=xt)

    t_jax = _median_time(lambda: f(params, x).block_until_ready(), reps)
    t_torch = _median_time(run_torch, reps)
    return dict(name="ViT-B/16 forward (8x224x224)", jax_s=t_jax, torch_s=t_torch,
                flops=_flops(f, params, x), max_abs_diff=err)


def bench_whisper_encoder(reps: int, tmp: str) -> dict:
    import torch
    import transformers

    from jaxmm.convert import from_hf

    torch.manual_seed(0)
    cfg = transformers.WhisperConfig(
        d_model=384, encoder_layers=4, decoder_layers=4, encoder_attention_heads=6,
        decoder_attention_heads=6, encoder_ffn_dim=1536, decoder_ffn_dim=1536)
    hf = transformers.WhisperModel(cfg).eval()
    path = os.path.join(tmp, "whisper")
    hf.save_pretrained(path)
    model, params, _ = from_hf(path)
    feats = np.random.default_rng(0).normal(size=(2, 80, 3000)).astype(np.float32)
    ft = torch.from_numpy(feats)
    f = jax.jit(lambda p, x: model.apply({"params": p}, x, method="encode").last_hidden_state)
    encoder = hf.get_encoder()
    with torch.no_grad():
        ref = encoder(ft).last_hidden_state.numpy()
    err = float(np.abs(np.asarray(f(params, feats)) - ref).max())

    def run_torch():
        with torch.no_grad():
            encoder(ft)

    t_jax = _median_time(lambda: f(params, feats).block_until_ready(), reps)
    t_torch = _median_time(run_torch, reps)
    return dict(name="Whisper-tiny encoder (2x80x3000)", jax_s=t_jax, torch_s=t_torch,
                flops=_flops(f, params, feats), max_abs_diff=err)


def bench_log_mel(reps: int) -> dict:
    import transformers

    from jaxmm import audio_features as audio

    wave = np.random.default_rng(0).normal(size=(2, 16000 * 30)).astype(np.float32) * 0.1
    fe = transformers.WhisperFeatureExtractor()
    f = jax.jit(lambda a: audio.whisper_log_mel(a, sample_rate=16000))
    ref = fe._np_extract_fbank_features(wave, "cpu")
    err = float(np.abs(np.asarray(f(wave)) - ref).max())
    t_jax = _median_time(lambda: f(wave).block_until_ready(), reps)
    t_ref = _median_time(lambda: fe._np_extract_fbank_features(wave, "cpu"), reps)
    return dict(name="Whisper log-mel (2x30 s) vs NumPy extractor", jax_s=t_jax,
                torch_s=t_ref, flops=0.0, max_abs_diff=err)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    import torch

    peak = matmul_peak(args.reps)
    with tempfile.TemporaryDirectory() as tmp:
        rows = [bench_vit(args.reps, tmp), bench_whisper_encoder(args.reps, tmp),
                bench_log_mel(args.reps)]
    print(f"jax {jax.__version__} ({jax.default_backend()}, {jax.device_count()} devices), "
          f"torch {torch.__version__} ({torch.get_num_threads()} threads), "
          f"{os.cpu_count()} CPUs; measured f32 matmul peak {peak / 1e9:.1f} GFLOP/s; "
          f"median of {args.reps} reps (shared CPU: other load moves these numbers)")
    print(f"{'benchmark':46s} {'jaxmm ms':>9s} {'ref ms':>9s} {'ref/jaxmm':>9s} "
          f"{'MFU':>6s} {'max|diff|':>9s}")
    for r in rows:
        r["speedup_vs_reference"] = r["torch_s"] / r["jax_s"]
        r["mfu_vs_measured_peak"] = r["flops"] / r["jax_s"] / peak if r["flops"] else None
        mfu = f"{100 * r['mfu_vs_measured_peak']:.0f}%" if r["mfu_vs_measured_peak"] else "-"
        print(f"{r['name']:46s} {1e3 * r['jax_s']:9.1f} {1e3 * r['torch_s']:9.1f} "
              f"{r['speedup_vs_reference']:9.2f} {mfu:>6s} {r['max_abs_diff']:9.1e}")
    if args.json:
        print(json.dumps({"matmul_peak_flops": peak, "results": rows}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
