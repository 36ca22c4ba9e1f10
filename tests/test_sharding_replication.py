"""jaxmm.sharding.logical_shardings warns when a large array cannot be split."""

import warnings

import flax.linen as nn
import jax
import jax.numpy as jnp
import pytest
from jax.sharding import PartitionSpec

from jaxmm import sharding


class _Tables(nn.Module):
    vocab: int
    width: int = 256

    @nn.compact
    def __call__(self, ids):
        table = self.param("embedding", nn.with_logical_partitioning(
            nn.initializers.normal(0.02), ("vocab", "embed")), (self.vocab, self.width))
        small = self.param("small", nn.with_logical_partitioning(
            nn.initializers.zeros, ("vocab",)), (self.vocab + 3,))
        return table[ids] + small[ids][..., None]


def _shardings(vocab: int, mesh):
    abstract = jax.eval_shape(_Tables(vocab).init, jax.random.key(0), jnp.zeros((2,), jnp.int32))
    return sharding.logical_shardings(abstract, mesh)


def test_large_table_that_cannot_be_split_warns_with_its_path_and_the_fix():
    mesh = sharding.make_mesh(data=1, fsdp=2, tensor=4)
    # 4099 x 256 float32 = 4.0 MiB: over the threshold; 4099 is not divisible by tensor=4.
    with pytest.warns(sharding.ReplicationWarning) as record:
        shards = _shardings(4099, mesh)
    assert len(record) == 1  # one warning for the whole tree
    msg = str(record[0].message)
    assert "params/embedding (4099, 256)" in msg
    assert "dim 0 (4099) is not divisible by tensor=4" in msg
    assert "multiple of the mesh axis size" in msg
    assert "small" not in msg  # too small to matter
    assert shards["params"]["embedding"].spec == PartitionSpec(None, "fsdp")


def test_divisible_table_is_split_silently():
    mesh = sharding.make_mesh(data=1, fsdp=2, tensor=4)
    with warnings.catch_warnings():
        warnings.simplefilter("error", sharding.ReplicationWarning)
        shards = _shardings(4100, mesh)
    assert shards["params"]["embedding"].spec == PartitionSpec("tensor", "fsdp")
    # The small vector (4103 entries) is replicated along vocab without a warning.
    assert shards["params"]["small"].spec == PartitionSpec(None)


def test_threshold_is_configurable(monkeypatch):
    mesh = sharding.make_mesh(data=1, fsdp=2, tensor=4)
    monkeypatch.setattr(sharding, "REPLICATION_WARNING_BYTES", 1)
    with pytest.warns(sharding.ReplicationWarning, match="2 array"):
        _shardings(4099, mesh)
