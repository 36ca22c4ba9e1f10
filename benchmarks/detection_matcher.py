"""DETR's Hungarian matching inside a jitted step: on-device JAX solver vs a scipy callback.

Both solvers of :func:`jaxmm.layers.matching.hungarian_match` run the same random cost
matrices (``[batch, queries, targets]``, about 70% of the targets real, the rest padding)
inside ``jax.jit``. Reported: median wall time per call over ``--repeats`` calls after
warm-up, in milliseconds, and the jax/scipy ratio (< 1: the on-device solver is faster).
The scipy solver makes one host callback per batch (a loop over the examples there).

  python benchmarks/detection_matcher.py [--repeats 30] [--json out.json]

Only ratios from the same run on the same machine mean anything.
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

from jaxmm.layers.matching import hungarian_match  # noqa: E402

CASES = [(32, 10, 4), (32, 20, 8), (32, 50, 10), (32, 100, 20), (8, 100, 50)]


def time_calls(fn, args, repeats: int) -> float:
    jax.block_until_ready(fn(*args))  # compile + warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    rows = []
    print(f"backend: {jax.default_backend()} ({jax.devices()[0].device_kind})")
    print(f"{'batch x queries x targets':>26} {'jax ms':>9} {'scipy ms':>9} {'jax/scipy':>9}")
    for b, q, t in CASES:
        cost = jax.device_put(rng.uniform(size=(b, q, t)).astype(np.float32))
        mask = jax.device_put((rng.uniform(size=(b, t)) < 0.7).astype(np.int32))
        row = {"batch": b, "queries": q, "targets": t}
        for solver in ("jax", "scipy"):
            fn = jax.jit(lambda c, m, s=solver: hungarian_match(c, m, solver=s))
            row[solver] = time_calls(fn, (cost, mask), args.repeats)
        np.testing.assert_array_equal(  # same optimum (ties have probability 0 here)
            hungarian_match(cost, mask, solver="jax"), hungarian_match(cost, mask, solver="scipy"))
        rows.append(row)
        print(f"{f'{b} x {q} x {t}':>26} {row['jax']:9.3f} {row['scipy']:9.3f} "
              f"{row['jax'] / row['scipy']:9.2f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
