"""Fusion encoder: every kind on mixed, padded modalities; padding invariance;
which modalities interact under each kind; combiners against NumPy formulas."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxmm.config import ConfigError
from jaxmm.layers import TransformerStack
from jaxmm.models import build
from jaxmm.models.fusion import FusionConfig, FusionEncoder, ModalityCombiner
from tests.mm_params import random_params

MODS = ("text", "image", "audio")
WIDTHS = {"text": 16, "image": 24, "audio": 8}
LENGTHS = {"text": 5, "image": 4, "audio": 3}

KINDS = {
    # early fusion with a prefix-LM mask (audio, the last modality, is causal)
    "early": dict(kind="early", attention_pattern="prefix_lm", scan_layers=True,
                  remat_policy="full"),
    "late": dict(kind="late", combine="attention", pool="mean", num_layers=1),
    "hybrid": dict(kind="hybrid", fusion_layer=1, combine="gate"),
    # MBT: bottleneck tokens in both layers (information needs two hops)
    "bottleneck": dict(kind="hybrid", fusion_layer=0, num_bottleneck_tokens=2,
                       combine="concat", remat_policy="dots"),
    "cross_one_way": dict(kind="cross_attention", cross_query="text", num_layers=1),
    "co_attention": dict(kind="cross_attention", bidirectional=True, combine="sum",
                         num_layers=1),
}


def make_config(**kw):
    base = dict(modalities=MODS, num_layers=2, d_model=32, num_heads=4, mlp_dim=64,
                max_positions=8)
    base.update(kw)  # (1 layer where it shows the behaviour: compiles are the cost)
    return FusionConfig(**base)


def make_inputs(rng, batch=2):
    tokens = {m: rng.normal(size=(batch, LENGTHS[m], WIDTHS[m])).astype(np.float32)
              for m in MODS}
    masks = {
        "text": np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], np.int32)[:batch],
        "image": np.ones((batch, 4), np.int32),
        # second example has no audio at all (absent modality)
        "audio": np.array([[1, 1, 0], [0, 0, 0]], np.int32)[:batch],
    }
    return tokens, masks


_CACHE = {}


def run(cfg, params, tokens, masks):
    """Jitted forward (one compiled function per config)."""
    if ("apply", cfg) not in _CACHE:
        _CACHE["apply", cfg] = jax.jit(
            lambda p, t, m: FusionEncoder(cfg).apply({"params": p}, t, m))
    return _CACHE["apply", cfg](params, tokens, masks)


def init(cfg, tokens, masks):
    """Params (shared by the tests that use the same config)."""
    if ("params", cfg) not in _CACHE:
        _CACHE["params", cfg] = random_params(FusionEncoder(cfg), tokens, masks)
    return _CACHE["params", cfg]


@pytest.fixture(scope="module")
def inputs():
    return make_inputs(np.random.default_rng(0))


@pytest.mark.parametrize("name", list(KINDS))
def test_fusion_kinds_shapes_and_padding_invariance(name, inputs):
    cfg = make_config(**KINDS[name])
    tokens, masks = inputs
    params = init(cfg, tokens, masks)
    apply = lambda p, t, m: run(cfg, p, t, m)  # noqa: E731
    out = apply(params, tokens, masks)

    n_cls = 1 if cfg.pool == "cls" else 0
    total = sum(LENGTHS[m] + n_cls for m in MODS)
    m_pooled = len(cfg.streams)
    width = cfg.d_model * (m_pooled if cfg.combine == "concat" else 1)
    assert out.last_hidden_state.shape == (2, total, 32)
    assert out.attention_mask.shape == (2, total)
    assert out.pooler_output.shape == (2, width)
    assert out.modality_pooled.shape == (2, m_pooled, 32)
    assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(out))
    # Padded output rows are zero; the absent audio of example 1 is reported.
    valid = np.asarray(out.attention_mask).astype(bool)
    assert np.all(np.asarray(out.last_hidden_state)[~valid] == 0)
    if "audio" in cfg.streams:
        assert np.asarray(out.modality_present)[1, cfg.streams.index("audio")] == 0

    # 1) Changing the values at padded positions changes nothing at all.
    noisy = {m: np.where(masks[m][..., None] == 1, tokens[m], 1e3 * (1 + tokens[m]))
             for m in MODS}
    out2 = apply(params, noisy, masks)
    for a, b in zip(jax.tree.leaves(out), jax.tree.leaves(out2)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5)

    # 2) Example 0 with its padding cut off gives the same valid outputs.
    cut = {"text": 3, "image": 4, "audio": 2}
    short_t = {m: tokens[m][:1, :cut[m]] for m in MODS}
    short_m = {m: masks[m][:1, :cut[m]] for m in MODS}
    out3 = apply(params, short_t, short_m)
    np.testing.assert_allclose(np.asarray(out3.pooler_output),
                               np.asarray(out.pooler_output)[:1], atol=2e-5)
    for m in MODS:
        n = cut[m] + n_cls
        np.testing.assert_allclose(np.asarray(out3.modality_hidden_states[m]),
                                   np.asarray(out.modality_hidden_states[m])[:1, :n], atol=2e-5)


def _pooled_change(cfg, inputs, changed, watched):
    """Whether perturbing modality `changed` moves `watched`'s pooled feature."""
    tokens, masks = inputs
    params = init(cfg, tokens, masks)
    out = run(cfg, params, tokens, masks)
    t2 = dict(tokens)
    t2[changed] = tokens[changed] + 1.0
    out2 = run(cfg, params, t2, masks)
    i = cfg.streams.index(watched)
    return float(np.max(np.abs(np.asarray(out.modality_pooled[:, i])
                               - np.asarray(out2.modality_pooled[:, i]))))


@pytest.mark.parametrize("name,interacts", [
    ("early", True), ("late", False), ("hybrid", True), ("bottleneck", True),
    ("cross_one_way", True), ("co_attention", True),
])
def test_which_modalities_interact(name, interacts, inputs):
    """Late fusion keeps modalities apart until pooling; the others mix them."""
    change = _pooled_change(make_config(**KINDS[name]), inputs, "image", "text")
    assert (change > 1e-4) == interacts, change


def test_prefix_lm_last_modality_is_causal_and_hidden_from_prefix(inputs):
    cfg = make_config(**KINDS["early"])
    tokens, masks = inputs
    params = init(cfg, tokens, masks)
    out = run(cfg, params, tokens, masks)
    t2 = dict(tokens)
    t2["audio"] = tokens["audio"].copy()
    t2["audio"][:, 1] += 1.0  # second audio token (index 2 with its CLS)
    out2 = run(cfg, params, t2, masks)
    for m in ("text", "image"):
        np.testing.assert_allclose(np.asarray(out.modality_hidden_states[m]),
                                   np.asarray(out2.modality_hidden_states[m]), atol=1e-6)
    a, b = (np.asarray(o.modality_hidden_states["audio"])[0] for o in (out, out2))
    np.testing.assert_allclose(a[:2], b[:2], atol=1e-6)  # CLS and first token: unchanged
    assert np.abs(a[2] - b[2]).max() > 1e-4


def test_early_fusion_equals_manual_joint_stack(inputs):
    """Independent reconstruction: project, add type/position embeddings and CLS,
    concatenate, run a TransformerStack with the same weights under a prefix-LM
    + padding mask, pool the CLS tokens and combine them with the attention
    pooling formula."""
    cfg = make_config(**KINDS["early"])
    tokens, masks = inputs
    params = init(cfg, tokens, masks)
    out = run(cfg, params, tokens, masks)
    seqs, valids = [], []
    for i, m in enumerate(MODS):
        proj = params[f"{m}_projection"]
        h = tokens[m] @ np.asarray(proj["kernel"]) + np.asarray(proj["bias"])
        h = h + np.asarray(params[f"{m}_position_embedding"])[: LENGTHS[m]]
        cls = np.broadcast_to(np.asarray(params[f"{m}_cls"]), (2, 1, 32))
        h = np.concatenate([cls, h], 1) + np.asarray(params["modality_embedding"])[i]
        v = np.concatenate([np.ones((2, 1), np.int32), masks[m]], 1)
        seqs.append(h * v[..., None])
        valids.append(v)
    x, v = np.concatenate(seqs, 1), np.concatenate(valids, 1)
    total, prefix = x.shape[1], x.shape[1] - (LENGTHS["audio"] + 1)
    allowed = np.tril(np.ones((total, total), bool))
    allowed[:, :prefix] = True
    mask = allowed[None, None] & v[:, None, None, :].astype(bool) & v[:, None, :, None].astype(bool)
    stack = TransformerStack(cfg.transformer_config(2))
    ref = stack.apply({"params": params["joint_encoder"]}, jnp.asarray(x, jnp.float32),
                      mask=jnp.asarray(mask)).last_hidden_state
    ref = np.asarray(ref) * v[..., None]
    np.testing.assert_allclose(np.asarray(out.last_hidden_state), ref, atol=1e-5)
    starts = np.cumsum([0] + [LENGTHS[m] + 1 for m in MODS])[:-1]
    present = np.stack([masks[m].any(1) for m in MODS], 1)
    pooled = ref[:, starts]  # (B, M, D): the CLS tokens
    np.testing.assert_allclose(np.asarray(out.modality_pooled), pooled, atol=1e-5)
    np.testing.assert_array_equal(np.asarray(out.modality_present), present)


@pytest.mark.parametrize("method", ["concat", "sum", "mean", "gate", "attention"])
def test_combiner_against_numpy(method, rng):
    x = rng.normal(size=(3, 4, 8)).astype(np.float32)
    present = np.array([[1, 1, 1, 1], [1, 0, 1, 0], [0, 0, 0, 1]], bool)
    comb = ModalityCombiner(method)
    variables = {"params": random_params(comb, x, present, std=0.5)}
    y, state = jax.jit(lambda v: comb.apply(v, x, present, mutable=["intermediates"]))(variables)
    y = np.asarray(y)
    xm = x * present[..., None]
    if method == "concat":
        ref = xm.reshape(3, 32)
    elif method == "sum":
        ref = xm.sum(1)
    elif method == "mean":
        ref = xm.sum(1) / present.sum(1, keepdims=True)
    else:
        p = variables["params"]
        if method == "gate":
            logits = (xm.reshape(3, 32) @ np.asarray(p["gate"]["kernel"])
                      + np.asarray(p["gate"]["bias"])).reshape(3, 4, 8)
            logits = np.where(present[..., None], logits, -np.inf)
            w = np.exp(logits - logits.max(1, keepdims=True))
            w = w / w.sum(1, keepdims=True)
        else:
            keys = np.tanh(x @ np.asarray(p["key"]["kernel"]) + np.asarray(p["key"]["bias"]))
            s = keys @ np.asarray(p["query"]) / np.sqrt(8)
            s = np.where(present, s, -np.inf)
            w = np.exp(s - s.max(1, keepdims=True))
            w = (w / w.sum(1, keepdims=True))[..., None]
        ref = (w * xm).sum(1)
        weights = np.asarray(state["intermediates"]["combine_weights"][0])
        np.testing.assert_allclose(weights.sum(1), 1.0, atol=1e-6)
        assert np.all(np.broadcast_to(weights, (3, 4, weights.shape[-1]))[~present] == 0)
    np.testing.assert_allclose(y, ref, atol=1e-5)
    # Gradients exist and are finite even with absent modalities.
    grads = jax.jit(jax.grad(lambda v: comb.apply(v, x, present).sum()))(variables)
    assert all(np.isfinite(np.asarray(g)).all() for g in jax.tree.leaves(grads))


def test_scan_and_loop_give_same_numbers(inputs):
    from jaxmm.layers import stack_layer_params

    tokens, masks = inputs
    loop_cfg = make_config(**KINDS["hybrid"])
    params = init(loop_cfg, tokens, masks)
    scan_params = dict(params)
    for key in ["joint_encoder"] + [f"{m}_encoder" for m in MODS]:
        scan_params[key] = stack_layer_params(params[key], 1)
    a = run(loop_cfg, params, tokens, masks)
    b = run(loop_cfg.replace(scan_layers=True), scan_params, tokens, masks)
    np.testing.assert_allclose(np.asarray(a.pooler_output), np.asarray(b.pooler_output),
                               atol=1e-5)


def test_bad_configs_and_inputs(inputs):
    tokens, masks = inputs
    with pytest.raises(ConfigError, match="fusion_layer"):
        FusionConfig(kind="hybrid")
    with pytest.raises(ConfigError, match="kind='early'"):
        FusionConfig(kind="early", fusion_layer=1)
    with pytest.raises(ConfigError, match="cross_query"):
        FusionConfig(kind="cross_attention")
    with pytest.raises(ConfigError, match="not one of"):
        FusionConfig(kind="mid")
    with pytest.raises(ConfigError, match="Did you mean 'fusion_layer'"):
        FusionConfig.from_dict({"fusion_layers": 1})
    cfg = make_config()
    model = FusionEncoder(cfg)
    key = jax.random.key(0)
    trace = lambda *a: jax.eval_shape(model.init, key, *a)  # noqa: E731 - errors come at trace
    with pytest.raises(ValueError, match=r"'audio' is configured but missing.*\['image', 'text'\]"):
        trace({m: tokens[m] for m in ("text", "image")})
    with pytest.raises(ValueError, match="attention_mask\\['text'\\] has shape"):
        trace(tokens, {**masks, "text": masks["text"][:, :3]})
    with pytest.raises(ValueError, match="max_positions"):
        trace({**tokens, "text": np.zeros((2, 9, 16), np.float32)})
    with pytest.raises(ValueError, match=r"\(batch, length, width\)"):
        trace({**tokens, "image": np.zeros((2, 8, 8, 3), np.float32)})
    # Registry builds it by name.
    built = build("fusion", "tiny", kind="late", modalities=("text", "image"))
    assert isinstance(built, FusionEncoder) and built.config.resolved_fusion_layer == 2
