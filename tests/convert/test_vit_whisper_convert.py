"""Hugging Face export round trips and tensor-name error reporting for ViT and Whisper."""

import json
import os

import flax.linen as nn
import jax
import numpy as np
import pytest
import torch
import transformers
from safetensors.numpy import load_file, save_file

from jaxmm.convert import ConversionError, from_hf, supported_model_types, to_hf
from jaxmm.models import build


def _perturbed(params, seed=0):
    """Random non-zero values everywhere, so a swapped tensor cannot go unnoticed."""
    leaves, tree = jax.tree.flatten(params)
    rng = np.random.default_rng(seed)
    return jax.tree.unflatten(
        tree, [np.asarray(a) + 0.05 * rng.normal(size=np.shape(a)).astype(np.float32)
               for a in leaves])


def test_registered_model_types():
    assert {"vit", "whisper"} <= set(supported_model_types())


@pytest.mark.parametrize("name", ["vit", "vit_classifier"])
def test_vit_export_round_trip(tmp_path, rng, name):
    model = build(name, "tiny", num_labels=4)
    x = rng.normal(size=(2, 32, 32, 3)).astype(np.float32)
    params = _perturbed(nn.meta.unbox(model.init(jax.random.key(0), x)["params"]))
    out_dir = to_hf(model, params, str(tmp_path / "hf"))
    hf_cls = (transformers.ViTForImageClassification if name == "vit_classifier"
              else transformers.ViTModel)
    hf = hf_cls.from_pretrained(out_dir).eval()
    ours = model.apply({"params": params}, x)
    with torch.no_grad():
        ref = hf(pixel_values=torch.from_numpy(x.transpose(0, 3, 1, 2).copy()))
    if name == "vit":
        np.testing.assert_allclose(ours.last_hidden_state, ref.last_hidden_state, atol=1e-4)
        np.testing.assert_allclose(ours.pooler_output, ref.pooler_output, atol=1e-4)
    else:
        np.testing.assert_allclose(ours.logits, ref.logits, atol=1e-4)
    # Import of the export gives the same tensors back.
    back = from_hf(out_dir)
    jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), np.asarray(b)),
                 params, back.params)


def test_missing_and_unexpected_tensors_are_named(tmp_path, rng):
    model = build("vit", "tiny")
    params = nn.meta.unbox(
        model.init(jax.random.key(0), np.zeros((1, 32, 32, 3), np.float32))["params"])
    out_dir = to_hf(model, params, str(tmp_path / "hf"))
    file = os.path.join(out_dir, "model.safetensors")
    tensors = load_file(file)
    tensors.pop("encoder.layer.1.output.dense.bias")
    tensors["encoder.layer.7.extra.weight"] = np.zeros(3, np.float32)
    save_file(tensors, file)
    with pytest.raises(ConversionError) as err:
        from_hf(out_dir)
    msg = str(err.value)
    assert "missing tensors: encoder.layer.1.output.dense.bias" in msg
    assert "unexpected tensors: encoder.layer.7.extra.weight" in msg
    cfg = json.load(open(os.path.join(out_dir, "config.json")))
    assert cfg["model_type"] == "vit" and cfg["hidden_size"] == 64


@pytest.mark.parametrize("name", ["whisper", "whisper_model"])
def test_whisper_export_round_trip(tmp_path, rng, name):
    model = build(name, "tiny")
    feats = rng.normal(size=(2, 80, 64)).astype(np.float32)
    ids = rng.integers(4, 128, size=(2, 5)).astype(np.int32)
    params = _perturbed(nn.meta.unbox(jax.jit(model.init)(jax.random.key(0), feats, ids)
                                      ["params"]))
    # A non-zero key bias: softmax ignores it, so dropping it on export is exact.
    out_dir = to_hf(model, params, str(tmp_path / "hf"))
    tensors = load_file(os.path.join(out_dir, "model.safetensors"))
    assert not any(k.endswith("k_proj.bias") for k in tensors)
    assert "proj_out.weight" not in tensors  # tied, as HF saves it
    hf_cls = (transformers.WhisperForConditionalGeneration if name == "whisper"
              else transformers.WhisperModel)
    hf = hf_cls.from_pretrained(out_dir).eval()
    ours = jax.jit(model.apply)({"params": params}, feats, ids)
    with torch.no_grad():
        ref = hf(input_features=torch.from_numpy(feats), decoder_input_ids=torch.from_numpy(ids))
    np.testing.assert_allclose(ours.encoder_last_hidden_state, ref.encoder_last_hidden_state,
                               atol=1e-4)
    if name == "whisper":
        np.testing.assert_allclose(ours.logits, ref.logits, atol=1e-4)
    else:
        np.testing.assert_allclose(ours.last_hidden_state, ref.last_hidden_state, atol=1e-4)
    # Re-import: identical tensors except the key biases, which come back as zeros.
    back = from_hf(out_dir)
    assert type(back.model) is type(model)
    flat_a = dict(jax.tree_util.tree_flatten_with_path(params)[0])
    flat_b = dict(jax.tree_util.tree_flatten_with_path(back.params)[0])
    assert flat_a.keys() == flat_b.keys()
    for path, a in flat_a.items():
        if "key" in jax.tree_util.keystr(path) and path[-1].key == "bias":
            assert not np.any(flat_b[path])
        else:
            np.testing.assert_array_equal(np.asarray(a), np.asarray(flat_b[path]))
    again = jax.jit(back.model.apply)({"params": back.params}, feats, ids)
    np.testing.assert_allclose(again.encoder_last_hidden_state, ours.encoder_last_hidden_state,
                               atol=1e-5)


def test_whisper_untied_proj_out_is_refused(tmp_path, rng):
    model = build("whisper", "tiny")
    feats = np.zeros((1, 80, 64), np.float32)
    params = nn.meta.unbox(jax.jit(model.init)(jax.random.key(0), feats,
                                               np.zeros((1, 2), np.int32))["params"])
    out_dir = to_hf(model, params, str(tmp_path / "hf"))
    file = os.path.join(out_dir, "model.safetensors")
    tensors = load_file(file)
    tensors["proj_out.weight"] = tensors["model.decoder.embed_tokens.weight"] + 1.0
    save_file(tensors, file)
    with pytest.raises(ConversionError, match="proj_out.weight differs"):
        from_hf(out_dir)
