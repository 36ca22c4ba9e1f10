"""Eval batches from jaxmm.data keep their padding mask through the loop's input path."""

import jax
import numpy as np

from jaxmm.data.device import make_global_batch, pad_batch
from jaxmm.sharding import make_mesh


def test_pad_batch_keeps_iterator_mask_and_global_batch_drops_strings():
    local = {"x": np.arange(8, dtype=np.float32).reshape(4, 2),
             "answers": np.array([b"a", b"b", b"c", b"d"], dtype=object),
             "example_mask": np.array([1, 1, 0, 0], np.float32)}
    full = pad_batch(local, 4)
    np.testing.assert_array_equal(full["example_mask"], [1, 1, 0, 0])
    short = pad_batch({k: v[:3] for k, v in local.items()}, 4)
    np.testing.assert_array_equal(short["example_mask"], [1, 1, 0, 0])
    plain = pad_batch({"x": local["x"][:3]}, 4)
    np.testing.assert_array_equal(plain["example_mask"], [1, 1, 1, 0])
    out = make_global_batch(full, make_mesh(data=4, devices=jax.devices()[:4]))
    assert set(out) == {"x", "example_mask"} and out["x"].shape == (4, 2)
