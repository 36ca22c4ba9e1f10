"""Encoder-decoder models (T5 v1.0/v1.1, original Transformer): protocol, formulas, learning."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxmm.config import ConfigError
from jaxmm.losses import cross_entropy
from jaxmm.models import build, name_of
from jaxmm.models.encoder_decoder import EncoderDecoderConfig
from jaxmm.models.outputs import shift_tokens_right
from jaxmm.models.t5 import T5Config, T5EncoderModel

SMALL = dict(vocab_size=40, d_model=32, num_heads=4, mlp_dim=64, num_layers=2,
             num_decoder_layers=1, relative_attention_num_buckets=8,
             relative_attention_max_distance=16, dropout_rate=0.0)


def _inputs(rng):
    ids = rng.integers(3, 40, (2, 7)).astype(np.int32)
    mask = np.ones_like(ids)
    mask[1, 5:] = 0
    dec = rng.integers(3, 40, (2, 6)).astype(np.int32)
    return ids, mask, dec


@pytest.mark.parametrize("name,size,extra", [
    ("t5", "tiny", {}),
    ("t5", "tiny-v1_1", {}),
    ("transformer", "transformer-tiny", {}),
])
@pytest.mark.slow
def test_incremental_decoding_equals_teacher_forcing(rng, name, size, extra):
    model = build(name, size, **SMALL, **extra)
    ids, mask, dec = _inputs(rng)
    params = model.init(jax.random.key(0), ids, mask, dec)["params"]
    full = jax.jit(model.apply)({"params": params}, ids, mask, dec).logits

    enc = jax.jit(lambda x, m: model.apply({"params": params}, x, m, method="encode"))(ids, mask)
    enc_h = enc.last_hidden_state
    cache_len = 8  # longer than the 6 decoder tokens
    shapes = jax.eval_shape(lambda: model.init(
        jax.random.key(0), jnp.zeros((2, cache_len), jnp.int32), enc_h, decode=True,
        method="decode"))
    cache = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes["cache"])
    dec_mask = np.ones((2, cache_len), np.int32)

    @jax.jit
    def step(c, x, enc_states):  # enc_states only on the first call
        return model.apply({"params": params, "cache": c}, x, enc_states, mask,
                           decoder_attention_mask=dec_mask, decode=True, method="decode",
                           mutable=["cache"])

    outs = []
    for start, stop in [(0, 2), (2, 3), (3, 4), (4, 5), (5, 6)]:
        out, variables = step(cache, dec[:, start:stop], enc_h if start == 0 else None)
        cache = variables["cache"]
        outs.append(out.logits)
    np.testing.assert_allclose(np.concatenate(outs, 1), np.asarray(full), atol=1e-5)


def test_labels_are_shifted_right_like_hugging_face(rng):
    model = build("t5", "tiny", **SMALL)
    ids, mask, _ = _inputs(rng)
    labels = rng.integers(3, 40, (2, 5)).astype(np.int32)
    labels[1, 3:] = -100
    expected = np.concatenate([np.zeros((2, 1), np.int32), labels[:, :-1]], 1)
    expected[expected == -100] = 0  # pad
    shifted = shift_tokens_right(labels, decoder_start_token_id=0, pad_token_id=0)
    np.testing.assert_array_equal(np.asarray(shifted), expected)
    params = model.init(jax.random.key(0), ids, mask, labels=labels)["params"]
    via_labels = model.apply({"params": params}, ids, mask, labels=labels)
    explicit = model.apply({"params": params}, ids, mask, expected)
    np.testing.assert_allclose(np.asarray(via_labels.logits), np.asarray(explicit.logits),
                               atol=1e-6)
    np.testing.assert_array_equal(
        np.asarray(model.apply({"params": params}, labels, method="shift_right")), expected)


@pytest.mark.slow
def test_t5_tied_head_is_rescaled_and_encoder_model_matches():
    cfg = T5Config.from_size("tiny", **SMALL)
    model = build("t5", cfg)
    ids = np.arange(3, 10)[None].astype(np.int32)
    params = model.init(jax.random.key(1), ids, decoder_input_ids=ids[:, :3])["params"]
    out = model.apply({"params": params}, ids, decoder_input_ids=ids[:, :3],
                      output_hidden_states=True)
    table = np.asarray(params["shared"]["embedding"].unbox())
    h = np.asarray(out.decoder_hidden_states[-1])
    np.testing.assert_allclose(np.asarray(out.logits), (h * 32 ** -0.5) @ table.T, atol=1e-4)
    encoder_only = T5EncoderModel(cfg)
    enc_params = {"shared": params["shared"], "encoder": params["encoder"]}
    np.testing.assert_allclose(
        np.asarray(encoder_only.apply({"params": enc_params}, ids).last_hidden_state),
        np.asarray(out.encoder_last_hidden_state), atol=1e-6)
    v11 = build("t5", "tiny-v1_1", **SMALL)
    v11_params = v11.init(jax.random.key(1), ids, decoder_input_ids=ids[:, :3])["params"]
    assert "lm_head" in v11_params and not v11.config.rescale_decoder_outputs
    assert set(v11_params["encoder"]["stack"]["layers_0"]["layer"]["mlp"]) == {
        "wi_0", "wi_1", "wo"}


def test_transformer_embeddings_follow_the_paper():
    """Decoder input = E[ids] * sqrt(d) + PE(pos); post-LN stacks have no final norm."""
    model = build("transformer", "transformer-tiny", **SMALL)
    ids = np.array([[4, 9, 13, 7]], np.int32)
    params = model.init(jax.random.key(2), ids, decoder_input_ids=ids)["params"]
    out = model.apply({"params": params}, ids, decoder_input_ids=ids, output_hidden_states=True)
    table = np.asarray(params["shared"]["embedding"].unbox())
    pos = np.arange(4)[:, None] / 10000 ** (np.arange(0, 32, 2)[None] / 32)
    pe = np.zeros((4, 32))
    pe[:, 0::2], pe[:, 1::2] = np.sin(pos), np.cos(pos)
    np.testing.assert_allclose(np.asarray(out.decoder_hidden_states[0])[0],
                               table[ids[0]] * np.sqrt(32) + pe, atol=1e-5)
    assert "final_norm" not in params["decoder"]["stack"]
    assert name_of(model) == "transformer" and model.config.attention_scale is None


def test_bad_inputs_raise_clear_errors(rng):
    model = build("transformer", "transformer-tiny", **SMALL, max_position_embeddings=8)
    ids, mask, dec = _inputs(rng)
    params = model.init(jax.random.key(0), ids, mask, dec)["params"]
    apply = lambda *a, **k: model.apply({"params": params}, *a, **k)  # noqa: E731
    with pytest.raises(ValueError, match=r"decoder_attention_mask must have shape \(batch, 6\)"):
        apply(ids, mask, dec, np.ones((2, 4), np.int32))
    with pytest.raises(ValueError, match=r"attention_mask must have shape \(batch, 7\)"):
        apply(ids, mask[:, :5], dec)
    with pytest.raises(ValueError, match="Pass decoder_input_ids or labels"):
        apply(ids, mask)
    with pytest.raises(ValueError, match="length 9 exceeds max_position_embeddings=8"):
        apply(np.ones((2, 9), np.int32), None, dec)
    with pytest.raises(ValueError, match="needs encoder_hidden_states"):
        apply(dec, method="decode")
    with pytest.raises(ValueError, match="needs decoder_start_token_id"):
        shift_tokens_right(dec, decoder_start_token_id=None, pad_token_id=0)
    with pytest.raises(ConfigError, match="Did you mean 'num_decoder_layers'"):
        build("t5", "tiny", num_decoder_layer=2)
    with pytest.raises(ConfigError, match="position_embedding='rope'"):
        EncoderDecoderConfig(position_embedding="rope")


@pytest.mark.slow
def test_tiny_transformer_learns_to_reverse(rng):
    """Teacher-forced training on random sequences; greedy decoding with the KV cache
    then reverses held-out sequences."""
    vocab, length, batch, steps = 12, 5, 64, 300
    model = build("transformer", "transformer-tiny", vocab_size=vocab + 3, d_model=64,
                  num_layers=2, mlp_dim=128, dropout_rate=0.0, pad_token_id=0,
                  decoder_start_token_id=1, eos_token_id=2)

    def sample(n):
        x = rng.integers(3, vocab + 3, (n, length)).astype(np.int32)
        return x, x[:, ::-1].copy()

    params = model.init(jax.random.key(0), *[a[:1] for a in sample(1)][:1],
                        labels=sample(1)[1])["params"]
    opt = optax.adam(1e-3)
    opt_state = opt.init(params)

    @jax.jit
    def train_step(p, s, x, y):
        loss, grads = jax.value_and_grad(
            lambda q: cross_entropy(model.apply({"params": q}, x, labels=y).logits, y))(p)
        updates, s = opt.update(grads, s, p)
        return optax.apply_updates(p, updates), s, loss

    for _ in range(steps):
        params, opt_state, loss = train_step(params, opt_state, *sample(batch))

    x_test, y_test = sample(32)
    enc = model.apply({"params": params}, x_test, method="encode").last_hidden_state
    shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros(
        (32, length), jnp.int32), enc, decode=True, method="decode"))
    cache = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes["cache"])

    @jax.jit
    def greedy_step(c, token, enc_states):
        out, variables = model.apply({"params": params, "cache": c}, token, enc_states,
                                     decode=True, method="decode", mutable=["cache"])
        return jnp.argmax(out.logits[:, -1], -1)[:, None].astype(jnp.int32), variables["cache"]

    token = np.full((32, 1), 1, np.int32)
    generated = []
    for i in range(length):
        token, cache = greedy_step(cache, token, enc if i == 0 else None)
        generated.append(np.asarray(token))
    accuracy = (np.concatenate(generated, 1) == y_test).mean()
    assert float(loss) < 0.5 and accuracy > 0.9, (float(loss), accuracy)
