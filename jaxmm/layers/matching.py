"""Minimum-cost bipartite matching (the Hungarian step of DETR), usable inside ``jax.jit``.

Two solvers, same contract, both exact:

* ``"jax"``: the shortest-augmenting-path Hungarian algorithm with dual potentials
  (Kuhn-Munkres in the Jonker-Volgenant form, O(T^2 Q) per example) written with
  ``lax.fori_loop``/``lax.while_loop`` and ``vmap``-ed over the batch. It stays on the
  device and shards with the batch.
* ``"scipy"``: one ``jax.pure_callback`` per batch to
  ``scipy.optimize.linear_sum_assignment`` (a host round trip per step, not per example).

``benchmarks/detection_matcher.py`` measures both. On the 2-core CPU of the development
machine (batch 32) the JAX solver is faster up to about 500 query x target cells (20 x 8:
0.18 ms against 0.33 ms) and scipy above (100 x 20: 1.3 ms against 0.6 ms), so the default,
``"auto"``, picks by that size. ``"auto"`` always picks ``"jax"`` on multi-process runs: the
callback needs the whole batch on one host.
"""

from __future__ import annotations

from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxmm.errors import ConfigError

Array = jax.Array
Solver = Literal["auto", "jax", "scipy"]

__all__ = ["AUTO_JAX_MAX_CELLS", "DEFAULT_SOLVER", "hungarian_match"]

DEFAULT_SOLVER: Solver = "auto"
# "auto" uses the JAX solver up to this many queries x targets (the measured crossover).
AUTO_JAX_MAX_CELLS = 500


def _solve_one(cost: Array, mask: Array) -> Array:
    """One example: ``cost [T, Q]`` (targets x queries, T <= Q), ``mask [T]`` -> ``[T]``.

    Returns the query matched to each target (-1 for masked targets). Index 0 of the
    column arrays is the algorithm's virtual column; rows and columns are 1-based.
    """
    n, m = cost.shape
    dtype = cost.dtype
    inf = jnp.asarray(jnp.inf, dtype)
    # Padded with a zero row/column so that cost[i, j] is 1-based.
    a = jnp.zeros((n + 1, m + 1), dtype).at[1:, 1:].set(cost)
    cols = jnp.arange(m + 1)

    def add_row(i, carry):
        u, v, p, way = carry
        p = p.at[0].set(i)
        run = mask[i - 1]

        def step(state):
            u, v, p, way, minv, used, j0, _ = state
            used = used.at[j0].set(True)
            i0 = p[j0]
            cur = a[i0] - u[i0] - v
            better = (~used) & (cur < minv) & (cols > 0)
            minv = jnp.where(better, cur, minv)
            way = jnp.where(better, j0, way)
            free = jnp.where(used | (cols == 0), inf, minv)
            j1 = jnp.argmin(free)
            delta = free[j1]
            u = u.at[p].add(jnp.where(used, delta, 0))
            v = jnp.where(used, v - delta, v)
            minv = jnp.where(used, minv, minv - delta)
            return u, v, p, way, minv, used, j1, p[j1] == 0

        minv = jnp.full((m + 1,), inf)
        used = jnp.zeros((m + 1,), bool)
        u, v, p, way, _, _, j0, _ = lax.while_loop(
            lambda s: ~s[-1], step, (u, v, p, way, minv, used, jnp.int32(0), ~run))

        def augment(state):
            p, j0 = state
            j1 = way[j0]
            return p.at[j0].set(p[j1]), j1

        p, _ = lax.while_loop(lambda s: s[1] != 0, augment, (p, jnp.where(run, j0, 0)))
        return u, v, p, way

    init = (jnp.zeros((n + 1,), dtype), jnp.zeros((m + 1,), dtype),
            jnp.zeros((m + 1,), jnp.int32), jnp.zeros((m + 1,), jnp.int32))
    _, _, p, _ = lax.fori_loop(1, n + 1, add_row, init)
    # p[j] = row matched to column j (0: none) -> for each row, its column.
    rows = jnp.where(cols > 0, p, 0)
    target_to_query = jnp.zeros((n + 1,), jnp.int32).at[rows].max(
        jnp.where(rows > 0, cols - 1, 0).astype(jnp.int32))
    return jnp.where(mask, target_to_query[1:], -1)


def _scipy_batch(cost: np.ndarray, mask: np.ndarray) -> np.ndarray:
    from scipy.optimize import linear_sum_assignment

    cost, mask = np.asarray(cost), np.asarray(mask)
    out = np.full(mask.shape, -1, np.int32)
    for b in range(cost.shape[0]):
        real = np.flatnonzero(mask[b])
        if real.size:
            rows, cols = linear_sum_assignment(cost[b][:, real])  # [Q, t]: rows = queries
            out[b, real[cols]] = rows
    return out


def hungarian_match(cost: Array, target_mask: Array | None = None, *,
                    solver: Solver = DEFAULT_SOLVER) -> Array:
    """Minimum-cost matching of queries to targets, per example.

    Args:
      cost: ``[B, Q, T]`` cost of giving target ``t`` to query ``q``; needs ``Q >= T``.
        Must be finite.
      target_mask: ``[B, T]`` 1 for real targets, 0 for padding (default: all real).
      solver: ``"jax"`` (on device), ``"scipy"`` (one host callback per batch) or
        ``"auto"`` (``"jax"`` up to :data:`AUTO_JAX_MAX_CELLS` queries x targets or on
        multi-process runs, else ``"scipy"``).

    Returns:
      ``[B, T]`` int32: the query matched to each target, distinct within an example;
      -1 for masked targets. Every real target is matched; unmatched queries are the
      ones that appear nowhere.
    """
    cost = jnp.asarray(cost)
    if cost.ndim != 3:
        raise ConfigError(f"hungarian_match: cost must be [batch, queries, targets], got "
                          f"shape {cost.shape}; add a batch axis.")
    b, q, t = cost.shape
    if t > q:
        raise ConfigError(f"hungarian_match: {t} targets but only {q} queries; use at least "
                          "as many object queries as the most targets an image can have.")
    if not jnp.issubdtype(cost.dtype, jnp.floating):
        cost = cost.astype(jnp.float32)
    mask = (jnp.ones((b, t), bool) if target_mask is None
            else jnp.asarray(target_mask).astype(bool))
    if solver == "auto":
        small = q * t <= AUTO_JAX_MAX_CELLS
        solver = "jax" if small or jax.process_count() > 1 else "scipy"
    if solver == "jax":
        return jax.vmap(_solve_one)(jnp.swapaxes(cost, 1, 2), mask)
    if solver == "scipy":
        out = jax.ShapeDtypeStruct((b, t), jnp.int32)
        return jax.pure_callback(_scipy_batch, out, cost, mask, vmap_method="sequential")
    raise ConfigError(f"Unknown matcher solver {solver!r}; use 'auto', 'jax' or 'scipy'.")
