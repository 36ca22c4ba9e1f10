"""Training-step time and MFU: jaxmm vs the Hugging Face PyTorch training step, on CPU.

For each model (small GPT-2 LM, small CLIP, and small BERT-MLM / ViT classifier)
both frameworks run the same shapes with AdamW: forward, backward, optimizer
update. Reported: median step time over ``--repeats`` timed steps (after warm-up),
the jaxmm/HF time ratio (< 1 means jaxmm is faster), and MFU against this host's
measured float32 matmul peak (model FLOPs from XLA's cost analysis, 3x forward).

The second table measures what an asynchronous Orbax checkpoint save costs the
step in which it is issued (the device-to-host copy is synchronous; the write
runs in the background), against the median step.

  python benchmarks/train_step.py [--repeats 10] [--json out.json]

The CPU is shared and noisy: numbers are medians of several repetitions, and
only ratios measured in the same run are meaningful. Models whose jaxmm family is
not registered (yet) are listed as skipped.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from jaxmm.models import registry  # noqa: E402
from jaxmm.train import build_task, make_train_step, resolve_config  # noqa: E402
from jaxmm.train.logging import forward_flops, measure_matmul_peak  # noqa: E402
from jaxmm.train.optim import make_optimizer  # noqa: E402
from jaxmm.train.steps import TrainState  # noqa: E402

BATCH, SEQ, WIDTH, LAYERS, HEADS, VOCAB, IMAGE = 8, 128, 256, 4, 4, 8192, 64

CASES = {
    "gpt2-small-lm": dict(task="lm", model="gpt", layout="text", config=dict(
        num_layers=LAYERS, d_model=WIDTH, num_heads=HEADS, mlp_dim=4 * WIDTH,
        vocab_size=VOCAB, max_position_embeddings=SEQ)),
    "clip-small": dict(task="contrastive", model="clip", layout="image_text", config=dict(
        text=dict(num_layers=LAYERS, d_model=WIDTH, num_heads=HEADS, mlp_dim=4 * WIDTH,
                  vocab_size=VOCAB, max_position_embeddings=SEQ),
        vision=dict(num_layers=LAYERS, d_model=WIDTH, num_heads=HEADS, mlp_dim=4 * WIDTH,
                    image_size=IMAGE, patch_size=8),
        projection_dim=WIDTH)),
    "bert-small-mlm": dict(task="mlm", model="bert_mlm", layout="text", config=dict(
        num_layers=LAYERS, d_model=WIDTH, num_heads=HEADS, mlp_dim=4 * WIDTH,
        vocab_size=VOCAB, max_position_embeddings=SEQ)),
    "vit-small-cls": dict(task="classification", model="vit_classifier", layout="image",
                          config=dict(num_layers=LAYERS, d_model=WIDTH, num_heads=HEADS,
                                      mlp_dim=4 * WIDTH, image_size=IMAGE, patch_size=8,
                                      num_labels=10)),
}


def _median_time(fn, repeats: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def jaxmm_case(case: dict, repeats: int):
    """Returns (median step seconds, model FLOPs per step, state, step fn, batch)."""
    cfg = resolve_config({
        "task": {"name": case["task"], **({"mask_token_id": 3} if case["task"] == "mlm"
                                          else {})},
        "model": {"name": case["model"], "config": case["config"] or {}},
        "batch_size": BATCH, "num_steps": 1000,
        "data": {"name": "synthetic", "seq_len": SEQ, "image_size": IMAGE},
        "optimizer": {"name": "adamw", "learning_rate": 1e-4, "clip_norm": 1.0},
    })
    task = build_task(cfg)
    from jaxmm.train.synthetic import make_batch

    dims = {**task.synthetic_dims(), "seq_len": SEQ, "image_size": IMAGE}
    batch = {k: jnp.asarray(v) for k, v in make_batch(task.layout, 0, BATCH, **dims).items()}
    import flax.linen as nn

    variables = nn.meta.unbox(task.init(jax.random.PRNGKey(0), batch))
    params = variables.pop("params")
    tx, _ = make_optimizer(cfg)
    state = TrainState(step=jnp.zeros((), jnp.int32), params=params, extra=variables,
                       opt_state=tx.init(params), rng=jax.random.PRNGKey(1))
    step = jax.jit(make_train_step(task, tx), donate_argnums=0)
    holder = {"state": state}

    def one():
        holder["state"], m = step(holder["state"], batch, None)
        jax.block_until_ready(m)

    seconds = _median_time(one, repeats)
    rng = jax.random.PRNGKey(0)
    fwd = forward_flops(
        lambda v, b: task.loss(v, task.prepare(b, rng, False), train=False, rng=rng).loss,
        {"params": holder["state"].params, **variables}, batch)
    return seconds, (3 * fwd if fwd else None), holder, step, batch


def hf_case(name: str, repeats: int) -> float | None:
    import torch
    import transformers as tf

    torch.manual_seed(0)
    torch.set_num_threads(os.cpu_count() or 1)
    ids = torch.randint(4, VOCAB, (BATCH, SEQ))
    if name.startswith("gpt2"):
        model = tf.GPT2LMHeadModel(tf.GPT2Config(n_layer=LAYERS, n_embd=WIDTH, n_head=HEADS,
                                                 vocab_size=VOCAB, n_positions=SEQ))
        inputs = dict(input_ids=ids, labels=ids)
    elif name.startswith("bert"):
        model = tf.BertForMaskedLM(tf.BertConfig(
            num_hidden_layers=LAYERS, hidden_size=WIDTH, num_attention_heads=HEADS,
            intermediate_size=4 * WIDTH, vocab_size=VOCAB, max_position_embeddings=SEQ))
        inputs = dict(input_ids=ids, labels=ids)
    elif name.startswith("clip"):
        block = dict(num_hidden_layers=LAYERS, hidden_size=WIDTH, num_attention_heads=HEADS,
                     intermediate_size=4 * WIDTH)
        model = tf.CLIPModel(tf.CLIPConfig(
            text_config=dict(block, vocab_size=VOCAB, max_position_embeddings=SEQ),
            vision_config=dict(block, image_size=IMAGE, patch_size=8), projection_dim=WIDTH))
        inputs = dict(input_ids=ids, pixel_values=torch.randn(BATCH, 3, IMAGE, IMAGE),
                      return_loss=True)
    elif name.startswith("vit"):
        model = tf.ViTForImageClassification(tf.ViTConfig(
            num_hidden_layers=LAYERS, hidden_size=WIDTH, num_attention_heads=HEADS,
            intermediate_size=4 * WIDTH, image_size=IMAGE, patch_size=8, num_labels=10))
        inputs = dict(pixel_values=torch.randn(BATCH, 3, IMAGE, IMAGE),
                      labels=torch.randint(0, 10, (BATCH,)))
    else:
        return None
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    model.train()

    def one():
        loss = model(**inputs).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    return _median_time(one, repeats)


def checkpoint_cost(holder, step, batch, repeats: int) -> dict:
    """Median plain step vs the step that also issues an async Orbax save."""
    from jaxmm.train.checkpoint import Checkpointer

    def plain():
        holder["state"], m = step(holder["state"], batch, None)
        jax.block_until_ready(m)

    base = _median_time(plain, repeats)
    with tempfile.TemporaryDirectory() as d:
        ck = Checkpointer(d, keep=2, async_save=True)
        times = []
        for _ in range(max(3, repeats // 3)):
            t = time.perf_counter()
            holder["state"], m = step(holder["state"], batch, None)
            jax.block_until_ready(m)
            ck.save(holder["state"], data_state={"next_batch": 0})
            times.append(time.perf_counter() - t)
            ck.wait()  # the next save must not queue behind this one
        ck.close()
    nbytes = sum(x.nbytes for x in jax.tree.leaves(holder["state"]))
    return {"step_s": base, "step_with_async_save_s": statistics.median(times),
            "slowdown": statistics.median(times) / base, "state_mb": nbytes / 2**20}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--json", default=None)
    p.add_argument("--models", default=",".join(CASES),
                   help=f"comma-separated subset of {', '.join(CASES)}")
    args = p.parse_args(argv)
    unknown = sorted(set(args.models.split(",")) - set(CASES))
    if unknown:
        p.error(f"unknown --models {unknown}; choose from {', '.join(CASES)}")
    peak = measure_matmul_peak(1024)
    print(f"jax {jax.__version__} on {jax.devices()[0].device_kind}; measured f32 matmul "
          f"peak {peak / 1e9:.1f} GFLOP/s; batch {BATCH}, seq {SEQ}, width {WIDTH}, "
          f"{LAYERS} layers\n")
    rows, ckpt = [], None
    print(f"{'model':<16} {'jaxmm ms':>9} {'HF torch ms':>12} {'ratio':>6} {'MFU':>6}")
    for name, case in CASES.items():
        if name not in args.models.split(","):
            continue
        if case["model"] not in registry.available():
            print(f"{name:<16} skipped: model {case['model']!r} is not registered yet")
            continue
        if case["config"] is None:
            print(f"{name:<16} skipped: no size given for {case['model']!r}")
            continue
        seconds, flops, holder, step, batch = jaxmm_case(case, args.repeats)
        hf = hf_case(name, args.repeats)
        mfu = flops / seconds / peak if flops else None
        rows.append({"model": name, "jaxmm_s": seconds, "hf_s": hf,
                     "ratio": seconds / hf if hf else None, "mfu": mfu,
                     "model_flops": flops})
        print(f"{name:<16} {1e3 * seconds:9.1f} {1e3 * hf if hf else float('nan'):12.1f} "
              f"{seconds / hf if hf else float('nan'):6.2f} "
              f"{100 * mfu if mfu else float('nan'):5.1f}%")
        if ckpt is None:
            ckpt = {"model": name, **checkpoint_cost(holder, step, batch, args.repeats)}
    if ckpt:
        print(f"\nasync checkpoint save ({ckpt['model']}, state {ckpt['state_mb']:.1f} MB): "
              f"step {1e3 * ckpt['step_s']:.1f} ms, step + save call "
              f"{1e3 * ckpt['step_with_async_save_s']:.1f} ms "
              f"(x{ckpt['slowdown']:.2f})")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"peak_flops": peak, "rows": rows, "checkpoint": ckpt}, f, indent=2)
    return 0


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    sys.exit(main())
