"""PatchEmbed (conv as matmul) and bicubic resizing of learned position grids."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from jaxmm.layers import PatchEmbed, resize_position_grid


def test_position_grid_resize_matches_torch_bicubic(rng):
    table = rng.normal(size=(5 * 5, 6)).astype(np.float32)
    for new in [(7, 9), (3, 2), (5, 5)]:
        want = torch.nn.functional.interpolate(
            torch.from_numpy(table.reshape(1, 5, 5, 6)).permute(0, 3, 1, 2), size=new,
            mode="bicubic", align_corners=False).permute(0, 2, 3, 1).reshape(-1, 6).numpy()
        np.testing.assert_allclose(resize_position_grid(jnp.asarray(table), (5, 5), new), want,
                                   atol=1e-5)


def test_patch_embed_equals_strided_conv(rng):
    x = rng.normal(size=(2, 12, 8, 3)).astype(np.float32)
    pe = PatchEmbed(features=5, patch_size=(4, 4))
    params = nn.meta.unbox(pe.init(jax.random.key(0), x))
    got = pe.apply(params, x)
    want = jax.lax.conv_general_dilated(
        x, params["params"]["kernel"], (4, 4), "VALID",
        dimension_numbers=("NHWC", "HWIO", "NHWC")) + params["params"]["bias"]
    np.testing.assert_allclose(got, want, atol=1e-5)
    assert got.shape == (2, 3, 2, 5)


def test_tubelet_patch_embed_equals_3d_conv(rng):
    x = rng.normal(size=(1, 4, 8, 8, 2)).astype(np.float32)
    pe = PatchEmbed(features=3, patch_size=(2, 4, 4), use_bias=False)
    params = nn.meta.unbox(pe.init(jax.random.key(0), x))
    want = jax.lax.conv_general_dilated(
        x, params["params"]["kernel"], (2, 4, 4), "VALID",
        dimension_numbers=("NDHWC", "DHWIO", "NDHWC"))
    np.testing.assert_allclose(pe.apply(params, x), want, atol=1e-5)
    with pytest.raises(ValueError, match="not a multiple of the patch size 2"):
        pe.apply(params, x[:, :3])
