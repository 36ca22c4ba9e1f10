"""Optimizers, schedules, weight-decay masks, freezing and per-group learning rates."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from ml_collections import ConfigDict

from jaxmm.train.optim import decay_mask, make_optimizer, make_schedule, trainable_mask
from jaxmm.train.run_config import default_config

PARAMS = {
    "embed": {"embedding": jnp.ones((10, 4))},
    "vision": {"dense": {"kernel": jnp.ones((4, 4)), "bias": jnp.ones((4,))}},
    "text": {"dense": {"kernel": jnp.ones((4, 4)), "bias": jnp.ones((4,))},
             "norm": {"scale": jnp.ones((4,))}},
}
GRADS = jax.tree.map(lambda p: jnp.full_like(p, 0.5), PARAMS)


def _config(**opt):
    c = default_config()
    c.num_steps = 100
    c.optimizer.update(opt)
    return c


def _schedule(**kw):
    s = default_config().schedule
    s.update(kw)
    return s


def test_schedules_match_formulas():
    cos = make_schedule(_schedule(name="cosine", warmup_steps=10, end_value_ratio=0.1), 1.0, 110)
    assert float(cos(0)) == 0.0 and float(cos(5)) == pytest.approx(0.5)
    assert float(cos(10)) == pytest.approx(1.0)
    assert float(cos(60)) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert float(cos(110)) == pytest.approx(0.1)
    lin = make_schedule(_schedule(name="linear", warmup_steps=0), 2.0, 100)
    assert float(lin(25)) == pytest.approx(1.5)
    rsqrt = make_schedule(_schedule(name="rsqrt", warmup_steps=4), 1.0, 100)
    assert float(rsqrt(2)) == pytest.approx(0.5)
    assert float(rsqrt(12)) == pytest.approx(math.sqrt(4 / 12))  # peak * sqrt(warmup / step)
    const = make_schedule(_schedule(name="constant", warmup_steps=0), 0.3, 100)
    assert float(const(77)) == pytest.approx(0.3)


def test_decay_mask_skips_biases_norms_and_embeddings():
    mask = decay_mask(PARAMS, default_config().optimizer.weight_decay_exclude)
    assert mask["vision"]["dense"]["kernel"] and mask["text"]["dense"]["kernel"]
    assert not mask["vision"]["dense"]["bias"] and not mask["text"]["norm"]["scale"]
    assert not mask["embed"]["embedding"]


@pytest.mark.parametrize("name,reference", [
    ("adamw", lambda lr, m: optax.adamw(lr, weight_decay=0.1, mask=m)),
    ("lion", lambda lr, m: optax.lion(lr, b1=0.9, b2=0.999, weight_decay=0.1, mask=m)),
    ("adafactor", lambda lr, m: optax.adafactor(lr, decay_rate=0.8, weight_decay_rate=0.1,
                                                weight_decay_mask=m)),
    ("sgd", lambda lr, m: optax.chain(optax.add_decayed_weights(0.1, m),
                                      optax.sgd(lr, momentum=0.9))),
])
@pytest.mark.slow
def test_optimizers_match_optax(name, reference):
    tx, _ = make_optimizer(_config(name=name, learning_rate=0.1, weight_decay=0.1, clip_norm=None,
                                   **({"b2": 0.999} if name == "lion" else {})))
    mask = decay_mask(PARAMS, default_config().optimizer.weight_decay_exclude)
    ref = reference(optax.cosine_decay_schedule(0.1, 100), mask)
    s1, s2 = tx.init(PARAMS), ref.init(PARAMS)
    for _ in range(2):
        u1, s1 = tx.update(GRADS, s1, PARAMS)
        u2, s2 = ref.update(GRADS, s2, PARAMS)
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-8), u1, u2)


def test_clipping_freezing_and_lr_multipliers():
    tx, _ = make_optimizer(_config(name="sgd", momentum=0.0, learning_rate=1.0, clip_norm=1.0,
                                   freeze=("^vision/",), lr_multipliers=(("norm", 0.1),),
                                   weight_decay=0.0))
    state = tx.init(PARAMS)
    updates, _ = tx.update(GRADS, state, PARAMS)
    # Frozen: zero update and no optimizer state for them.
    assert all(float(jnp.abs(u).max()) == 0 for u in jax.tree.leaves(updates["vision"]))
    # Clipping sees only the trainable gradients: their global norm becomes 1.
    trainable = [GRADS["embed"], GRADS["text"]]
    norm = float(optax.tree.norm(trainable))
    np.testing.assert_allclose(updates["text"]["dense"]["kernel"], -0.5 / norm, rtol=1e-6)
    np.testing.assert_allclose(updates["text"]["norm"]["scale"], -0.1 * 0.5 / norm, rtol=1e-6)
    assert trainable_mask(PARAMS, ("^vision/",))["vision"]["dense"]["kernel"] is False


def test_unknown_optimizer_and_bad_regex():
    from jaxmm.config import ConfigError

    with pytest.raises(ConfigError, match="optimizer.name.*'lion'"):
        make_optimizer(_config(name="lino"))
    with pytest.raises(ConfigError, match="optimizer.freeze: invalid regex"):
        make_optimizer(_config(freeze=("vision[",)))
    assert isinstance(_config(), ConfigDict)
