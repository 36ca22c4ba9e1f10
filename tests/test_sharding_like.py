"""jaxmm.sharding.shardings_like: optimizer-state shardings that follow the params."""

import jax
import jax.numpy as jnp
import optax
from jax.sharding import NamedSharding, PartitionSpec

from jaxmm.sharding import make_mesh, shardings_like


def test_adam_and_adafactor_states_follow_param_shardings():
    mesh = make_mesh(data=2, fsdp=2, tensor=2)
    params = {"dense": {"kernel": jnp.zeros((256, 512)), "bias": jnp.zeros((512,))}}
    pshard = {"dense": {"kernel": NamedSharding(mesh, PartitionSpec("fsdp", "tensor")),
                        "bias": NamedSharding(mesh, PartitionSpec("tensor"))}}
    adam = jax.eval_shape(optax.adamw(1e-3).init, params)
    sh = shardings_like(adam, params, pshard, mesh)
    assert sh[0].mu["dense"]["kernel"].spec == PartitionSpec("fsdp", "tensor")
    assert sh[0].nu["dense"]["bias"].spec == PartitionSpec("tensor")
    assert sh[0].count.spec == PartitionSpec()  # scalar counter: replicated

    fac = jax.eval_shape(optax.adafactor(1e-3, min_dim_size_to_factor=128).init, params)
    sh = shardings_like(fac, params, pshard, mesh)
    flat = {jax.tree_util.keystr(p): (leaf.shape, s.spec) for (p, leaf), s in zip(
        jax.tree_util.tree_leaves_with_path(fac), jax.tree.leaves(
            sh, is_leaf=lambda x: isinstance(x, NamedSharding)))}
    # Factored row statistics (256,) keep the row sharding; columns (512,) the column one.
    row = [v for k, v in flat.items() if "v_row" in k and "kernel" in k][0]
    col = [v for k, v in flat.items() if "v_col" in k and "kernel" in k][0]
    assert row == ((256,), PartitionSpec("fsdp"))
    assert col == ((512,), PartitionSpec("tensor"))
    # Every sharding is valid for its leaf (divisibility respected).
    for (shape, spec) in flat.values():
        NamedSharding(mesh, spec).shard_shape(shape)
