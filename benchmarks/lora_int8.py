"""LoRA vs full fine-tuning, and int8 vs fp32 weights, for a small GPT (same run).

Prints two tables:

* training: trainable parameters, optimizer-state bytes and median train-step
  time of full fine-tuning and of LoRA (``--rank``, default targets: attention
  q/k/v/out and MLP kernels), both built by :func:`jaxmm.train.build_run` from
  the same run config, AdamW;
* generation: parameter bytes and median greedy ``jaxmm.generate`` time with
  fp32 and with int8 weights (:mod:`jaxmm.quantize`), and how many generated
  tokens agree.

  python benchmarks/lora_int8.py [--repeats 10] [--rank 8] [--json out.json]

Ratios are measured in the same run on the same machine; on a shared CPU only
they are meaningful, and the best-of-N column is the steadier one.

Why LoRA's step is not faster here: the adapters are merged into the kernels
before the forward pass (no model changes), so the backward pass still forms
each adapted kernel's full gradient ``dW`` and projects it onto ``A`` and ``B``;
LoRA saves the optimizer state and update of the frozen weights (and the
gradients of untargeted ones such as the embeddings), not the ``dW`` matmuls.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import jax
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import flax.linen as nn  # noqa: E402

from jaxmm import generate, quantize  # noqa: E402
from jaxmm.models import registry  # noqa: E402
from jaxmm.train.build import build_run  # noqa: E402

BATCH, SEQ, WIDTH, LAYERS, HEADS, VOCAB = 8, 128, 256, 4, 4, 8192
GPT = dict(num_layers=LAYERS, d_model=WIDTH, num_heads=HEADS, mlp_dim=4 * WIDTH,
           vocab_size=VOCAB, max_position_embeddings=SEQ + 64, bos_token_id=1,
           eos_token_id=2)


def _nbytes(tree) -> int:
    return sum(int(np.prod(x.shape)) * np.dtype(x.dtype).itemsize for x in jax.tree.leaves(tree))


def _times(fn, repeats: int) -> tuple[float, float]:
    """``(median, best)`` seconds of ``repeats`` calls after a warm-up call. On a
    shared CPU the best is the steadier figure (others' load only adds time)."""
    fn()  # compile / warm up
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), min(times)


def train_row(rank: int, repeats: int) -> dict:
    config = {"task": {"name": "lm"}, "model": {"name": "gpt", "config": GPT},
              "batch_size": BATCH, "data": {"name": "synthetic", "seq_len": SEQ},
              "schedule": {"name": "constant"}, "optimizer": {"learning_rate": 1e-3},
              "lora": {"rank": rank}}
    built = build_run(config)
    state = built.init_state()
    batches = built.batches(built.config.data, "train", BATCH, shuffle=True, repeat=True)
    batch = next(batches)
    holder = {"state": state}

    def step():
        with jax.set_mesh(built.mesh):
            holder["state"], metrics = built.train_step(holder["state"], batch, built.constants)
        jax.block_until_ready(metrics)

    median, best = _times(step, repeats)
    return {"mode": f"LoRA r={rank}" if rank else "full", "params": built.num_params,
            "trainable": built.num_trainable,
            "opt_state_bytes": _nbytes(built.abstract_state.opt_state),
            "step_s": median, "step_best_s": best}


def generation_rows(repeats: int, new_tokens: int) -> list[dict]:
    model = registry.build("gpt", registry.get("gpt").config_cls.from_size(
        "tiny", **GPT).to_dict())
    ids = jax.random.randint(jax.random.PRNGKey(1), (BATCH, 16), 3, VOCAB)
    params = nn.meta.unbox(jax.jit(model.init)(jax.random.PRNGKey(0), ids)["params"])
    qparams = jax.jit(quantize.quantize_params)(params)
    rows, tokens = [], {}
    for name, p in (("fp32", params), ("int8", qparams)):
        def run(p=p, name=name):
            tokens[name] = np.asarray(generate(model, p, ids, max_new_tokens=new_tokens)
                                      .sequences)
        median, best = _times(run, repeats)
        rows.append({"weights": name, "param_bytes": quantize.nbytes(p), "generate_s": median,
                     "generate_best_s": best, "tokens_per_s": BATCH * new_tokens / median})
    agree = float((tokens["fp32"][:, 16:] == tokens["int8"][:, 16:]).mean())
    rows[1]["greedy_agreement"] = agree
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    print(f"jax {jax.__version__}, {jax.device_count()} {jax.default_backend()} device(s) "
          f"({jax.devices()[0].device_kind}); GPT {LAYERS} layers x {WIDTH} wide, vocab "
          f"{VOCAB}, batch {BATCH} x {SEQ} tokens, AdamW")

    full, lora = train_row(0, args.repeats), train_row(args.rank, args.repeats)
    print(f"\n{'training':<12}{'params':>12}{'trainable':>12}{'opt state MB':>14}"
          f"{'step ms':>10}{'best ms':>10}")
    for r in (full, lora):
        print(f"{r['mode']:<12}{r['params']:>12,}{r['trainable']:>12,}"
              f"{r['opt_state_bytes'] / 2**20:>14.2f}{1e3 * r['step_s']:>10.1f}"
              f"{1e3 * r['step_best_s']:>10.1f}")
    print(f"LoRA/full: trainable {lora['trainable'] / full['trainable']:.4f}, optimizer state "
          f"{lora['opt_state_bytes'] / full['opt_state_bytes']:.4f}, step time "
          f"{lora['step_s'] / full['step_s']:.2f}x "
          f"(best {lora['step_best_s'] / full['step_best_s']:.2f}x)")

    gen = generation_rows(args.repeats, args.new_tokens)
    print(f"\n{'generation':<12}{'param MB':>10}{'generate ms':>13}{'best ms':>10}"
          f"{'tokens/s':>10}  (greedy, batch {BATCH}, prompt 16, {args.new_tokens} new tokens)")
    for r in gen:
        print(f"{r['weights']:<12}{r['param_bytes'] / 2**20:>10.2f}{1e3 * r['generate_s']:>13.1f}"
              f"{1e3 * r['generate_best_s']:>10.1f}{r['tokens_per_s']:>10.0f}")
    fp32, int8 = gen
    print(f"int8/fp32: param bytes {int8['param_bytes'] / fp32['param_bytes']:.3f} "
          f"({fp32['param_bytes'] / int8['param_bytes']:.2f}x smaller), generate time "
          f"{int8['generate_s'] / fp32['generate_s']:.2f}x (best "
          f"{int8['generate_best_s'] / fp32['generate_best_s']:.2f}x), greedy tokens agreeing "
          f"{100 * int8['greedy_agreement']:.1f}%")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"train": [full, lora], "generation": gen}, f, indent=2)


if __name__ == "__main__":
    main()
