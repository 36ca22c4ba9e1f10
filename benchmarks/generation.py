"""Generation throughput: jaxmm.generate vs Hugging Face generate on the same CPU.

Same GPT-2 124M-sized random weights (built in transformers, saved, imported
with ``jaxmm.convert.from_hf``), same prompts and settings, EOS disabled so
every run produces exactly ``--new-tokens`` tokens per sequence. Reports the
median over ``--reps`` timed runs (compile time excluded, reported apart) and
the speed-up ratio. Prints a table and writes JSON when ``--json`` is given.

    python benchmarks/generation.py [--new-tokens 64] [--prompt 32] [--reps 5]

The machine may be shared. To keep the comparison fair under load, the runs of
both libraries alternate, and PyTorch is timed at each of ``--torch-threads``
(oversubscribed OpenMP threads can slow it down many times), its fastest
setting being the reference. Compare ratios from one run, not absolute numbers
across runs.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import tempfile
import time

import jax
import numpy as np


def _hf_model(path: str, small: bool):
    import torch
    import transformers

    torch.manual_seed(0)
    size = dict(n_layer=2, n_embd=64, n_head=4, vocab_size=1000) if small else {}
    cfg = transformers.GPT2Config(**size)  # defaults: the 124M GPT-2 shape
    model = transformers.GPT2LMHeadModel(cfg).eval()
    model.save_pretrained(path)
    return model


def _seconds(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def _time_alternating(fns: dict, reps: int) -> tuple[dict, dict]:
    """First-call seconds and the median of ``reps`` later calls for each of
    ``fns``, interleaving the functions so they see the same machine load."""
    first = {name: _seconds(fn) for name, fn in fns.items()}
    times = {name: [] for name in fns}
    for _ in range(reps):
        for name, fn in fns.items():
            times[name].append(_seconds(fn))
    return first, {name: statistics.median(t) for name, t in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--prompt", type=int, default=32, help="prompt length in tokens")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--small", action="store_true", help="tiny model (smoke test)")
    ap.add_argument("--cases", default="greedy:1:1,greedy:8:1,beam:1:4",
                    help="comma-separated name:batch:num_beams")
    ap.add_argument("--torch-threads", default="1,2",
                    help="torch thread counts to time; the fastest is the reference")
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args()

    import torch

    import jaxmm
    from jaxmm.convert import from_hf

    with tempfile.TemporaryDirectory() as tmp:
        hf = _hf_model(tmp, args.small)
        model, params, _ = from_hf(tmp)
    hf.generation_config.eos_token_id = None  # run the full length in both
    hf.generation_config.pad_token_id = 0
    vocab = hf.config.vocab_size
    rng = np.random.default_rng(0)

    cases = [(c.split(":")[0], int(c.split(":")[1]), int(c.split(":")[2]))
             for c in args.cases.split(",")]
    print(f"GPT-2 {'tiny' if args.small else '124M'} random weights, prompt {args.prompt}, "
          f"{args.new_tokens} new tokens, median of {args.reps}; jax {jax.__version__} "
          f"({jax.default_backend()}), torch {torch.__version__}, {os.cpu_count()} CPUs")
    threads = [int(t) for t in args.torch_threads.split(",")]
    print(f"{'case':<8}{'batch':>6}{'beams':>6}{'HF tok/s':>11}{'(threads)':>10}"
          f"{'jaxmm tok/s':>13}{'speed-up':>10}{'compile s':>11}", flush=True)
    rows = []
    for name, batch, beams in cases:
        ids = rng.integers(0, vocab, size=(batch, args.prompt)).astype(np.int64)
        mask = np.ones_like(ids)
        kw = dict(max_new_tokens=args.new_tokens, num_beams=beams)

        def run_hf(ids=ids, mask=mask, kw=kw, threads=1):
            torch.set_num_threads(threads)
            with torch.inference_mode():
                out = hf.generate(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask),
                                  do_sample=False, **kw)
            assert out.shape[1] == args.prompt + args.new_tokens

        def run_jax(ids=ids, mask=mask, kw=kw):
            out = jaxmm.generate(model, params, ids, mask, eos_token_id=[], **kw)
            jax.block_until_ready(out.sequences)
            assert out.sequences.shape[1] == args.prompt + args.new_tokens

        fns = {"jaxmm": run_jax}
        for t in threads:
            fns[f"hf{t}"] = functools.partial(run_hf, threads=t)
        first, med = _time_alternating(fns, args.reps)
        best = min(threads, key=lambda t: med[f"hf{t}"])
        hf_s, jax_s = med[f"hf{best}"], med["jaxmm"]
        tokens = batch * args.new_tokens
        rows.append(dict(case=name, batch=batch, num_beams=beams, new_tokens=args.new_tokens,
                         prompt=args.prompt, hf_tokens_per_s=tokens / hf_s, torch_threads=best,
                         jaxmm_tokens_per_s=tokens / jax_s, speedup=hf_s / jax_s,
                         jaxmm_compile_s=first["jaxmm"] - jax_s, median_s=med))
        r = rows[-1]
        print(f"{r['case']:<8}{r['batch']:>6}{r['num_beams']:>6}{r['hf_tokens_per_s']:>11.1f}"
              f"{r['torch_threads']:>10}{r['jaxmm_tokens_per_s']:>13.1f}{r['speedup']:>9.2f}x{r['jaxmm_compile_s']:>11.1f}",
              flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
