"""GPT-2-124M forward and AdamW training step: jaxmm (jit) vs Hugging Face PyTorch.

Both frameworks run the same weights (a randomly initialised ``GPT2LMHeadModel``
imported with ``jaxmm.convert.from_hf``) on the same batch, on this machine's
CPU, in one run. For each of

* ``forward``: logits for ``(batch, seq)`` tokens (PyTorch under ``no_grad``);
* ``train``: cross-entropy loss, gradients and one AdamW update (PyTorch
  ``torch.optim.AdamW``; jaxmm ``optax.adamw``, the step jitted with donation);

it reports the median time per step over ``--reps`` timed steps after warm-up,
tokens/s, the ratio ``torch_time / jaxmm_time`` (> 1: jaxmm is faster), and the
achieved model FLOP/s against a float32 matmul peak measured in the same run
(the fastest of several jitted 2048^3 and 3072^3 GEMMs, before and after the
models). Model
FLOPs are the usual analytic count: ``2 * N * tokens`` for the matmul
parameters ``N`` (layers and LM head) plus ``4 * L * T^2 * d * B`` for
attention, times 3 for a training step. The CPU is shared by
other work: treat absolute numbers with care; the ratio is measured under the
same load.

    python benchmarks/text_models.py [--batch 2] [--seq 128] [--reps 3] [--json]
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
import optax  # noqa: E402


def _median_time(fn, reps: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def matmul_peak(reps: int, sizes: tuple[int, ...] = (2048, 3072)) -> float:
    """Measured float32 matmul FLOP/s: the fastest of ``reps`` jitted ``n^3`` GEMMs per size."""
    best = 0.0
    f = jax.jit(lambda a: a @ a)
    for n in sizes:
        a = jnp.ones((n, n), jnp.float32)
        f(a).block_until_ready()
        for _ in range(reps):
            t0 = time.perf_counter()
            f(a).block_until_ready()
            best = max(best, 2 * n**3 / (time.perf_counter() - t0))
    return best


def model_flops(cfg, batch: int, seq: int) -> float:
    """Analytic forward FLOPs of a GPT-2 LM (matmuls only)."""
    d, layers, tokens = cfg.d_model, cfg.num_layers, batch * seq
    per_layer = 4 * d * d + 2 * d * cfg.mlp_dim  # qkv + out, MLP in + out
    matmul_params = layers * per_layer + d * cfg.vocab_size  # + tied LM head
    return 2 * matmul_params * tokens + 4 * layers * seq * seq * d * batch


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--json", action="store_true", help="also print one JSON line")
    args = parser.parse_args(argv)

    import torch
    import transformers

    from jaxmm.convert import from_hf
    from jaxmm.losses import cross_entropy

    torch.manual_seed(0)
    hf_cfg = transformers.GPT2Config(n_positions=1024, resid_pdrop=0.0, embd_pdrop=0.0,
                                     attn_pdrop=0.0)  # GPT-2 124M
    hf_model = transformers.GPT2LMHeadModel(hf_cfg)
    with tempfile.TemporaryDirectory() as tmp:
        hf_model.save_pretrained(tmp)
        model, params, cfg = from_hf(tmp)
    rng = np.random.default_rng(0)
    ids = rng.integers(0, cfg.vocab_size, (args.batch, args.seq + 1)).astype(np.int32)
    x_np, y_np = ids[:, :-1], ids[:, 1:]
    tokens = args.batch * args.seq
    fwd_flops = model_flops(cfg, args.batch, args.seq)

    peak_before = matmul_peak(5)

    # --- jaxmm -----------------------------------------------------------
    params = jax.device_put(params)
    x, y = jnp.asarray(x_np), jnp.asarray(y_np)
    forward = jax.jit(lambda p, x: model.apply({"params": p}, x).logits)
    opt = optax.adamw(1e-4, weight_decay=0.01)

    def train_step(p, s, x, y):
        loss, grads = jax.value_and_grad(
            lambda q: cross_entropy(model.apply({"params": q}, x).logits, y))(p)
        updates, s = opt.update(grads, s, p)
        return optax.apply_updates(p, updates), s, loss

    train_step = jax.jit(train_step, donate_argnums=(0, 1))
    results = {}
    results["jaxmm", "forward"] = _median_time(
        lambda: forward(params, x).block_until_ready(), args.reps)
    state = {"p": jax.tree.map(jnp.copy, params), "s": None}
    state["s"] = opt.init(state["p"])

    def jax_train():
        state["p"], state["s"], loss = train_step(state["p"], state["s"], x, y)
        loss.block_until_ready()

    results["jaxmm", "train"] = _median_time(jax_train, args.reps)
    state.clear()  # free the jaxmm optimizer state before PyTorch allocates its own

    # --- Hugging Face PyTorch --------------------------------------------
    hf_model.eval()
    tx, ty = torch.tensor(x_np, dtype=torch.long), torch.tensor(y_np, dtype=torch.long)

    def torch_forward():
        with torch.no_grad():
            return hf_model(input_ids=tx).logits

    results["torch", "forward"] = _median_time(torch_forward, args.reps)
    hf_model.train()
    torch_opt = torch.optim.AdamW(hf_model.parameters(), lr=1e-4, weight_decay=0.01)

    def torch_train():
        logits = hf_model(input_ids=tx).logits
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                                 ty.reshape(-1))
        torch_opt.zero_grad(set_to_none=True)
        loss.backward()
        torch_opt.step()

    results["torch", "train"] = _median_time(torch_train, args.reps)

    # The best of two peak measurements (before and after), as the shared CPU's load moves.
    peak = max(peak_before, matmul_peak(5))
    rows = []
    for phase, flops in (("forward", fwd_flops), ("train", 3 * fwd_flops)):
        for fw in ("jaxmm", "torch"):
            t = results[fw, phase]
            rows.append(dict(
                phase=phase, framework=fw, time_per_step_s=t, tokens_per_s=tokens / t,
                model_gflops_per_s=flops / t / 1e9, fraction_of_matmul_peak=flops / t / peak,
                torch_over_jaxmm=results["torch", phase] / results["jaxmm", phase]))
    print(f"GPT-2 124M, batch {args.batch} x seq {args.seq} ({tokens} tokens), "
          f"median of {args.reps}; {jax.device_count()} {jax.default_backend()} device(s), "
          f"torch threads {torch.get_num_threads()}; matmul peak {peak / 1e9:.1f} GFLOP/s")
    header = f"{'phase':8} {'framework':9} {'s/step':>8} {'tokens/s':>9} {'GFLOP/s':>8} " \
             f"{'of peak':>8} {'torch/jaxmm':>11}"
    print(header)
    print("-" * len(header))
    for r in rows:
        print(f"{r['phase']:8} {r['framework']:9} {r['time_per_step_s']:8.3f} "
              f"{r['tokens_per_s']:9.1f} {r['model_gflops_per_s']:8.1f} "
              f"{r['fraction_of_matmul_peak']:8.1%} {r['torch_over_jaxmm']:11.2f}")
    summary = dict(benchmark="text_models", model="gpt2-124M", batch=args.batch, seq=args.seq,
                   reps=args.reps, matmul_peak_gflops=peak / 1e9,
                   forward_gflops=fwd_flops / 1e9, rows=rows)
    if args.json:
        print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
