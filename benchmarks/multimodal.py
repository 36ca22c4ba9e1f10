"""Multimodal throughput: a CLIP training step and a ViT forward, jaxmm vs HF PyTorch.

In one run on this machine, with the same weights and the same batch:

* CLIP training step (batch 32: 128x128 images, 32-token captions; 4-layer,
  256-wide towers): forward, symmetric InfoNCE loss, backward and an AdamW
  update. jaxmm: one jitted step (``jaxmm.losses.infonce_loss``, optax AdamW,
  donated buffers); PyTorch: ``CLIPModel(return_loss=True)``, ``loss.backward()``,
  ``torch.optim.AdamW``. The first losses of both are compared as a check.
* ViT-B/16 forward (batch 8, 224x224), reusing ``benchmarks/vision_audio.py``.

Each figure is the median of ``--reps`` timed calls after warm-up; the ratio is
``torch_time / jaxmm_time`` (> 1: jaxmm is faster); MFU is XLA's FLOP count per
second over a measured float32 matmul peak. The CPU is shared with other
work: medians reduce, but do not remove, the effect of other load.

    python benchmarks/multimodal.py [--reps 5] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(_HERE))
sys.path.insert(0, _HERE)

import jax  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from vision_audio import _flops, _median_time, bench_vit, matmul_peak  # noqa: E402

BATCH, IMAGE, PATCH, SEQ, WIDTH, LAYERS, HEADS, VOCAB = 32, 128, 16, 32, 256, 4, 4, 8192
LR, WD, EPS = 1e-4, 0.01, 1e-8


def _hf_clip():
    import torch
    import transformers

    torch.manual_seed(0)
    tower = dict(hidden_size=WIDTH, intermediate_size=4 * WIDTH, num_hidden_layers=LAYERS,
                 num_attention_heads=HEADS)
    cfg = transformers.CLIPConfig(
        text_config=dict(tower, vocab_size=VOCAB, max_position_embeddings=SEQ,
                         eos_token_id=VOCAB - 1, bos_token_id=VOCAB - 2, pad_token_id=0),
        vision_config=dict(tower, image_size=IMAGE, patch_size=PATCH), projection_dim=WIDTH)
    return transformers.CLIPModel(cfg)


def _batch():
    rng = np.random.default_rng(0)
    ids = rng.integers(1, VOCAB - 2, size=(BATCH, SEQ)).astype(np.int32)
    lengths = rng.integers(8, SEQ, size=BATCH)
    mask = (np.arange(SEQ)[None] <= lengths[:, None]).astype(np.int32)
    ids[np.arange(BATCH), lengths] = VOCAB - 1  # EOS
    ids = np.where(mask == 1, ids, 0).astype(np.int32)
    image = rng.normal(size=(BATCH, IMAGE, IMAGE, 3)).astype(np.float32)
    return ids, mask, image


def bench_clip_train_step(reps: int, tmp: str) -> dict:
    import torch

    from jaxmm.convert import from_hf
    from jaxmm.losses import infonce_loss

    hf = _hf_clip()
    path = os.path.join(tmp, "clip")
    hf.save_pretrained(path)
    model, params, _ = from_hf(path)
    ids, mask, image = _batch()

    # jaxmm: one jitted step with donated params and optimizer state.
    opt = optax.adamw(LR, b1=0.9, b2=0.999, eps=EPS, weight_decay=WD)

    def loss_fn(p):
        out = model.apply({"params": p}, ids, image, mask)
        return infonce_loss(out.image_embeds, out.text_embeds, out.logit_scale, max_scale=None)

    def step(p, s):
        loss, grads = jax.value_and_grad(loss_fn)(p)
        updates, s = opt.update(grads, s, p)
        return optax.apply_updates(p, updates), s, loss

    jstep = jax.jit(step, donate_argnums=(0, 1))
    flops = _flops(jax.jit(step), params, opt.init(params))
    state = {"p": jax.tree.map(np.array, params)}
    state["s"] = opt.init(state["p"])

    def run_jax():
        state["p"], state["s"], state["loss"] = jstep(state["p"], state["s"])
        state["loss"].block_until_ready()

    run_jax()
    jax_first = float(state["loss"])

    # PyTorch: same weights, same batch.
    hf.train()
    topt = torch.optim.AdamW(hf.parameters(), lr=LR, betas=(0.9, 0.999), eps=EPS,
                             weight_decay=WD)
    inputs = dict(input_ids=torch.from_numpy(ids.astype(np.int64)),
                  attention_mask=torch.from_numpy(mask.astype(np.int64)),
                  pixel_values=torch.from_numpy(image.transpose(0, 3, 1, 2).copy()),
                  return_loss=True)
    torch_first = {}

    def run_torch():
        loss = hf(**inputs).loss
        loss.backward()
        topt.step()
        topt.zero_grad(set_to_none=True)
        torch_first.setdefault("loss", loss.item())

    run_torch()
    t_jax = _median_time(run_jax, reps)
    t_torch = _median_time(run_torch, reps)
    return dict(name=f"CLIP train step (B={BATCH}, {IMAGE}px, {SEQ} tok)", jax_s=t_jax,
                torch_s=t_torch, flops=flops,
                max_abs_diff=abs(jax_first - torch_first["loss"]))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    import torch

    peak = matmul_peak(args.reps)
    with tempfile.TemporaryDirectory() as tmp:
        rows = [bench_clip_train_step(args.reps, tmp), bench_vit(args.reps, tmp)]
    print(f"jax {jax.__version__} ({jax.default_backend()}, {jax.device_count()} devices), "
          f"torch {torch.__version__} ({torch.get_num_threads()} threads), "
          f"{os.cpu_count()} CPUs; measured f32 matmul peak {peak / 1e9:.1f} GFLOP/s; "
          f"median of {args.reps} reps (shared CPU: other load moves these numbers)")
    print(f"{'benchmark':42s} {'jaxmm ms':>9s} {'torch ms':>9s} {'torch/jaxmm':>11s} "
          f"{'MFU':>6s} {'check':>9s}")
    for r in rows:
        r["speedup_vs_reference"] = r["torch_s"] / r["jax_s"]
        r["mfu_vs_measured_peak"] = r["flops"] / r["jax_s"] / peak if r["flops"] else None
        mfu = f"{100 * r['mfu_vs_measured_peak']:.0f}%" if r["mfu_vs_measured_peak"] else "-"
        print(f"{r['name']:42s} {1e3 * r['jax_s']:9.1f} {1e3 * r['torch_s']:9.1f} "
              f"{r['speedup_vs_reference']:11.2f} {mfu:>6s} {r['max_abs_diff']:9.1e}")
    print("check: |first-step loss difference| for the train step, max |output difference| "
          "for the forward.")
    if args.json:
        print(json.dumps({"matmul_peak_flops": peak, "results": rows}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
