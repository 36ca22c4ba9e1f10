"""Fine-tuning initialisation (``init.hf`` / ``init.params``): checkpoint params are
matched to the model by path and shape, also when the nesting differs."""

import numpy as np
import pytest

from jaxmm.config import ConfigError
from jaxmm.train.loop import _merge_initial


def _encoder(value):
    return {"embeddings": {"word": np.full((10, 4), value, np.float32)},
            "encoder": {"layers_0": {"kernel": np.full((4, 4), value, np.float32)}}}


def test_base_checkpoint_fills_the_encoder_of_a_model_with_a_head():
    init = {"bert": _encoder(0.0), "classifier": {"kernel": np.zeros((4, 3), np.float32)}}
    loaded = {**_encoder(1.0), "pooler": {"kernel": np.ones((4, 4), np.float32)}}
    merged = _merge_initial(init, loaded, "base")
    np.testing.assert_array_equal(merged["bert"]["embeddings"]["word"], 1.0)
    np.testing.assert_array_equal(merged["bert"]["encoder"]["layers_0"]["kernel"], 1.0)
    np.testing.assert_array_equal(merged["classifier"]["kernel"], 0.0)  # new head kept


def test_checkpoint_with_a_head_fills_the_bare_encoder():
    init = _encoder(0.0)
    loaded = {"bert": _encoder(2.0), "cls": {"bias": np.ones((10,), np.float32)}}
    merged = _merge_initial(init, loaded, "mlm")
    np.testing.assert_array_equal(merged["encoder"]["layers_0"]["kernel"], 2.0)
    np.testing.assert_array_equal(merged["embeddings"]["word"], 2.0)


def test_same_nesting_takes_matching_shapes_only():
    init = {"bert": _encoder(0.0), "classifier": {"kernel": np.zeros((4, 3), np.float32)}}
    loaded = {"bert": _encoder(3.0), "classifier": {"kernel": np.ones((4, 5), np.float32)}}
    merged = _merge_initial(init, loaded, "other head")
    np.testing.assert_array_equal(merged["bert"]["embeddings"]["word"], 3.0)
    np.testing.assert_array_equal(merged["classifier"]["kernel"], 0.0)  # shape differs


def test_nothing_matching_is_a_config_error():
    with pytest.raises(ConfigError, match="no parameter matches"):
        _merge_initial(_encoder(0.0), {"vision": {"x": np.ones((3,), np.float32)}}, "vit")
