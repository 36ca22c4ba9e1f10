"""Fine-tuning initialisation (``init.hf`` / ``init.params``): checkpoint params are
matched to the model by path and shape, also when the nesting differs."""

import numpy as np
import pytest

from jaxmm.config import ConfigError
from jaxmm.train import merge_pretrained


def _encoder(value):
    return {"embeddings": {"word": np.full((10, 4), value, np.float32)},
            "encoder": {"layers_0": {"kernel": np.full((4, 4), value, np.float32)}}}


def test_base_checkpoint_fills_the_encoder_of_a_model_with_a_head():
    init = {"bert": _encoder(0.0), "classifier": {"kernel": np.zeros((4, 3), np.float32)}}
    loaded = {**_encoder(1.0), "pooler": {"kernel": np.ones((4, 4), np.float32)}}
    merged = merge_pretrained(init, loaded, "base")
    np.testing.assert_array_equal(merged["bert"]["embeddings"]["word"], 1.0)
    np.testing.assert_array_equal(merged["bert"]["encoder"]["layers_0"]["kernel"], 1.0)
    np.testing.assert_array_equal(merged["classifier"]["kernel"], 0.0)  # new head kept


def test_checkpoint_with_a_head_fills_the_bare_encoder():
    init = _encoder(0.0)
    loaded = {"bert": _encoder(2.0), "cls": {"bias": np.ones((10,), np.float32)}}
    merged = merge_pretrained(init, loaded, "mlm")
    np.testing.assert_array_equal(merged["encoder"]["layers_0"]["kernel"], 2.0)
    np.testing.assert_array_equal(merged["embeddings"]["word"], 2.0)


def test_same_nesting_takes_matching_shapes_only():
    init = {"bert": _encoder(0.0), "classifier": {"kernel": np.zeros((4, 3), np.float32)}}
    loaded = {"bert": _encoder(3.0), "classifier": {"kernel": np.ones((4, 5), np.float32)}}
    merged = merge_pretrained(init, loaded, "other head")
    np.testing.assert_array_equal(merged["bert"]["embeddings"]["word"], 3.0)
    np.testing.assert_array_equal(merged["classifier"]["kernel"], 0.0)  # shape differs


def test_nothing_matching_is_a_config_error():
    with pytest.raises(ConfigError, match="no parameter matches"):
        merge_pretrained(_encoder(0.0), {"vision": {"x": np.ones((3,), np.float32)}}, "vit")


def test_one_tower_of_a_dual_encoder_fills_a_nested_encoder():
    """A CLIP checkpoint's image tower initialises a deeper image encoder (e.g. VQA's)."""
    tower = lambda v: {"vision_model": _encoder(v)}  # noqa: E731
    loaded = {**tower(5.0), "text_model": _encoder(7.0),
              "visual_projection": {"kernel": np.ones((4, 2), np.float32)}}
    init = {"encoders": {"image": {"encoder": tower(0.0)},
                         "text": {"embedding": np.zeros((10, 4), np.float32)}},
            "fusion": {"layers_0": {"kernel": np.zeros((4, 4), np.float32)}}}
    merged = merge_pretrained(init, loaded, "clip")
    got = merged["encoders"]["image"]["encoder"]["vision_model"]
    np.testing.assert_array_equal(got["embeddings"]["word"], 5.0)
    np.testing.assert_array_equal(got["encoder"]["layers_0"]["kernel"], 5.0)
    # Nothing of the text tower lands anywhere (it has no place in this model).
    np.testing.assert_array_equal(merged["fusion"]["layers_0"]["kernel"], 0.0)
    np.testing.assert_array_equal(merged["encoders"]["text"]["embedding"], 0.0)


def test_tower_dropped_and_renested():
    """Drop the checkpoint's tower key and nest it elsewhere: CLIP vision -> a bare ViT slot."""
    loaded = {"vision_model": _encoder(4.0), "text_model": _encoder(9.0)}
    init = {"encoder": _encoder(0.0), "head": {"kernel": np.zeros((4, 3), np.float32)}}
    merged = merge_pretrained(init, loaded, "clip")
    # Both towers fit equally well: one of them is taken, whole, never a mix of the two.
    kernels = {float(merged["encoder"]["encoder"]["layers_0"]["kernel"][0, 0]),
               float(merged["encoder"]["embeddings"]["word"][0, 0])}
    assert len(kernels) == 1 and kernels <= {4.0, 9.0}
    np.testing.assert_array_equal(merged["head"]["kernel"], 0.0)
