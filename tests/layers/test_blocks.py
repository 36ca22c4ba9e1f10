"""Norms, feed-forward blocks and the pre-/post-LN residual forms."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

from jaxmm.config import ConfigError
from jaxmm.layers import (
    EncoderLayer,
    LayerNorm,
    Mlp,
    MultiHeadAttention,
    RMSNorm,
    TransformerConfig,
    TransformerStack,
    causal_mask,
)


def _unbox(v):
    return nn.meta.unbox(v)


def test_layernorm_and_rmsnorm_match_numpy(rng):
    x = rng.normal(size=(3, 5, 16)).astype(np.float32) * 3 + 1
    ln = LayerNorm(epsilon=1e-5)
    p = _unbox(ln.init(jax.random.key(0), x))
    p = jax.tree.map(lambda a: a + rng.normal(size=a.shape).astype(np.float32), p)
    want = (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + 1e-5)
    want = want * np.asarray(p["params"]["scale"]) + np.asarray(p["params"]["bias"])
    np.testing.assert_allclose(np.asarray(ln.apply(p, x)), want, atol=1e-5)
    rms = RMSNorm(epsilon=1e-6)
    p = _unbox(rms.init(jax.random.key(0), x))
    want = x / np.sqrt((x**2).mean(-1, keepdims=True) + 1e-6)
    np.testing.assert_allclose(np.asarray(rms.apply(p, x)), want, atol=1e-5)


@pytest.mark.parametrize("activation,gated", [("gelu", False), ("relu", False),
                                              ("silu", True), ("gelu_tanh", True)])
def test_mlp_matches_formula(rng, activation, gated):
    import scipy.special

    x = rng.normal(size=(2, 3, 8)).astype(np.float32)
    mlp = Mlp(hidden_dim=16, activation=activation, gated=gated)
    p = _unbox(mlp.init(jax.random.key(0), x))["params"]
    acts = {
        "gelu": lambda h: 0.5 * h * (1 + scipy.special.erf(h / np.sqrt(2))),
        "gelu_tanh": lambda h: 0.5 * h * (1 + np.tanh(np.sqrt(2 / np.pi) * (h + 0.044715 * h**3))),
        "relu": lambda h: np.maximum(h, 0),
        "silu": lambda h: h / (1 + np.exp(-h)),
    }
    dense = lambda name, h: h @ np.asarray(p[name]["kernel"]) + np.asarray(p[name]["bias"])  # noqa: E731
    if gated:
        hidden = acts[activation](dense("wi_0", x)) * dense("wi_1", x)
    else:
        hidden = acts[activation](dense("wi", x))
    want = dense("wo", hidden)
    np.testing.assert_allclose(np.asarray(mlp.apply({"params": p}, x)), want, atol=1e-5)


@pytest.mark.parametrize("norm_position", ["pre", "post"])
def test_residual_forms(rng, norm_position):
    cfg = TransformerConfig(num_layers=1, d_model=16, num_heads=2, mlp_dim=32,
                            norm_position=norm_position)
    x = rng.normal(size=(2, 5, 16)).astype(np.float32)
    layer = EncoderLayer(cfg)
    p = _unbox(layer.init(jax.random.key(0), x))["params"]
    attn = MultiHeadAttention(num_heads=2, out_features=16)
    mlp = Mlp(hidden_dim=32)
    ln = LayerNorm()
    a = lambda h: attn.apply({"params": p["self_attention"]}, h)[0]  # noqa: E731
    f = lambda h: mlp.apply({"params": p["mlp"]}, h)  # noqa: E731
    n1 = lambda h: ln.apply({"params": p["attention_norm"]}, h)  # noqa: E731
    n2 = lambda h: ln.apply({"params": p["mlp_norm"]}, h)  # noqa: E731
    if norm_position == "post":  # LayerNorm(x + Sublayer(x))
        h = n1(x + a(x))
        want = n2(h + f(h))
    else:  # x + Sublayer(LayerNorm(x))
        h = x + a(n1(x))
        want = h + f(n2(h))
    got, _ = layer.apply({"params": p}, x)
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=1e-5)


@pytest.mark.slow
def test_every_parameter_has_logical_axes():
    cfg = TransformerConfig(num_layers=2, d_model=16, num_heads=4, num_kv_heads=2, mlp_dim=32,
                            cross_attention=True, gated_mlp=True, norm="rmsnorm",
                            rotary_theta=10000.0)
    x = jnp.ones((1, 3, 16))
    for scan in (False, True):
        v = TransformerStack(cfg.replace(scan_layers=scan), decoder=True).init(
            jax.random.key(0), x, encoder_out=jnp.ones((1, 4, 16)))
        leaves = jax.tree.leaves(v["params"], is_leaf=lambda a: isinstance(a, nn.Partitioned))
        assert leaves
        for leaf in leaves:
            assert isinstance(leaf, nn.LogicallyPartitioned), leaf
            assert len(leaf.names) == leaf.value.ndim
            assert all(isinstance(n, str) for n in leaf.names)
            if scan and leaf.value.ndim > 1 and leaf.names[0] == "layers":
                assert leaf.value.shape[0] == 2


def test_bfloat16_compute_float32_params(rng):
    cfg = TransformerConfig(num_layers=1, d_model=16, num_heads=2, mlp_dim=32, dtype="bfloat16")
    x = rng.normal(size=(2, 5, 16)).astype(np.float32)
    stack = TransformerStack(cfg)
    v = _unbox(stack.init(jax.random.key(0), x))
    assert all(a.dtype == jnp.float32 for a in jax.tree.leaves(v))
    out = stack.apply(v, x).last_hidden_state
    assert out.dtype == jnp.bfloat16
    ref = TransformerStack(cfg.replace(dtype="float32")).apply(v, x).last_hidden_state
    np.testing.assert_allclose(np.asarray(out, np.float32), np.asarray(ref), atol=0.1)


def test_hidden_states_and_attentions_are_returned(rng):
    cfg = TransformerConfig(num_layers=3, d_model=16, num_heads=2, mlp_dim=32)
    x = rng.normal(size=(2, 5, 16)).astype(np.float32)
    stack = TransformerStack(cfg)
    v = stack.init(jax.random.key(0), x)
    out = stack.apply(v, x, mask=causal_mask(5), output_attentions=True,
                      output_hidden_states=True)
    assert len(out.hidden_states) == 4 and len(out.attentions) == 3
    np.testing.assert_allclose(np.asarray(out.hidden_states[0]), x)
    np.testing.assert_allclose(np.asarray(out.hidden_states[-1]),
                               np.asarray(out.last_hidden_state))
    w = np.asarray(out.attentions[1])
    np.testing.assert_allclose(w.sum(-1), 1.0, atol=1e-5)
    assert np.all(np.triu(w[0, 0], 1) == 0)  # causal


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(num_heads=3, d_model=16), "not divisible by num_heads"),
        (dict(num_heads=4, num_kv_heads=3), "multiple of num_kv_heads"),
        (dict(norm="batchnorm"), "norm='batchnorm'"),
        (dict(remat_policy="some"), "remat_policy"),
    ],
)
def test_bad_layer_configs(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        TransformerConfig(**kwargs)


def test_unknown_config_key_names_nearest():
    with pytest.raises(ConfigError, match=r"Unknown config key 'num_layer'.*'num_layers'"):
        TransformerConfig.from_dict({"num_layer": 3})
    with pytest.raises(ConfigError, match=r"Unknown size 'tinny'.*'tiny'"):
        TransformerConfig.from_size("tinny")
    with pytest.raises(ConfigError, match="'d_model'"):
        TransformerConfig().replace(d_modle=8)


def test_wrong_input_width_is_reported(rng):
    cfg = TransformerConfig(num_layers=1, d_model=16, num_heads=2, mlp_dim=32)
    with pytest.raises(ValueError, match=r"expects inputs \(batch, length, 16\)"):
        TransformerStack(cfg).init(jax.random.key(0), jnp.ones((1, 3, 8)))


@pytest.mark.parametrize("std", [0.02, 0.2])
def test_initializer_range_sets_kernel_std(std):
    cfg = TransformerConfig(d_model=64, num_heads=4, mlp_dim=256, initializer_range=std)
    params = nn.meta.unbox(EncoderLayer(cfg).init(jax.random.key(0), jnp.zeros((1, 2, 64))))
    layer = params["params"]
    for kernel in (layer["self_attention"]["query"]["kernel"], layer["mlp"]["wi"]["kernel"]):
        assert float(np.std(np.asarray(kernel))) == pytest.approx(std, rel=0.1)
