"""KV-cache decoding, scan vs loop stacks, and sharded execution."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxmm import sharding
from jaxmm.layers import (
    MultiHeadAttention,
    TransformerConfig,
    TransformerStack,
    causal_mask,
    combine_masks,
    key_padding_mask,
    stack_layer_params,
    unstack_layer_params,
)

TINY = TransformerConfig(num_layers=2, d_model=32, num_heads=4, num_kv_heads=2, mlp_dim=64)


@pytest.mark.slow
@pytest.mark.parametrize("rotary", [None, 10000.0])
def test_attention_kv_cache_matches_full_causal(rng, rotary):
    b, t, e = 2, 7, 32
    x = rng.normal(size=(b, t, e)).astype(np.float32)
    mha = MultiHeadAttention(num_heads=4, num_kv_heads=2, rotary_theta=rotary)
    params = mha.init(jax.random.key(0), x)["params"]
    full, _ = mha.apply({"params": params}, x, mask=causal_mask(t))
    cache = mha.init(jax.random.key(0), x, decode=True)["cache"]
    # Prefill 3 tokens, then one token at a time.
    outs = []
    for start, stop in [(0, 3)] + [(i, i + 1) for i in range(3, t)]:
        (y, _), mut = mha.apply({"params": params, "cache": cache}, x[:, start:stop],
                                decode=True, mutable=["cache"])
        cache = mut["cache"]
        outs.append(y)
    np.testing.assert_allclose(np.concatenate(outs, 1), np.asarray(full), atol=1e-5)
    assert int(cache["cache_index"]) == t


@pytest.mark.slow
@pytest.mark.parametrize("scan", [False, True])
def test_decoder_stack_incremental_equals_full(rng, scan):
    cfg = TINY.replace(cross_attention=True, scan_layers=scan, rotary_theta=10000.0)
    model = TransformerStack(cfg, decoder=True)
    b, t = 2, 6
    x = rng.normal(size=(b, t, 32)).astype(np.float32)
    enc = rng.normal(size=(b, 5, 32)).astype(np.float32)
    valid = np.ones((b, t), np.int32)
    valid[1, :2] = 0  # left padding in the second example
    params = model.init(jax.random.key(1), x, encoder_out=enc)["params"]
    # Positions count real tokens only, as a left-padded batch would.
    positions = np.maximum(np.cumsum(valid, 1) - 1, 0)
    mask = combine_masks(causal_mask(t), key_padding_mask(valid))
    full = model.apply({"params": params}, x, encoder_out=enc, mask=mask,
                       positions=positions).last_hidden_state
    # Incremental: same positions, passed step by step.
    variables = model.init(jax.random.key(0), x, encoder_out=enc, decode=True)
    cache = variables["cache"]
    outs = []
    for i in range(t):
        kwargs = dict(encoder_out=enc) if i == 0 else {}
        out, mut = model.apply({"params": params, "cache": cache}, x[:, i:i + 1],
                               mask=key_padding_mask(valid), positions=positions[:, i:i + 1],
                               decode=True, mutable=["cache"], **kwargs)
        cache = mut["cache"]
        outs.append(out.last_hidden_state)
    inc = np.concatenate(outs, 1)
    # Rows that are padding are don't-care; compare the real tokens.
    np.testing.assert_allclose(inc[0], np.asarray(full)[0], atol=1e-5)
    np.testing.assert_allclose(inc[1, 2:], np.asarray(full)[1, 2:], atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("remat", ["none", "full", "dots"])
def test_scan_and_loop_give_same_outputs_and_grads(rng, remat):
    cfg = TINY.replace(cross_attention=True, remat_policy=remat)
    x = rng.normal(size=(2, 5, 32)).astype(np.float32)
    enc = rng.normal(size=(2, 4, 32)).astype(np.float32)
    loop = TransformerStack(cfg, decoder=True)
    scan = TransformerStack(cfg.replace(scan_layers=True), decoder=True)
    p_loop = nn.meta.unbox(loop.init(jax.random.key(0), x, encoder_out=enc))["params"]
    p_scan = stack_layer_params(p_loop, cfg.num_layers)

    def loss(model):
        def f(p, x):
            out = model.apply({"params": p}, x, encoder_out=enc, mask=causal_mask(5))
            return jnp.sum(jnp.sin(out.last_hidden_state))
        return f

    l1, g1 = jax.value_and_grad(loss(loop), argnums=(0, 1))(p_loop, x)
    l2, g2 = jax.value_and_grad(loss(scan), argnums=(0, 1))(p_scan, x)
    np.testing.assert_allclose(l1, l2, rtol=1e-6)
    np.testing.assert_allclose(g1[1], g2[1], atol=1e-5)
    g2_loop = unstack_layer_params(g2[0], cfg.num_layers)
    for a, b in zip(jax.tree.leaves(g1[0]), jax.tree.leaves(g2_loop)):
        np.testing.assert_allclose(a, b, atol=1e-5)
    # Layouts round-trip exactly.
    back = unstack_layer_params(p_scan, cfg.num_layers)
    for a, b in zip(jax.tree.leaves(p_loop), jax.tree.leaves(back)):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("decoder", [False, True])
def test_sharded_forward_matches_single_device(rng, decoder):
    assert jax.device_count() == 8
    cfg = TINY.replace(num_kv_heads=4, cross_attention=decoder)
    model = TransformerStack(cfg, decoder=decoder)
    x = rng.normal(size=(8, 6, 32)).astype(np.float32)
    enc = rng.normal(size=(8, 5, 32)).astype(np.float32) if decoder else None
    mask = causal_mask(6) if decoder else None
    kwargs = dict(encoder_out=enc) if decoder else {}
    single = nn.meta.unbox(model.init(jax.random.key(0), x, **kwargs))
    want = model.apply(single, x, mask=mask, **kwargs).last_hidden_state

    mesh = sharding.make_mesh(data=2, tensor=4)
    variables, shardings = sharding.init_sharded(model, jax.random.key(0), x, mesh=mesh,
                                                 **kwargs)
    # Same values, and really sharded as the rules say.
    for a, b in zip(jax.tree.leaves(single), jax.tree.leaves(variables)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-7)
    attn = variables["params"]["layers_0"]["layer"]["self_attention"]
    assert attn["query"]["kernel"].sharding.spec == jax.P("fsdp", "tensor", None)
    assert attn["out"]["kernel"].sharding.spec == jax.P("tensor", None, "fsdp")
    q = attn["query"]["kernel"]
    assert q.addressable_shards[0].data.shape == (32, 1, 8)  # 4 heads over tensor=4
    mlp = variables["params"]["layers_0"]["layer"]["mlp"]
    assert mlp["wi"]["kernel"].sharding.spec == jax.P("fsdp", "tensor")

    data = sharding.batch_sharding(mesh, 3)
    fn = jax.jit(lambda v, x, e: model.apply(v, x, mask=mask,
                                             **({"encoder_out": e} if decoder else {})),
                 in_shardings=(shardings, data, data if decoder else None))
    with jax.set_mesh(mesh), nn.logical_axis_rules(sharding.DEFAULT_RULES):
        got = fn(variables, jax.device_put(x, data), enc).last_hidden_state
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=2e-5)
    assert got.sharding.spec[0] in ("data", ("data", "fsdp"))


def test_mesh_errors_and_resolution():
    from jaxmm.config import ConfigError

    assert sharding.mesh_shape(data=-1, fsdp=2, tensor=2, num_devices=8) == (2, 2, 2)
    assert sharding.make_mesh({"fsdp": -1, "data": 1}).shape == {"data": 1, "fsdp": 8,
                                                                 "tensor": 1}
    with pytest.raises(ConfigError, match="does not divide 8"):
        sharding.mesh_shape(data=-1, tensor=3, num_devices=8)
    with pytest.raises(ConfigError, match="there are 8 devices"):
        sharding.mesh_shape(data=2, fsdp=1, tensor=2, num_devices=8)
    with pytest.raises(ConfigError, match="Unknown mesh axis 'model'"):
        sharding.make_mesh({"model": 2})


def test_non_divisible_dimension_falls_back_to_replication():
    mesh = sharding.make_mesh(data=2, tensor=4)
    abstract = {"w": nn.LogicallyPartitioned(jnp.zeros((6, 10)), ("embed", "vocab"))}
    s = sharding.logical_shardings(abstract, mesh)
    assert s["w"].spec == jax.P("fsdp", None)  # 10 % 4 != 0: vocab not split


def test_remat_module_reads_static_positions_from_the_signature(monkeypatch):
    """Static flags are named, so their positions follow the __call__ signature."""
    from jaxmm.layers.blocks import DecoderLayer, EncoderLayer
    from jaxmm.layers.stack import remat_module

    assert remat_module(EncoderLayer, "none", ("deterministic",)) is EncoderLayer

    class Probe(nn.Module):
        @nn.compact
        def __call__(self, x, scale, flag):
            return x * scale if flag else x

    seen = {}
    original = nn.remat

    def spy(cls, **kw):
        seen.update(kw)
        return original(cls, **kw)

    with monkeypatch.context() as m:
        m.setattr(nn, "remat", spy)
        remat_module(Probe, "full", ("flag",))
        assert seen["static_argnums"] == (3,)  # self=0, x=1, scale=2, flag=3
        remat_module(DecoderLayer, "dots", ("decode", "deterministic", "return_weights"))
        assert seen["static_argnums"] == (8, 9, 10)
    wrapped = remat_module(Probe, "full", ("flag",))
    x = jnp.arange(3.0)
    out = wrapped().apply({}, x, 2.0, True)
    np.testing.assert_allclose(np.asarray(out), [0.0, 2.0, 4.0])
    with pytest.raises(TypeError, match="no argument"):
        remat_module(Probe, "full", ("deterministic",))
    with pytest.raises(ValueError, match="remat policy 'sometimes'"):
        remat_module(Probe, "sometimes", ("flag",))
