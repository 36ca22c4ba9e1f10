"""Random parameters without compiling ``model.init`` (tests of shapes, masks and
formulas do not need the real initialisers; compiling them costs seconds)."""

import flax.linen as nn
import jax
import numpy as np


def random_params(model, *args, seed: int = 0, std: float = 0.05, **kwargs):
    """NumPy-random params with the shapes ``model.init(*args, **kwargs)`` would give.

    Norm scales are ``1 + std * N(0, 1)``, everything else ``std * N(0, 1)``.
    """
    shapes = jax.eval_shape(model.init, jax.random.key(0), *args, **kwargs).get("params", {})
    shapes = nn.unbox(shapes)
    rng = np.random.default_rng(seed)

    def make(path, s):
        base = 1.0 if getattr(path[-1], "key", None) == "scale" else 0.0
        return (base + std * rng.normal(size=s.shape)).astype(s.dtype)

    return jax.tree_util.tree_map_with_path(make, shapes)
