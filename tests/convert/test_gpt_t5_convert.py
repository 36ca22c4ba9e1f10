"""GPT-2, Llama and T5 import/export against Hugging Face transformers (same weights)."""

import json
import os

import jax
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from jaxmm.convert import ConversionError, from_hf, to_hf  # noqa: E402

ATOL = 1e-4  # float32 parity target (max abs)


def _padded_batch(rng, vocab, length=9, left=True):
    ids = rng.integers(3, vocab, (3, length)).astype(np.int64)
    mask = np.ones_like(ids)
    if left:
        mask[1, :3] = 0
        mask[2, :1] = 0
    else:
        mask[1, -3:] = 0
    ids[mask == 0] = 0
    return ids, mask


def _maxdiff(ours, theirs, valid):
    return float(np.abs(np.asarray(ours)[valid] - theirs.detach().numpy()[valid]).max())


def _save(model, path, **kwargs):
    model.save_pretrained(str(path), **kwargs)
    return str(path)


def _hf_outputs(model, ids, mask, positions, **kwargs):
    with torch.no_grad():
        return model(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask),
                     position_ids=torch.tensor(positions), output_hidden_states=True, **kwargs)


# ---------------------------------------------------------------------------
# Decoder-only: GPT-2 and Llama
# ---------------------------------------------------------------------------


def _gpt2(**kw):
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(vocab_size=96, n_positions=32, n_embd=32, n_layer=2, n_head=4,
                                  initializer_range=0.2, bos_token_id=1, eos_token_id=2, **kw)
    return transformers.GPT2LMHeadModel(cfg).eval()


def _llama(**kw):
    torch.manual_seed(0)
    kw.setdefault("rope_theta", 500.0)
    cfg = transformers.LlamaConfig(
        vocab_size=96, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, initializer_range=0.2,
        max_position_embeddings=64, **kw)
    return transformers.LlamaForCausalLM(cfg).eval()


def _check_causal_parity(jax_model, params, hf_model, ids, mask, **extra):
    positions = np.maximum(np.cumsum(mask, 1) - 1, 0)
    hf = _hf_outputs(hf_model, ids, mask, positions, **{
        k: torch.tensor(v) for k, v in extra.items()})
    ours = jax.jit(lambda *a: jax_model.apply({"params": params}, *a, output_hidden_states=True,
                                              **extra))(ids, mask, positions)
    valid = mask.astype(bool)
    assert _maxdiff(ours.logits, hf.logits, valid) < ATOL
    assert len(ours.hidden_states) == len(hf.hidden_states) == 3
    for a, b in zip(ours.hidden_states, hf.hidden_states):
        assert _maxdiff(a, b, valid) < ATOL
    return ours


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_causal_lm_parity_with_padding(tmp_path, rng, family):
    hf_model = _gpt2() if family == "gpt2" else _llama()
    conv = from_hf(_save(hf_model, tmp_path / family))
    assert type(conv.model).__name__ == "GPTLMHeadModel"
    if family == "llama":
        assert (conv.config.num_kv_heads, conv.config.rope_theta) == (2, 500.0)
        assert "lm_head" in conv.params
    else:
        assert "lm_head" not in conv.params  # tied; absent from the file
    for left in (True, False):
        ids, mask = _padded_batch(rng, 96, left=left)
        _check_causal_parity(conv.model, conv.params, hf_model, ids, mask)


def test_base_models_and_scan_layout(tmp_path, rng):
    ids, mask = _padded_batch(rng, 96)
    positions = np.maximum(np.cumsum(mask, 1) - 1, 0)
    for hf_lm in (_gpt2(), _llama()):
        base = hf_lm.base_model
        path = _save(base, tmp_path / type(base).__name__)
        conv = from_hf(path, scan_layers=True)
        assert type(conv.model).__name__ == "GPTModel" and conv.config.scan_layers
        assert "layers" in conv.params["decoder"]  # stacked layer params
        ours = jax.jit(conv.model.apply)({"params": conv.params}, ids, mask, positions)
        hf = _hf_outputs(base, ids, mask, positions)
        assert _maxdiff(ours.last_hidden_state, hf.last_hidden_state, mask.astype(bool)) < ATOL
        # Export of the base model loads back into transformers with the same outputs.
        out = to_hf(conv.model, conv.params, str(tmp_path / "export"))
        again = type(base).from_pretrained(out).eval()
        assert _maxdiff(ours.last_hidden_state, _hf_outputs(again, ids, mask, positions)
                        .last_hidden_state, mask.astype(bool)) < ATOL


def test_gpt2_cross_attention_parity(tmp_path, rng):
    hf_model = _gpt2(add_cross_attention=True)
    conv = from_hf(_save(hf_model, tmp_path / "xattn"))
    assert conv.config.add_cross_attention
    ids, mask = _padded_batch(rng, 96)
    enc = rng.normal(size=(3, 5, 32)).astype(np.float32)
    enc_mask = np.array([[1] * 5, [1, 1, 1, 0, 0], [1, 1, 1, 1, 0]])
    _check_causal_parity(conv.model, conv.params, hf_model, ids, mask,
                         encoder_hidden_states=enc, encoder_attention_mask=enc_mask)


def test_sharded_checkpoint(tmp_path, rng):
    hf_model = _llama()
    path = _save(hf_model, tmp_path / "sharded", max_shard_size="20KB")
    assert os.path.isfile(os.path.join(path, "model.safetensors.index.json"))
    assert len([f for f in os.listdir(path) if f.endswith(".safetensors")]) > 1
    conv = from_hf(path)
    _check_causal_parity(conv.model, conv.params, hf_model, *_padded_batch(rng, 96))


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_causal_lm_export_round_trip(tmp_path, rng, family):
    from jaxmm.models import build

    size = "tiny" if family == "gpt2" else "llama-tiny"
    model = build("gpt", size, vocab_size=96, max_position_embeddings=32, d_model=32,
                  num_layers=2, initializer_range=0.2)
    params = model.init(jax.random.key(0), np.zeros((1, 4), np.int32))["params"]  # boxed
    out = to_hf(model, params, str(tmp_path / "out"))
    with open(os.path.join(out, "config.json")) as f:
        assert json.load(f)["model_type"] == family
    hf_model = transformers.AutoModelForCausalLM.from_pretrained(out).eval()
    assert type(hf_model).__name__ == ("GPT2LMHeadModel" if family == "gpt2" else
                                       "LlamaForCausalLM")
    ids, mask = _padded_batch(rng, 96)
    _check_causal_parity(model, params, hf_model, ids, mask)
    back = from_hf(out)
    assert back.config == model.config
    jax.tree.map(np.testing.assert_array_equal, jax.tree.map(np.asarray, back.params),
                 jax.tree.map(np.asarray, jax.tree.map(lambda b: b.unbox(), params,
                              is_leaf=lambda b: hasattr(b, "unbox"))))


def test_conversion_errors(tmp_path):
    from jaxmm.models import build

    path = _save(_gpt2(), tmp_path / "gpt2")
    with open(os.path.join(path, "config.json")) as f:
        cfg = json.load(f)
    cfg["model_type"] = "gpt3"
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(cfg, f)
    with pytest.raises(ConversionError, match="Unsupported model_type 'gpt3'.*closest"):
        from_hf(path)
    cfg.update(model_type="llama", rope_parameters={"rope_type": "yarn", "rope_theta": 1e4})
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(cfg, f)
    with pytest.raises(ConversionError, match="rope_type 'yarn'"):
        from_hf(path)
    odd = build("gpt", "tiny", vocab_size=16, norm="rmsnorm")  # learned positions + RMSNorm
    params = jax.eval_shape(lambda: odd.init(jax.random.key(0), np.zeros((1, 2), np.int32)))
    with pytest.raises(ConversionError, match="neither as GPT-2 nor as Llama.*'rope'"):
        to_hf(odd, params, str(tmp_path / "odd"))


# ---------------------------------------------------------------------------
# Encoder-decoder: T5 v1.0 (relu, tied + rescaled head) and v1.1 (gated-gelu, untied)
# ---------------------------------------------------------------------------


def _t5(version, cls="T5ForConditionalGeneration"):
    torch.manual_seed(0)
    cfg = transformers.T5Config(
        vocab_size=80, d_model=32, d_kv=16, d_ff=48, num_layers=2, num_decoder_layers=3,
        num_heads=4, relative_attention_num_buckets=8, relative_attention_max_distance=20,
        feed_forward_proj="relu" if version == "v1_0" else "gated-gelu",
        tie_word_embeddings=version == "v1_0", decoder_start_token_id=0)
    model = getattr(transformers, cls)(cfg).eval()
    if version == "v1_1" and hasattr(model, "lm_head"):
        model.lm_head.weight = torch.nn.Parameter(torch.randn(80, 32))  # really untied
    return model


def _seq2seq_batch(rng):
    ids = rng.integers(2, 80, (3, 24))  # longer than max_distance: exercises the log buckets
    mask = np.ones_like(ids)
    mask[1, -7:] = 0
    mask[2, -1:] = 0
    dec = rng.integers(2, 80, (3, 7))
    dec_mask = np.ones_like(dec)
    dec_mask[1, -2:] = 0
    return ids, mask, dec, dec_mask


def _t5_hf(model, ids, mask, dec=None, dec_mask=None):
    kwargs = dict(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask),
                  output_hidden_states=True)
    if dec is not None:
        kwargs.update(decoder_input_ids=torch.tensor(dec),
                      decoder_attention_mask=torch.tensor(dec_mask))
    with torch.no_grad():
        return model(**kwargs)


def _check_t5_lm(model, params, hf_model, batch):
    ids, mask, dec, dec_mask = batch
    hf = _t5_hf(hf_model, *batch)
    ours = jax.jit(lambda *a: model.apply({"params": params}, *a, output_hidden_states=True))(
        ids, mask, dec, dec_mask)
    enc_valid, dec_valid = mask.astype(bool), dec_mask.astype(bool)
    assert _maxdiff(ours.logits, hf.logits, dec_valid) < ATOL
    assert _maxdiff(ours.encoder_last_hidden_state, hf.encoder_last_hidden_state,
                    enc_valid) < ATOL
    for a, b in zip(ours.encoder_hidden_states, hf.encoder_hidden_states, strict=True):
        assert _maxdiff(a, b, enc_valid) < ATOL
    for a, b in zip(ours.decoder_hidden_states, hf.decoder_hidden_states, strict=True):
        assert _maxdiff(a, b, dec_valid) < ATOL


@pytest.mark.parametrize("version", ["v1_0", "v1_1"])
def test_t5_parity_and_export_round_trip(tmp_path, rng, version):
    hf_model = _t5(version)
    conv = from_hf(_save(hf_model, tmp_path / version))
    cfg = conv.config
    assert type(conv.model).__name__ == "T5ForConditionalGeneration"
    if version == "v1_0":
        assert cfg.tie_word_embeddings and cfg.rescale_decoder_outputs and not cfg.gated_mlp
        assert "lm_head" not in conv.params
    else:
        assert not cfg.tie_word_embeddings and not cfg.rescale_decoder_outputs
        assert cfg.gated_mlp and cfg.activation == "gelu_tanh" and "lm_head" in conv.params
    assert (cfg.head_dim, cfg.num_decoder_layers) == (16, 3)
    batch = _seq2seq_batch(rng)
    _check_t5_lm(conv.model, conv.params, hf_model, batch)

    out = to_hf(conv.model, conv.params, str(tmp_path / "export"))
    again = transformers.T5ForConditionalGeneration.from_pretrained(out).eval()
    ref = _t5_hf(hf_model, *batch).logits
    assert _maxdiff(_t5_hf(again, *batch).logits.numpy(), ref, batch[3].astype(bool)) == 0.0
    back = from_hf(out)
    assert back.config == conv.config
    jax.tree.map(np.testing.assert_array_equal, back.params, conv.params)


def test_t5_model_and_encoder_model(tmp_path, rng):
    ids, mask, dec, dec_mask = _seq2seq_batch(rng)
    base = _t5("v1_1", "T5Model")
    conv = from_hf(_save(base, tmp_path / "base"), scan_layers=True)
    assert type(conv.model).__name__ == "T5Model" and "lm_head" not in conv.params
    ours = jax.jit(conv.model.apply)({"params": conv.params}, ids, mask, dec, dec_mask)
    hf = _t5_hf(base, ids, mask, dec, dec_mask)
    assert _maxdiff(ours.last_hidden_state, hf.last_hidden_state, dec_mask.astype(bool)) < ATOL

    encoder = _t5("v1_0", "T5EncoderModel")
    conv = from_hf(_save(encoder, tmp_path / "encoder"))
    assert type(conv.model).__name__ == "T5EncoderModel"
    ours = jax.jit(conv.model.apply)({"params": conv.params}, ids, mask)
    hf = _t5_hf(encoder, ids, mask)
    assert _maxdiff(ours.last_hidden_state, hf.last_hidden_state, mask.astype(bool)) < ATOL
    out = to_hf(conv.model, conv.params, str(tmp_path / "encoder_export"))
    again = transformers.T5EncoderModel.from_pretrained(out).eval()
    assert _maxdiff(ours.last_hidden_state, _t5_hf(again, ids, mask).last_hidden_state,
                    mask.astype(bool)) < ATOL


def test_transformer_is_not_exportable_as_t5(tmp_path):
    from jaxmm.models import build

    model = build("transformer", "transformer-tiny", vocab_size=16)
    ids = np.ones((1, 3), np.int32)
    params = jax.eval_shape(lambda: model.init(jax.random.key(0), ids, decoder_input_ids=ids))
    with pytest.raises(ConversionError, match="cannot be exported as T5.*'sinusoidal'"):
        to_hf(model, params, str(tmp_path / "x"))


@pytest.mark.parametrize("rope", [
    {"rope_type": "linear", "factor": 4.0},
    {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
     "original_max_position_embeddings": 64},
])
def test_llama_rope_scaling_parity_and_export(tmp_path, rng, rope):
    # head_dim 8, theta 500: wavelengths 6.3, 30, 140, 664 hit all three llama3 bands.
    hf_model = _llama(rope_parameters={"rope_theta": 500.0, **rope})
    conv = from_hf(_save(hf_model, tmp_path / "rope"))
    assert conv.config.rope_scaling.rope_type == rope["rope_type"]
    ids, mask = _padded_batch(rng, 96)
    offset = np.full_like(ids, 40)  # far positions, where the scaling matters
    positions = np.maximum(np.cumsum(mask, 1) - 1, 0) + offset
    apply = jax.jit(lambda p, *a: conv.model.apply({"params": p}, *a))
    ours = apply(conv.params, ids, mask, positions).logits
    valid = mask.astype(bool)
    assert _maxdiff(ours, _hf_outputs(hf_model, ids, mask, positions).logits, valid) < ATOL
    plain = from_hf(str(tmp_path / "rope"), rope_scaling=None)  # the scaling matters:
    unscaled = jax.jit(plain.model.apply)({"params": plain.params}, ids, mask, positions)
    assert np.abs(np.asarray(unscaled.logits) - np.asarray(ours))[valid].max() > 1e-3
    out = to_hf(conv.model, conv.params, str(tmp_path / "rope_export"))
    again = transformers.LlamaForCausalLM.from_pretrained(out).eval()
    assert _maxdiff(ours, _hf_outputs(again, ids, mask, positions).logits, valid) < ATOL
    assert from_hf(out).config == conv.config


def test_lm_head_tying_rules():
    """Tied: lm_head.weight may be absent or equal to the embedding, never different.
    Untied: it is required and becomes the transposed head kernel."""
    from jaxmm.convert.io import ConversionError, TensorStore
    from jaxmm.convert.params import causal_lm_params

    emb = np.arange(12, dtype=np.float32).reshape(4, 3)
    params = {"token_embedding": {"embedding": emb}}
    kw = dict(with_head=True, embedding_name="wte.weight")
    assert causal_lm_params(TensorStore({}), params, tied=True, **kw) == {"model": params}
    same = TensorStore({"lm_head.weight": emb.copy()})
    assert causal_lm_params(same, params, tied=True, **kw) == {"model": params}
    with pytest.raises(ConversionError, match="differs from wte.weight.*tie_word_embeddings"):
        causal_lm_params(TensorStore({"lm_head.weight": emb + 1}), params, tied=True, **kw)
    with pytest.raises(ConversionError, match="lm_head.weight is missing"):
        causal_lm_params(TensorStore({}), params, tied=False, **kw)
    head = np.ones((4, 3), np.float32) * np.arange(4)[:, None]
    out = causal_lm_params(TensorStore({"lm_head.weight": head}), params, tied=False, **kw)
    np.testing.assert_array_equal(out["lm_head"]["kernel"], head.T)
    # A bare decoder from an LM file: the head tensor is consumed, params unchanged.
    store = TensorStore({"lm_head.weight": head})
    assert causal_lm_params(store, params, tied=False, with_head=False,
                            embedding_name="wte.weight") is params
    store.finish()  # nothing left unused
