"""ResNet encoder: token/pooled shapes, BatchNorm statistics, a learning check, errors."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxmm.models import build
from jaxmm.models.resnet import ResNetConfig, ResNetEncoder


@pytest.mark.parametrize("block,stem,norm,size,grid", [
    ("basic", "small", "group", 16, 8),
    ("bottleneck", "imagenet", "batch", 32, 4),
])
@pytest.mark.slow
def test_feature_map_tokens_and_pooled(rng, block, stem, norm, size, grid):
    cfg = ResNetConfig(block=block, stem=stem, norm=norm, stage_sizes=(1, 1), width=8,
                       num_groups=4, projection_dim=None)
    model = ResNetEncoder(cfg)
    x = rng.normal(size=(2, size, size, 3)).astype(np.float32)
    variables = jax.jit(model.init)(jax.random.key(0), x)
    assert ("batch_stats" in variables) == (norm == "batch")
    out = jax.jit(lambda v, x: model.apply(v, x, output_hidden_states=True))(variables, x)
    width = 16 * (4 if block == "bottleneck" else 1)
    assert cfg.hidden_size == width and size // cfg.downsample == grid
    assert out.last_hidden_state.shape == (2, grid * grid, width)
    fmap = out.hidden_states[-1]
    assert fmap.shape == (2, grid, grid, width)
    # Tokens are the final feature map in row-major order; pooled is their mean.
    np.testing.assert_array_equal(out.last_hidden_state, fmap.reshape(2, -1, width))
    np.testing.assert_allclose(out.pooler_output, fmap.mean((1, 2)), atol=1e-6)
    specs = nn.get_partition_spec(variables["params"])
    leaves = jax.tree.leaves(specs, is_leaf=lambda s: isinstance(s, jax.sharding.PartitionSpec))
    assert leaves and all(len(s) > 0 for s in leaves)


@pytest.mark.slow
def test_batchnorm_running_stats_and_eval_mode(rng):
    cfg = ResNetConfig(stage_sizes=(1,), width=8, stem="small", norm="batch",
                       batch_norm_momentum=0.9)
    model = ResNetEncoder(cfg)
    x = rng.normal(size=(4, 8, 8, 3)).astype(np.float32) + 2.0
    v = nn.meta.unbox(model.init(jax.random.key(0), x))
    _, updates = model.apply(v, x, deterministic=False, mutable=["batch_stats"])
    # Stem BatchNorm: running mean = 0.9 * 0 + 0.1 * batch mean of the stem conv output.
    conv = jax.lax.conv_general_dilated(x, v["params"]["stem"]["kernel"], (1, 1),
                                        [(1, 1), (1, 1)],
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"))
    np.testing.assert_allclose(updates["batch_stats"]["stem_norm"]["mean"],
                               0.1 * np.asarray(conv).mean((0, 1, 2)), atol=1e-5)
    # Eval mode uses running averages: an example's output does not depend on its batch.
    v = {**v, **updates}
    apply = jax.jit(lambda x: model.apply(v, x).pooler_output)
    np.testing.assert_allclose(apply(x)[:1], apply(x[:1]), atol=1e-5)
    # Train mode normalises with batch statistics: it does.
    train = jax.jit(lambda x: model.apply(v, x, deterministic=False,
                                          mutable=["batch_stats"])[0].pooler_output)
    assert np.abs(np.asarray(train(x)[:1]) - np.asarray(train(x[:1]))).max() > 1e-3


@pytest.mark.slow
def test_learns_a_trivially_separable_task(rng):
    """Class = which half of the image is bright; BatchNorm state is threaded through."""
    model = build("resnet_classifier", ResNetConfig(stage_sizes=(1, 1), width=8, stem="small",
                                                    norm="batch", num_labels=2))
    labels = rng.integers(0, 2, size=32).astype(np.int32)
    x = rng.normal(size=(32, 8, 8, 3)).astype(np.float32) * 0.3
    x[labels == 0, :, :4] += 1.0
    x[labels == 1, :, 4:] += 1.0
    variables = model.init(jax.random.key(0), x[:2])
    params, stats = variables["params"], variables["batch_stats"]
    tx = optax.adam(1e-2)
    opt = tx.init(params)

    @jax.jit
    def step(params, stats, opt):
        def loss_fn(p):
            out, upd = model.apply({"params": p, "batch_stats": stats}, x, deterministic=False,
                                   mutable=["batch_stats"])
            loss = optax.softmax_cross_entropy_with_integer_labels(out.logits, labels).mean()
            return loss, upd["batch_stats"]

        (loss, stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        updates, opt = tx.update(grads, opt)
        return optax.apply_updates(params, updates), stats, opt, loss

    losses = []
    for _ in range(25):
        params, stats, opt, loss = step(params, stats, opt)
        losses.append(float(loss))
    logits = model.apply({"params": params, "batch_stats": stats}, x).logits
    assert losses[-1] < 0.3 * losses[0]
    assert (np.asarray(jnp.argmax(logits, -1)) == labels).mean() == 1.0


def test_bad_inputs():
    model = build("resnet", "tiny")
    v = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 8, 8, 3)))
    v = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), v)
    with pytest.raises(ValueError, match="NHWC"):
        model.apply(v, np.zeros((1, 3, 8, 8), np.float32))
    big = build("resnet", "resnet18")
    with pytest.raises(ValueError, match="smaller than the network's total stride 32"):
        jax.eval_shape(big.init, jax.random.key(0), jnp.zeros((1, 16, 16, 3)))
    with pytest.raises(Exception, match="bottleneck"):
        ResNetConfig(block="bottle")


@pytest.mark.parametrize("size,count", [("resnet18", 11_689_512), ("resnet50", 25_557_032)])
def test_parameter_counts_match_torchvision(size, count):
    """Published torchvision counts (ImageNet head, 1000 classes) for the standard sizes."""
    model = build("resnet_classifier", size)
    shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 224, 224, 3)))
    assert sum(x.size for x in jax.tree.leaves(shapes["params"])) == count
