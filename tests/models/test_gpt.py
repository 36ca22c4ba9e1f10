"""GPT (GPT-2 / Llama-style) model: decoding protocol, heads, errors, and learning."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxmm.config import ConfigError
from jaxmm.losses import cross_entropy
from jaxmm.models import build, name_of
from jaxmm.models.gpt import GPTConfig, GPTLMHeadModel

SMALL = dict(vocab_size=64, max_position_embeddings=16, num_layers=2, d_model=32, num_heads=4,
             mlp_dim=64)


def _left_padded(rng, batch=2, length=10, pad=3, vocab=64):
    ids = rng.integers(1, vocab, (batch, length)).astype(np.int32)
    mask = np.ones((batch, length), np.int32)
    mask[1, :pad] = 0
    ids[1, :pad] = 0
    positions = np.maximum(np.cumsum(mask, 1) - 1, 0).astype(np.int32)
    return ids, mask, positions


def _empty_cache(model, batch, length, **kwargs):
    """The decoding protocol: cache shapes via eval_shape, filled with zeros."""
    shapes = jax.eval_shape(
        lambda: model.init(jax.random.key(0), jnp.zeros((batch, length), jnp.int32),
                           decode=True, **kwargs))
    return jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes["cache"])


@pytest.mark.parametrize("size,overrides", [
    ("tiny", {}),
    ("llama-tiny", dict(num_kv_heads=2, scan_layers=True, rope_theta=500.0)),
])
def test_kv_cache_decoding_equals_full_forward(rng, size, overrides):
    model = build("gpt", size, **{**SMALL, **overrides})
    ids, mask, positions = _left_padded(rng)
    params = model.init(jax.random.key(1), ids)["params"]
    full = jax.jit(model.apply)({"params": params}, ids, mask, positions).logits

    # Cache of length 12 > 10 tokens: slots not yet written count as "to be written".
    cache_len = 12
    cache = _empty_cache(model, 2, cache_len)
    cache_mask = np.concatenate([mask, np.ones((2, cache_len - 10), np.int32)], 1)
    step = jax.jit(lambda c, x, p: model.apply({"params": params, "cache": c}, x,
                                               attention_mask=cache_mask, position_ids=p,
                                               decode=True, mutable=["cache"]))
    outs = []
    for start, stop in [(0, 6), (6, 7), (7, 8), (8, 9), (9, 10)]:
        out, variables = step(cache, ids[:, start:stop], positions[:, start:stop])
        cache = variables["cache"]
        outs.append(out.logits)
    incremental = np.concatenate(outs, 1)
    valid = mask.astype(bool)
    np.testing.assert_allclose(incremental[valid], np.asarray(full)[valid], atol=1e-5)
    assert int(cache["model"]["positions"]["index"]) == 10


@pytest.mark.slow
def test_cross_attention_decoding_caches_encoder_keys(rng):
    model = build("gpt", "tiny", **SMALL, add_cross_attention=True)
    ids, mask, positions = _left_padded(rng, length=6, pad=2)
    enc = rng.normal(size=(2, 5, 48)).astype(np.float32)  # any encoder width is projected
    enc_mask = np.array([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]], np.int32)
    params = model.init(jax.random.key(2), ids, encoder_hidden_states=enc)["params"]
    full = jax.jit(lambda: model.apply(
        {"params": params}, ids, mask, positions, encoder_hidden_states=enc,
        encoder_attention_mask=enc_mask, output_attentions=True))()
    # Padded encoder positions get no cross-attention weight.
    assert float(jnp.abs(full.cross_attentions[0][1, :, :, 3:]).max()) == 0.0

    cache = _empty_cache(model, 2, 6, encoder_hidden_states=enc)

    @jax.jit
    def step(c, x, p, enc_states):  # enc_states is None after the first call
        return model.apply({"params": params, "cache": c}, x, attention_mask=mask,
                           position_ids=p, encoder_hidden_states=enc_states,
                           encoder_attention_mask=enc_mask, decode=True, mutable=["cache"])

    outs = []
    for i in range(6):
        out, variables = step(cache, ids[:, i:i + 1], positions[:, i:i + 1],
                              enc if i == 0 else None)
        cache = variables["cache"]
        outs.append(out.logits)
    valid = mask.astype(bool)
    np.testing.assert_allclose(np.concatenate(outs, 1)[valid], np.asarray(full.logits)[valid],
                               atol=1e-5)


def test_tied_head_and_inputs_embeds(rng):
    model = build("gpt", "tiny", **SMALL)
    ids = rng.integers(0, 64, (2, 5)).astype(np.int32)
    params = model.init(jax.random.key(3), ids)["params"]
    out = jax.jit(model.apply)({"params": params}, ids)
    table = np.asarray(params["model"]["token_embedding"]["embedding"].unbox())
    np.testing.assert_allclose(np.asarray(out.logits),
                               np.asarray(out.last_hidden_state) @ table.T, atol=1e-5)
    via_embeds = jax.jit(lambda e: model.apply({"params": params}, inputs_embeds=e))(table[ids])
    np.testing.assert_allclose(np.asarray(via_embeds.logits), np.asarray(out.logits), atol=1e-6)
    assert "lm_head" not in params
    untied = jax.eval_shape(
        lambda: build("gpt", "llama-tiny", **SMALL).init(jax.random.key(0), ids))["params"]
    assert untied["lm_head"]["kernel"].value.shape == (32, 64)


def test_sizes_and_registry():
    base = GPTConfig.from_size("base")
    assert (base.num_layers, base.d_model, base.num_heads, base.mlp_dim) == (12, 768, 12, 3072)
    n_params = sum(
        np.prod(x.shape) for x in jax.tree.leaves(jax.eval_shape(
            lambda: build("gpt", "base").init(jax.random.key(0), jnp.zeros((1, 8), jnp.int32))
        )["params"]))
    assert n_params == 124_439_808  # GPT-2 small: 124M with the tied head
    llama = GPTConfig.from_size("llama-tiny")
    assert llama.position_embedding == "rope" and llama.norm == "rmsnorm" and llama.gated_mlp
    assert llama.max_position_embeddings is None and not llama.use_bias
    assert name_of(build("gpt", "tiny")) == "gpt" and isinstance(build("gpt", "tiny"),
                                                                 GPTLMHeadModel)
    assert name_of(build("gpt_model", "tiny")) == "gpt_model"


def test_bad_inputs_raise_clear_errors(rng):
    model = build("gpt", "tiny", **SMALL)
    ids = rng.integers(0, 64, (2, 6)).astype(np.int32)
    params = model.init(jax.random.key(0), ids)["params"]
    apply = lambda *a, **k: model.apply({"params": params}, *a, **k)  # noqa: E731
    with pytest.raises(ValueError, match="exceeds the learned position table"):
        apply(np.zeros((1, 17), np.int32))
    with pytest.raises(ValueError, match="exceeds the learned position table"):
        model.init(jax.random.key(0), np.zeros((1, 20), np.int32), decode=True)
    with pytest.raises(ValueError, match=r"attention_mask must have shape \(batch, 6\)"):
        apply(ids, np.ones((2, 5), np.int32))
    with pytest.raises(ValueError, match="position_ids must have shape"):
        apply(ids, None, np.zeros((2, 4), np.int32))
    cache = _empty_cache(model, 2, 8)
    with pytest.raises(ValueError, match=r"In decode mode attention_mask must have shape"):
        model.apply({"params": params, "cache": cache}, ids[:, :1],
                    attention_mask=np.ones((2, 6), np.int32), decode=True, mutable=["cache"])
    with pytest.raises(ValueError, match="no cross-attention"):
        apply(ids, encoder_hidden_states=np.zeros((2, 3, 32), np.float32))
    with pytest.raises(ValueError, match="exactly one of input_ids"):
        apply()
    with pytest.raises(ConfigError, match="Did you mean 'num_layers'"):
        build("gpt", "tiny", num_layer=3)
    with pytest.raises(ConfigError, match="position_embedding='alibi'"):
        GPTConfig(position_embedding="alibi")
    with pytest.raises(ConfigError, match="multiple of num_kv_heads"):
        GPTConfig.from_size("llama-tiny", num_kv_heads=3)


@pytest.mark.slow
def test_tiny_gpt_learns_wordnet_glosses():
    """A tiny byte-level GPT trained on real text beats the unigram entropy on held-out text."""
    from jaxmm.data.corpora import wordnet_glosses

    text = "\n".join(wordnet_glosses(parts=("verb",), limit=6000)).encode()
    data = np.frombuffer(text, np.uint8).astype(np.int32)
    split = int(0.9 * len(data))
    train, heldout = data[:split], data[split:]
    # Reference: cross-entropy of the add-one unigram byte distribution on held-out text.
    probs = (np.bincount(train, minlength=256) + 1) / (len(train) + 256)
    unigram = float(-np.log(probs[heldout]).mean())

    seq, batch, steps = 64, 16, 150
    model = build("gpt", "tiny", vocab_size=256, max_position_embeddings=seq,
                  tie_word_embeddings=False)
    rng = np.random.default_rng(0)

    def sample(src):
        starts = rng.integers(0, len(src) - seq - 1, batch)
        chunk = np.stack([src[s:s + seq + 1] for s in starts])
        return chunk[:, :-1], chunk[:, 1:]

    params = model.init(jax.random.key(0), np.zeros((1, seq), np.int32))["params"]
    schedule = optax.warmup_cosine_decay_schedule(0.0, 1e-2, 20, steps)
    opt = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(schedule, weight_decay=0.0))
    opt_state = opt.init(params)

    def loss_fn(p, x, y):
        return cross_entropy(model.apply({"params": p}, x).logits, y)

    @jax.jit
    def train_step(p, s, x, y):
        loss, grads = jax.value_and_grad(loss_fn)(p, x, y)
        updates, s = opt.update(grads, s, p)
        return optax.apply_updates(p, updates), s, loss

    eval_loss = jax.jit(loss_fn)
    x_eval, y_eval = sample(heldout)
    initial = float(eval_loss(params, x_eval, y_eval))
    for _ in range(steps):
        params, opt_state, _ = train_step(params, opt_state, *sample(train))
    final = float(eval_loss(params, x_eval, y_eval))
    assert initial == pytest.approx(np.log(256), abs=0.1)
    assert final < unigram - 0.25, (initial, final, unigram)
