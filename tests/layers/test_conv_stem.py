"""ConvStem against PyTorch (Conv2d stride 2 + LayerNorm over channels + tanh-GELU, then a
1x1 projection) with the same weights, and its errors."""

import flax.linen as nn
import jax
import numpy as np
import pytest
import torch

from jaxmm.layers import ConvStem


def _torch_stem(params, x):
    """The same stem in PyTorch (NCHW), from the Flax params."""
    h = torch.from_numpy(np.asarray(x)).permute(0, 3, 1, 2)
    i = 0
    while f"conv_{i}" in params:
        k = torch.from_numpy(np.asarray(params[f"conv_{i}"]["kernel"])).permute(3, 2, 0, 1)
        h = torch.nn.functional.conv2d(h, k, stride=2, padding=1)
        norm = params[f"norm_{i}"]
        h = torch.nn.functional.layer_norm(
            h.permute(0, 2, 3, 1), (k.shape[0],), torch.from_numpy(np.asarray(norm["scale"])),
            torch.from_numpy(np.asarray(norm["bias"])), eps=1e-6).permute(0, 3, 1, 2)
        h = torch.nn.functional.gelu(h, approximate="tanh")
        i += 1
    proj = params["projection"]
    h = h.permute(0, 2, 3, 1) @ torch.from_numpy(np.asarray(proj["kernel"]))
    return (h + torch.from_numpy(np.asarray(proj["bias"]))).numpy(), i


@pytest.mark.parametrize("patch,features", [(4, 32), (8, 24)])
def test_conv_stem_matches_torch(rng, patch, features):
    x = rng.normal(size=(2, 16, 24, 3)).astype(np.float32)
    stem = ConvStem(features, patch)
    params = nn.unbox(stem.init(jax.random.key(0), x))["params"]
    params = jax.tree.map(lambda a: a + 0.1 * rng.normal(size=a.shape).astype(a.dtype), params)
    got = np.asarray(stem.apply({"params": params}, x))
    want, convs = _torch_stem(params, x)
    assert got.shape == (2, 16 // patch, 24 // patch, features)  # the patch grid
    assert convs == int(np.log2(patch))
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_conv_stem_errors_name_the_fix():
    x = np.zeros((1, 16, 16, 3), np.float32)
    with pytest.raises(ValueError, match="power-of-two patch_size"):
        ConvStem(8, 6).init(jax.random.key(0), x)
    with pytest.raises(ValueError, match="not a multiple of the patch size 8"):
        ConvStem(8, 8).init(jax.random.key(0), np.zeros((1, 12, 16, 3), np.float32))
    with pytest.raises(ValueError, match="batch, height, width, channels"):
        ConvStem(8, 4).init(jax.random.key(0), np.zeros((16, 16, 3), np.float32))
