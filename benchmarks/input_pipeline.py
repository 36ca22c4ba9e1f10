"""Input-pipeline throughput vs a demo-like training step's consumption, on CPU.

Builds (or reuses) the built-in ``jaxmm_scenes`` dataset, trains a WordPiece
tokenizer on its text corpus, and measures examples/s of
``jaxmm.data.make_iterator`` with the demo's preprocessing (scenes
``retrieval`` and ``captioning`` layouts: resize, value range, random caption,
tokenize). Next to it, examples/s of one jitted training step of a tiny
CLIP-style model (ViT-style patch encoder + text encoder from
``jaxmm.layers.TransformerStack``, width 64, 2 layers each, InfoNCE from
``jaxmm.losses``, AdamW). The CLIP/captioner model families are not on main
yet, so the step is built from ``jaxmm.layers`` at the demo's tiny size.

  python benchmarks/input_pipeline.py [--size small] [--batch 64] [--repeats 3]
      [--data-dir DIR] [--json out.json]

The pipeline needs at least 5x headroom (pipeline rate / step rate). Both are
measured on the same shared, noisy CPU, one after the other (in training they
share the cores): numbers are medians of ``--repeats`` runs.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def pipeline_rate(cfg, tok, batch: int, batches: int, repeats: int) -> float:
    from jaxmm.data import make_iterator

    rates = []
    for r in range(repeats):
        with make_iterator(cfg, split="train", batch_size=batch, seed=r, process_index=0,
                           process_count=1, tokenizer=tok) as it:
            for _ in range(3):  # warm-up: graph tracing and the first reads
                next(it)
            start = time.perf_counter()
            for _ in range(batches):
                next(it)
            rates.append(batches * batch / (time.perf_counter() - start))
    return statistics.median(rates)


def clip_step_rate(batch: int, image_size: int, length: int, vocab: int, steps: int,
                   repeats: int) -> float:
    import flax.linen as nn
    import jax
    import jax.numpy as jnp
    import optax

    from jaxmm.layers import Embed, TransformerConfig, TransformerStack
    from jaxmm.losses import infonce_loss

    cfg = TransformerConfig(num_layers=2, d_model=64, num_heads=4, mlp_dim=256)
    patch = 8

    class TinyClip(nn.Module):
        @nn.compact
        def __call__(self, image, input_ids, attention_mask):
            b, h, w, c = image.shape
            x = image.reshape(b, h // patch, patch, w // patch, patch, c)
            x = x.transpose(0, 1, 3, 2, 4, 5).reshape(b, -1, patch * patch * c)
            x = nn.Dense(64)(x) + self.param("pos", nn.initializers.normal(0.02),
                                               (1, x.shape[1], 64))
            img = TransformerStack(cfg, name="vision")(x).last_hidden_state.mean(axis=1)
            t = Embed(vocab, 64)(input_ids) + self.param(
                "tpos", nn.initializers.normal(0.02), (1, length, 64))
            mask = attention_mask[:, None, None, :].astype(bool)
            t = TransformerStack(cfg, name="text")(t, mask=mask).last_hidden_state
            txt = (t * attention_mask[..., None]).sum(1) / attention_mask.sum(1, keepdims=True)
            scale = self.param("logit_scale", nn.initializers.constant(np.log(1 / 0.07)), ())
            return nn.Dense(32)(img), nn.Dense(32)(txt), scale

    model = TinyClip()
    rng = np.random.default_rng(0)
    batch_data = {
        "image": jnp.asarray(rng.uniform(-1, 1, (batch, image_size, image_size, 3)), jnp.float32),
        "input_ids": jnp.asarray(rng.integers(0, vocab, (batch, length)), jnp.int32),
        "attention_mask": jnp.ones((batch, length), jnp.int32),
    }
    params = nn.meta.unbox(model.init(jax.random.key(0), **batch_data))
    opt = optax.adamw(1e-3)
    state = (params, opt.init(params))

    @jax.jit
    def step(state, data):
        params, opt_state = state

        def loss_fn(p):
            i, t, s = model.apply(p, **data)
            return infonce_loss(i, t, s)

        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = opt.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), loss

    state, loss = step(state, batch_data)
    loss.block_until_ready()
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(steps):
            state, loss = step(state, batch_data)
        loss.block_until_ready()
        rates.append(steps * batch / (time.perf_counter() - start))
    return statistics.median(rates)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="small", help="built-in dataset size preset")
    parser.add_argument("--data-dir", default=None, help="reuse/build the dataset here "
                        "(default: a temporary folder, deleted afterwards)")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--batches", type=int, default=30)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)

    from jaxmm.data import builtin
    from jaxmm.data.catalog import data_config
    from jaxmm.data.tokenizers import train_tokenizer

    tmp = None
    data_dir = args.data_dir
    if data_dir is None:
        tmp = data_dir = tempfile.mkdtemp(prefix="jaxmm-bench-")
    try:
        t0 = time.perf_counter()
        builder = builtin.build(data_dir, args.size)
        build_s = time.perf_counter() - t0
        tok = train_tokenizer("wordpiece", [builtin.corpus_path(builder)], vocab_size=200,
                              min_frequency=1)
        rows = []
        length = 24
        step = clip_step_rate(args.batch, 64, length, tok.vocab_size, args.steps, args.repeats)
        for task in ("retrieval", "captioning"):
            cfg = data_config("scenes", task=task, size=args.size, data_dir=data_dir,
                              image_size=64, max_length=length)
            rate = pipeline_rate(cfg, tok, args.batch, args.batches, args.repeats)
            rows.append({"pipeline": f"scenes/{args.size} {task}", "pipeline_ex_s": rate,
                         "step_ex_s": step, "headroom": rate / step})
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
    print(f"\nbuilt-in dataset {args.size}: build/reuse {build_s:.1f} s; batch {args.batch}; "
          f"medians of {args.repeats} runs; {os.cpu_count()} CPU cores (shared, noisy)")
    print(f"{'pipeline':32s} {'pipeline ex/s':>14s} {'tiny CLIP step ex/s':>20s} "
          f"{'headroom':>9s}")
    for r in rows:
        print(f"{r['pipeline']:32s} {r['pipeline_ex_s']:14.0f} {r['step_ex_s']:20.0f} "
              f"{r['headroom']:8.1f}x")
    ok = all(r["headroom"] >= 5 for r in rows)
    print("headroom >= 5x:", "yes" if ok else "NO")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"rows": rows, "batch": args.batch, "size": args.size}, f, indent=2)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
