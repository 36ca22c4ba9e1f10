"""Input-pipeline throughput vs the demo's training steps' consumption, and the
effect of device prefetch on real training runs, on CPU.

Builds (or reuses) the built-in ``jaxmm_scenes`` dataset, trains the demo's
WordPiece tokenizer on its text corpus, and for each demo run (``clip``,
``captioner``, ``vqa`` in ``configs/demo.py``) measures examples/s of
``jaxmm.data.make_iterator`` with that run's training preprocessing, next to
examples/s of that run's own jitted training step (``jaxmm.train`` task, model
and optimizer from the same config, on a real batch).

Then it trains the demo's CLIP run with ``jaxmm.train.run`` for
``--prefetch-steps`` steps with device prefetch (``device_prefetch=2``: the host
reads and transfers the next batches while the device runs the step) and
without it (``device_prefetch=0``), alternating the two ``--repeats`` times in
this one process, and reports train steps/s of each (as the run logs it,
compilation excluded) and their ratio.

  python benchmarks/input_pipeline.py [--size small] [--batch 64] [--repeats 3]
      [--prefetch-steps 40] [--data-dir DIR] [--json out.json]

The pipeline needs at least 5x headroom (pipeline rate / step rate). Both are
measured on the same CPU, one after the other (in training they share the
cores): numbers are medians of ``--repeats`` runs.
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

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


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


def demo_step_rate(run: str, data_dir: str, tok_dir: str, vocab: int, size: str, batch: int,
                   steps: int, repeats: int) -> tuple[float, object]:
    """Examples/s of the demo run's own jitted training step (configs/demo.py), on a
    real batch from its pipeline; returns ``(rate, data config)``."""
    import jax

    from jaxmm.config import load_config
    from jaxmm.data.tokenizers import load as load_tokenizer
    from jaxmm.sharding import make_mesh
    from jaxmm.train import build_run

    built = build_run(load_config(
        f"{ROOT}/configs/demo.py:{run},data_dir={data_dir},tokenizer={tok_dir},vocab={vocab},"
        f"size={size},batch={batch}"), mesh=make_mesh(devices=jax.devices()[:1]))
    return (built_step_rate(built, load_tokenizer(tok_dir), batch, steps, repeats),
            built.config.data)


def built_step_rate(built, tok, batch: int, steps: int, repeats: int) -> float:
    """Examples/s of a built run's jitted training step on one real batch of its own
    training pipeline (median of ``repeats`` timings of ``steps`` steps, after a
    compiling first step)."""
    import flax.linen as nn
    import jax
    import jax.numpy as jnp

    from jaxmm.data import make_iterator
    from jaxmm.train.steps import TrainState, make_train_step

    cfg, task, tx = built.config, built.task, built.tx
    with make_iterator(cfg.data, split="train", batch_size=batch, seed=0, process_index=0,
                       process_count=1, tokenizer=tok) as it:
        data = {k: jnp.asarray(v) for k, v in next(it).items()}
    rng = jax.random.PRNGKey(0)
    variables = dict(nn.meta.unbox(jax.jit(task.init)(rng, built.example)))
    params = variables.pop("params")
    state = TrainState(step=jnp.zeros((), jnp.int32), params=params, extra=variables,
                       opt_state=tx.init(params), rng=rng)
    step = jax.jit(make_train_step(task, tx, schedule=built.schedule), donate_argnums=0)
    constants = task.constants(cfg, None, None)
    state, metrics = step(state, data, constants)
    jax.block_until_ready(metrics)
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(steps):
            state, metrics = step(state, data, constants)
        jax.block_until_ready(metrics)
        rates.append(steps * batch / (time.perf_counter() - start))
    return statistics.median(rates)


def prefetch_rates(data_dir: str, tok_dir: str, vocab: int, size: str, batch: int, steps: int,
                   repeats: int) -> dict[int, list[float]]:
    """Train steps/s of the demo CLIP run per device prefetch size (2 and 0),
    alternating the two ``repeats`` times; each run starts from scratch."""
    import jaxmm.train
    from jaxmm.config import load_config

    rates: dict[int, list[float]] = {2: [], 0: []}
    for r in range(repeats):
        for size_ahead in ((2, 0) if r % 2 == 0 else (0, 2)):
            cfg = load_config(f"{ROOT}/configs/demo.py:clip,data_dir={data_dir},"
                              f"tokenizer={tok_dir},vocab={vocab},size={size},batch={batch},"
                              f"steps={steps}")
            with cfg.unlocked():
                cfg.device_prefetch = size_ahead
                cfg.log = {"every_steps": steps, "progress": False, "tensorboard": False,
                           "mfu": False}
                cfg.checkpoint = {"every_steps": 10 * steps, "save_final": False,
                                  "export_params": False}
                cfg.eval.at_end = False
            workdir = tempfile.mkdtemp(prefix="jaxmm-prefetch-")
            try:
                jaxmm.train.run(cfg, workdir)
                with open(os.path.join(workdir, "metrics.jsonl")) as f:
                    last = [json.loads(line) for line in f][-1]
                rates[size_ahead].append(last["train/steps_per_sec"])
            finally:
                shutil.rmtree(workdir, ignore_errors=True)
    return rates


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="small", help="built-in dataset size preset")
    parser.add_argument("--data-dir", default=None, help="reuse/build the dataset here "
                        "(default: a temporary folder, deleted afterwards)")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--batches", type=int, default=30)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--prefetch-steps", type=int, default=40,
                        help="steps per training run of the prefetch comparison (0: skip it)")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)

    from jaxmm.data import builtin
    from jaxmm.data.tokenizers import load as load_tokenizer
    from jaxmm.data.tokenizers import train_tokenizer

    tmp = None
    data_dir = args.data_dir
    if data_dir is None:
        tmp = data_dir = tempfile.mkdtemp(prefix="jaxmm-bench-")
    try:
        t0 = time.perf_counter()
        builder = builtin.build(data_dir, args.size)
        build_s = time.perf_counter() - t0
        tok_dir = os.path.join(data_dir, "tokenizer")
        train_tokenizer("wordpiece", [builtin.corpus_path(builder)], vocab_size=256,
                        min_frequency=1, out_dir=tok_dir, model_max_length=64)
        tok = load_tokenizer(tok_dir)
        rows = []
        for run in ("clip", "captioner", "vqa"):
            step, cfg = demo_step_rate(run, data_dir, tok_dir, tok.vocab_size, args.size,
                                       args.batch, args.steps, args.repeats)
            rate = pipeline_rate(cfg, tok, args.batch, args.batches, args.repeats)
            rows.append({"pipeline": f"scenes/{args.size} {run}", "pipeline_ex_s": rate,
                         "step_ex_s": step, "headroom": rate / step})
        prefetch = {}
        if args.prefetch_steps:
            prefetch = prefetch_rates(data_dir, tok_dir, tok.vocab_size, args.size, args.batch,
                                      args.prefetch_steps, args.repeats)
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
    print(f"\nbuilt-in dataset {args.size}: build/reuse {build_s:.1f} s; batch {args.batch}; "
          f"medians of {args.repeats} runs; {os.cpu_count()} CPU cores (shared, noisy)")
    print(f"{'pipeline':32s} {'pipeline ex/s':>14s} {'demo step ex/s':>20s} "
          f"{'headroom':>9s}")
    for r in rows:
        print(f"{r['pipeline']:32s} {r['pipeline_ex_s']:14.0f} {r['step_ex_s']:20.0f} "
              f"{r['headroom']:8.1f}x")
    ok = all(r["headroom"] >= 5 for r in rows)
    print("headroom >= 5x:", "yes" if ok else "NO")
    summary = {"rows": rows, "batch": args.batch, "size": args.size}
    if prefetch:
        with_, without = (statistics.median(prefetch[k]) for k in (2, 0))
        print(f"\ndemo CLIP training, {args.prefetch_steps} steps per run, {jax_devices()}: "
              f"steps/s with device prefetch (2 batches ahead) {with_:.2f}, without "
              f"{without:.2f}; ratio {with_ / without:.3f} (medians of {args.repeats}; runs "
              f"{[round(x, 2) for x in prefetch[2]]} vs {[round(x, 2) for x in prefetch[0]]})")
        summary["prefetch"] = {"with_steps_s": prefetch[2], "without_steps_s": prefetch[0],
                               "ratio": with_ / without}
    if args.json:
        with open(args.json, "w") as f:
            json.dump(summary, f, indent=2)
    return 0 if ok else 1


def jax_devices() -> str:
    import jax

    return f"{jax.device_count()} {jax.default_backend()} device(s)"


if __name__ == "__main__":
    sys.exit(main())
