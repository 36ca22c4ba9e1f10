"""Fixtures of the generation tests: the toy protocol models with peaked weights."""

import jax.numpy as jnp
import pytest

from tests.generation.toy_decoders import ToyConfig, ToyLM, ToySeq2Seq, scaled_params


@pytest.fixture(scope="module")
def lm():
    """A decoder-only toy LM and its parameters."""
    model = ToyLM(ToyConfig())
    return model, scaled_params(model, jnp.ones((1, 4), jnp.int32))


@pytest.fixture(scope="module")
def s2s():
    """A toy encoder-decoder and its parameters."""
    model = ToySeq2Seq(ToyConfig())
    ones = jnp.ones((1, 4), jnp.int32)
    return model, scaled_params(model, ones, ones, ones)
