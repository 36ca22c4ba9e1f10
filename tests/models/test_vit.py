"""ViT: parity with Hugging Face ViTModel / ViTForImageClassification, sizes, errors."""

import flax.linen as nn
import jax
import numpy as np
import pytest
import torch
import transformers

from jaxmm.config import ConfigError
from jaxmm.convert import from_hf
from jaxmm.models import build
from jaxmm.models.vit import ViTConfig, ViTModel, decode_variant, resize_position_embeddings

HF_KW = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
             image_size=32, patch_size=8, hidden_dropout_prob=0.0,
             attention_probs_dropout_prob=0.0)


def _hf_dir(tmp_path_factory, cls, name, **kw):
    torch.manual_seed(0)
    model = cls(transformers.ViTConfig(**{**HF_KW, **kw})).eval()
    with torch.no_grad():  # non-trivial cls/position/bias values
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    path = str(tmp_path_factory.mktemp(name))
    model.save_pretrained(path)
    return model, path


@pytest.fixture(scope="module")
def hf_vit(tmp_path_factory):
    return _hf_dir(tmp_path_factory, transformers.ViTModel, "vit")


@pytest.fixture(scope="module")
def hf_vit_cls(tmp_path_factory):
    return _hf_dir(tmp_path_factory, transformers.ViTForImageClassification, "vitcls",
                   num_labels=5)


def _images(rng, b, h, w, c=3):
    return rng.normal(size=(b, h, w, c)).astype(np.float32)


def _torch(x):
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))


@pytest.mark.parametrize("size", [(32, 32), (48, 40)])
def test_vit_matches_hf_including_interpolated_positions(hf_vit, rng, size):
    hf, path = hf_vit
    model, params, cfg = from_hf(path)
    assert cfg.use_pooler and cfg.num_layers == 2
    x = _images(rng, 2, *size)
    interp = size != (32, 32)
    with torch.no_grad():
        ref = hf(pixel_values=_torch(x), interpolate_pos_encoding=interp)
    out = jax.jit(lambda p, x: model.apply({"params": p}, x, interpolate_pos_encoding=interp))(
        params, x)
    np.testing.assert_allclose(out.last_hidden_state, ref.last_hidden_state.numpy(), atol=1e-4)
    np.testing.assert_allclose(out.pooler_output, ref.pooler_output.numpy(), atol=1e-4)
    assert out.last_hidden_state.shape == (2, 1 + (size[0] // 8) * (size[1] // 8), 32)


def test_vit_classifier_matches_hf_and_scan_layout(hf_vit_cls, rng):
    hf, path = hf_vit_cls
    x = _images(rng, 3, 32, 32)
    with torch.no_grad():
        ref = hf(pixel_values=_torch(x)).logits.numpy()
    for scan in (False, True):
        model, params, cfg = from_hf(path, scan_layers=scan)
        assert cfg.num_labels == 5 and cfg.scan_layers == scan
        logits = jax.jit(model.apply)({"params": params}, x).logits
        np.testing.assert_allclose(logits, ref, atol=1e-4)


def test_resize_position_embeddings_equals_runtime_interpolation(hf_vit, rng):
    _, path = hf_vit
    model, params, cfg = from_hf(path)
    x = _images(rng, 1, 48, 48)
    want = jax.jit(lambda p, x: model.apply({"params": p}, x, interpolate_pos_encoding=True))(
        params, x).last_hidden_state
    new_params, new_cfg = resize_position_embeddings(params, cfg, 48)
    assert new_cfg.image_size == 48
    assert new_params["embeddings"]["position_embedding"].shape == (1 + 36, 32)
    got = jax.jit(ViTModel(new_cfg).apply)({"params": new_params}, x).last_hidden_state
    np.testing.assert_allclose(got, want, atol=1e-5)
    # The original params are untouched.
    assert params["embeddings"]["position_embedding"].shape == (17, 32)


def test_mean_pooling_and_patch_mask(rng):
    cfg = ViTConfig.from_size("tiny", pool_type="mean", class_token=False, use_pooler=False)
    model = ViTModel(cfg)
    x = _images(rng, 2, 32, 32)
    params = jax.jit(model.init)(jax.random.key(0), x)["params"]
    apply = jax.jit(lambda x, m: model.apply({"params": params}, x, attention_mask=m))
    out = apply(x, np.ones((2, 16), np.int32))
    assert out.last_hidden_state.shape == (2, 16, 64)
    np.testing.assert_allclose(out.pooler_output, out.last_hidden_state.mean(1), atol=1e-5)
    # Masking patches: pooled features are the mean of the kept tokens, and the
    # kept tokens do not depend on the content of masked patches.
    mask = np.ones((2, 16), np.int32)
    mask[:, 8:] = 0
    x2 = x.copy()
    x2[:, 16:] = 0.0  # rows of the bottom half of the grid = patches 8..15
    a, b = apply(x, mask), apply(x2, mask)
    np.testing.assert_allclose(a.last_hidden_state[:, :8], b.last_hidden_state[:, :8], atol=1e-5)
    np.testing.assert_allclose(a.pooler_output, a.last_hidden_state[:, :8].mean(1), atol=1e-5)


def test_sizes_and_registry():
    assert decode_variant("B/16") == dict(d_model=768, num_layers=12, mlp_dim=3072,
                                          num_heads=12, patch_size=16)
    cfg = ViTConfig.from_size("L/16")
    assert (cfg.d_model, cfg.num_layers, cfg.num_heads, cfg.num_patches) == (1024, 24, 16, 196)
    assert ViTConfig.from_size("S/32").grid == (7, 7)
    assert ViTConfig(image_size=(32, 64), patch_size=16).num_patches == 8
    with pytest.raises(ConfigError, match="B/16"):
        ViTConfig.from_size("B/15x")
    with pytest.raises(ConfigError, match="multiple of patch_size"):
        ViTConfig(image_size=30, patch_size=8)
    model = build("vit_classifier", "tiny", num_labels=3)
    x = np.zeros((1, 32, 32, 3), np.float32)
    variables = jax.jit(model.init)(jax.random.key(0), x)
    assert jax.eval_shape(model.apply, variables, x).logits.shape == (1, 3)
    # Every parameter carries logical axis names.
    specs = nn.get_partition_spec(variables)
    leaves = jax.tree.leaves(specs, is_leaf=lambda s: isinstance(s, jax.sharding.PartitionSpec))
    assert all(isinstance(s, jax.sharding.PartitionSpec) and len(s) > 0 for s in leaves)


def test_bad_inputs_raise_clear_errors():
    model = build("vit", "tiny")
    params = jax.jit(model.init)(jax.random.key(0), np.zeros((1, 32, 32, 3), np.float32))["params"]
    with pytest.raises(ValueError, match="does not match the model's 32x32.*interpolate"):
        model.apply({"params": params}, np.zeros((1, 48, 48, 3), np.float32))
    with pytest.raises(ValueError, match="expects 3 channels.*NCHW"):
        model.apply({"params": params}, np.zeros((1, 3, 32, 32), np.float32))
    with pytest.raises(ValueError, match="NHWC"):
        model.apply({"params": params}, np.zeros((32, 32, 3), np.float32))
    with pytest.raises(ValueError, match="multiple of the patch size 8"):
        model.apply({"params": params}, np.zeros((1, 36, 32, 3), np.float32),
                    interpolate_pos_encoding=True)
    with pytest.raises(ValueError, match="num_patches"):
        model.apply({"params": params}, np.zeros((1, 32, 32, 3), np.float32),
                    attention_mask=np.ones((1, 17)))


def test_sharded_init_and_forward_match_unsharded(rng):
    from jaxmm import sharding

    model = build("vit", "tiny")
    x = _images(rng, 4, 32, 32)
    mesh = sharding.make_mesh(data=2, fsdp=2, tensor=2)
    variables, shardings = sharding.init_sharded(model, jax.random.key(0), x, mesh=mesh)
    qkv = shardings["params"]["encoder"]["layers_0"]["layer"]["self_attention"]["query"]["kernel"]
    assert qkv.spec == jax.sharding.PartitionSpec("fsdp", "tensor", None)
    plain = nn.meta.unbox(jax.jit(model.init)(jax.random.key(0), x))
    with jax.set_mesh(mesh), nn.logical_axis_rules(sharding.DEFAULT_RULES):
        xs = jax.device_put(x, sharding.batch_sharding(mesh, 4))
        got = jax.jit(model.apply)(variables, xs).pooler_output
    want = jax.jit(model.apply)(plain, x).pooler_output
    np.testing.assert_allclose(got, want, atol=1e-5)
