"""write_hf_folder keeps tensor shapes exactly, including 0-d scalars (CLIP logit_scale)."""

import numpy as np
from safetensors.numpy import load_file

from jaxmm.convert.io import write_hf_folder


def test_write_hf_folder_keeps_scalar_and_array_shapes(tmp_path):
    tensors = {"logit_scale": np.float32(2.5), "w": np.arange(6, dtype=np.float64).reshape(2, 3).T}
    out = write_hf_folder(str(tmp_path), {"model_type": "x"}, tensors)
    back = load_file(f"{out}/model.safetensors")
    assert back["logit_scale"].shape == () and float(back["logit_scale"]) == 2.5
    assert back["w"].shape == (3, 2) and back["w"].dtype == np.float32
    np.testing.assert_array_equal(back["w"], tensors["w"])
