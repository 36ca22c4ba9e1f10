"""The Hungarian matcher (both solvers) against scipy's optimum."""

import jax
import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment

from jaxmm.errors import ConfigError
from jaxmm.layers.matching import hungarian_match

SOLVERS = ["jax", "scipy", "auto"]


def check_optimal(cost, mask, match):
    """``match`` is a valid matching of every real target whose cost is scipy's optimum."""
    match = np.asarray(match)
    for b in range(cost.shape[0]):
        real = np.flatnonzero(mask[b])
        assert np.all(match[b][mask[b] == 0] == -1)
        got = match[b, real]
        assert np.all((got >= 0) & (got < cost.shape[1]))
        assert len(set(got.tolist())) == len(got), "a query matched twice"
        rows, cols = linear_sum_assignment(cost[b][:, real])
        best = cost[b][rows, real[cols]].sum()
        np.testing.assert_allclose(cost[b][got, real].sum(), best, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("solver", SOLVERS)
def test_random_rectangular_with_padding_and_ties_jitted(solver, rng):
    match = jax.jit(lambda c, m: hungarian_match(c, m, solver=solver))
    b, q, t = 16, 9, 5
    mask = (rng.uniform(size=(b, t)) < 0.7).astype(np.int32)
    mask[0] = 1            # all targets real
    mask[1] = 0            # an image without objects
    mask[2, :] = [0, 1, 0, 1, 1]
    floats = rng.normal(size=(b, q, t)).astype(np.float32)
    ties = rng.integers(0, 3, size=(b, q, t)).astype(np.float32)  # many equal optima
    for cost in (floats, ties):
        check_optimal(cost, mask, match(cost, mask))
    square = rng.uniform(size=(3, 6, 6)).astype(np.float32)
    full = np.ones((3, 6), np.int32)
    check_optimal(square, full, hungarian_match(square, solver=solver))


def test_bad_shapes_are_refused():
    with pytest.raises(ConfigError, match="queries"):
        hungarian_match(np.zeros((1, 2, 3), np.float32))
    with pytest.raises(ConfigError, match="solver"):
        hungarian_match(np.zeros((1, 3, 2), np.float32), solver="auction")
