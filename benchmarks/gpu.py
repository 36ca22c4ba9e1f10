"""One-accelerator training throughput: tokens/s (images/s) and MFU of a 350M / 1.3B GPT and a
CLIP ViT-B/16, in bfloat16 with fused (cuDNN) attention.

  python benchmarks/gpu.py --model gpt-350m --batch 8 --seq 1024
  python benchmarks/gpu.py --model gpt-1.3b --batch 4 --seq 2048 --remat dots
  python benchmarks/gpu.py --model clip-b16 --batch 256
  python benchmarks/gpu.py --model gpt-tiny --steps 3        # CPU smoke run (the tests')

What runs: jaxmm's own train step (``jaxmm.train.make_train_step``: forward, backward,
AdamW with clipping) on synthetic batches, jitted with the state donated. Compute is
bfloat16 (``model.config.dtype``; params and optimizer state stay float32), attention
goes through ``jax.nn.dot_product_attention`` (``--attention``: ``cudnn``, the default on
GPU, is cuDNN's fused flash attention; ``auto`` lets JAX choose; ``plain`` is the
reference einsum path), ``--remat`` picks a rematerialisation policy. Reported: median
step time over ``--steps`` steps after two warm-up steps, tokens (or images) per second,
and MFU = model FLOPs (3x the forward pass, from XLA's cost analysis) / (step time x the
device's peak). Peaks are the published dense bf16 figures of the device named in
``jax.devices()[0].device_kind`` (:data:`GPU_PEAKS`); another device gets its measured
bf16 matmul peak, and the report says which.

XLA flags worth trying on GPUs (JAX's "GPU performance tips", NVIDIA's JAX-Toolbox):
``XLA_FLAGS="--xla_gpu_enable_latency_hiding_scheduler=true"`` (overlaps collectives with
compute; matters on several GPUs), ``--xla_gpu_triton_gemm_any=true`` (Triton for every
GEMM it supports), and ``XLA_PYTHON_CLIENT_MEM_FRACTION=0.9`` (memory for XLA). Set them
before the run; the report prints the XLA_FLAGS it ran with.

Not yet run on a GPU by the project (no GPU was available): the README's GPU table is
filled the first time one is.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from jaxmm.train import build_task, make_train_step, resolve_config  # noqa: E402
from jaxmm.train.logging import forward_flops, measure_matmul_peak  # noqa: E402
from jaxmm.train.optim import make_optimizer  # noqa: E402
from jaxmm.train.steps import TrainState  # noqa: E402
from jaxmm.train.synthetic import make_batch  # noqa: E402

# Published dense bf16 tensor-core peaks, FLOP/s (NVIDIA datasheets), by device-kind substring.
GPU_PEAKS = {"H200": 989e12, "H100 PCIe": 756e12, "H100": 989e12, "A100": 312e12,
             "L40S": 362e12, "L4": 121e12, "A10G": 70e12, "A10": 125e12}

MODELS = {
    # name: (task, registry model, size, config overrides, "text" | "image_text")
    "gpt-350m": ("lm", "gpt", "gpt2-medium", {}, "text"),
    "gpt-1.3b": ("lm", "gpt", "gpt2-medium", dict(num_layers=24, d_model=2048, num_heads=16,
                                                  mlp_dim=8192), "text"),
    "clip-b16": ("contrastive", "clip", "ViT-B/16", {}, "image_text"),
    "gpt-tiny": ("lm", "gpt", "tiny", {}, "text"),
    "clip-tiny": ("contrastive", "clip", "tiny", {}, "image_text"),
}


def device_peak(dtype) -> tuple[float, str]:
    """The device's peak FLOP/s and where it comes from."""
    kind = jax.devices()[0].device_kind
    for name, peak in GPU_PEAKS.items():
        if name in kind:
            return peak, f"published dense bf16 peak of {name}"
    return measure_matmul_peak(2048, dtype=dtype), f"measured {jnp.dtype(dtype).name} matmul"


def build(args) -> tuple:
    task_name, model, size, overrides, layout = MODELS[args.model]
    on_gpu = jax.default_backend() == "gpu"
    attention = args.attention or ("cudnn" if on_gpu else "auto")
    config = {"dtype": args.dtype, "attention_impl": attention, "remat_policy": args.remat,
              **overrides}
    if layout == "text":
        config["max_position_embeddings"] = max(args.seq, 16)
    cfg = resolve_config({
        "task": {"name": task_name},
        "model": {"name": model, "size": size, "config": config},
        "batch_size": args.batch, "num_steps": 1000,
        "data": {"name": "synthetic", "seq_len": args.seq},
        "optimizer": {"name": "adamw", "learning_rate": 1e-4, "clip_norm": 1.0},
    })
    task = build_task(cfg)
    dims = {**task.synthetic_dims(), "seq_len": args.seq}
    batch = {k: jnp.asarray(v) for k, v in make_batch(task.layout, 0, args.batch, specs=
                                                        task.input_specs(), **dims).items()}
    import flax.linen as nn

    variables = nn.meta.unbox(task.init(jax.random.key(0), batch))
    params = variables.pop("params")
    tx, _ = make_optimizer(cfg)
    state = TrainState(step=jnp.zeros((), jnp.int32), params=params, extra=variables,
                       opt_state=tx.init(params), rng=jax.random.key(1))
    step = jax.jit(make_train_step(task, tx), donate_argnums=0)
    count = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(params))
    return task, step, state, variables, batch, layout, attention, count


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", choices=sorted(MODELS), default="gpt-350m")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seq", type=int, default=1024, help="tokens per text (GPT, CLIP text)")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--dtype", default="bfloat16", choices=("bfloat16", "float32"))
    p.add_argument("--attention", default="", choices=("", "auto", "cudnn", "xla", "plain"),
                   help="attention implementation (default: cudnn on GPU, auto elsewhere)")
    p.add_argument("--remat", default="none", help="none, full, dots, dots_no_batch, ...")
    p.add_argument("--json", action="store_true", help="print one JSON line only")
    args = p.parse_args(argv)
    if args.model.startswith("clip"):
        args.seq = min(args.seq, 77 if args.model == "clip-b16" else 16)
    task, step, state, variables, batch, layout, attention, count = build(args)
    holder = {"state": state}

    def one():
        holder["state"], metrics = step(holder["state"], batch, None)
        jax.block_until_ready(metrics)

    for _ in range(2):
        one()
    times = []
    for _ in range(args.steps):
        start = time.perf_counter()
        one()
        times.append(time.perf_counter() - start)
    seconds = statistics.median(times)
    rng = jax.random.key(0)
    fwd = forward_flops(
        lambda v, b: task.loss(v, task.prepare(b, rng, False), train=False, rng=rng).loss,
        {"params": holder["state"].params, **variables}, batch)
    peak, peak_source = device_peak(jnp.dtype(args.dtype))
    flops = 3 * fwd if fwd else None
    unit = "tokens" if layout == "text" else "images"
    items = args.batch * (args.seq if layout == "text" else 1)
    report = {
        "model": args.model, "params": count, "device": jax.devices()[0].device_kind,
        "backend": jax.default_backend(), "dtype": args.dtype, "attention": attention,
        "remat": args.remat, "batch": args.batch, "seq": args.seq, "step_seconds": seconds,
        f"{unit}_per_second": items / seconds, "model_flops_per_step": flops,
        "peak_flops": peak, "peak_source": peak_source,
        "mfu": flops / seconds / peak if flops else None,
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
    }
    if args.json:
        print(json.dumps(report))
        return report
    print(f"{args.model} ({count / 1e6:.1f}M params) on {report['device']} "
          f"[{report['backend']}], {args.dtype}, attention {attention}, remat {args.remat}")
    print(f"batch {args.batch}" + (f" x {args.seq} tokens" if layout == "text" else ""))
    print(f"step {seconds * 1e3:.1f} ms (median of {args.steps}); {items / seconds:,.0f} "
          f"{unit}/s; MFU {report['mfu']:.1%} of {peak / 1e12:g} TFLOP/s ({peak_source})"
          if flops else f"step {seconds * 1e3:.1f} ms; model FLOPs unavailable")
    print(f"XLA_FLAGS={report['xla_flags']!r}")
    return report


if __name__ == "__main__":
    main()
