"""Sharded training (GPT) equals one-device training; gradient accumulation equals one
big batch."""

import jax
import numpy as np
import pytest

from jaxmm.sharding import make_mesh
from jaxmm.train import load_exported, run
from tests.train.helpers import losses, tiny_config

STEPS = 3


def _train(tmp_path, name, mesh=None, **overrides):
    cfg = tiny_config("lm", {"num_steps": STEPS, "checkpoint.export_params": True,
                             "checkpoint.save_final": False, "model.name": "gpt",
                             "model.size": "tiny", "model.config": {
                                 "vocab_size": 64, "max_position_embeddings": 16,
                                 "num_layers": 1, "d_model": 32, "mlp_dim": 64},
                             **overrides})
    workdir = str(tmp_path / name)
    run(cfg, workdir, mesh=mesh)
    _, variables = load_exported(f"{workdir}/export")
    return losses(workdir), jax.device_get(variables)


def _assert_params_close(got, want):
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=2e-5), got, want)
    diff = max(float(np.max(np.abs(a - b))) for a, b in zip(jax.tree.leaves(got),
                                                            jax.tree.leaves(want)))
    moved = max(float(np.max(np.abs(a))) for a in jax.tree.leaves(want))
    assert diff < 1e-3 * moved


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """Three steps on a single device."""
    mesh = make_mesh(devices=jax.devices()[:1])
    return _train(tmp_path_factory.mktemp("ref"), "one", mesh=mesh)


@pytest.mark.parametrize("mesh", [
    {"data": 8, "fsdp": 1, "tensor": 1},
    {"data": 1, "fsdp": 8, "tensor": 1},
    {"data": 4, "fsdp": 1, "tensor": 2},
    {"data": 2, "fsdp": 2, "tensor": 2},
], ids=["data8", "fsdp8", "data4xtensor2", "data2xfsdp2xtensor2"])
@pytest.mark.slow
def test_sharded_equals_single_device(tmp_path, reference, mesh):
    ref_loss, ref_vars = reference
    got_loss, got_vars = _train(tmp_path, "sharded", mesh=make_mesh(mesh))
    assert sorted(got_loss) == list(range(1, STEPS + 1))
    np.testing.assert_allclose([got_loss[s] for s in sorted(got_loss)],
                               [ref_loss[s] for s in sorted(ref_loss)], rtol=2e-6, atol=2e-6)
    # Params after 3 AdamW steps agree leaf by leaf. (Adam divides by sqrt(v): for
    # coordinates whose gradient is ~0, reduction-order noise moves them by up to
    # ~1e-5 with lr 3e-3, hence atol.)
    _assert_params_close(got_vars, ref_vars)
    # ...and they moved away from the init (the test would be void otherwise).
    assert ref_loss[STEPS] < ref_loss[1]


@pytest.mark.slow
def test_grad_accumulation_equals_full_batch():
    """4 micro-batches of 4 rows (different token counts each) == one batch of 16.

    Tested on the step function itself: the loss is a token-weighted mean, so
    accumulation must weight micro-batches by their token counts to match.
    """
    import flax.linen as nn

    from jaxmm.train import build_task, make_train_step, resolve_config
    from jaxmm.train.optim import make_optimizer
    from jaxmm.train.steps import TrainState
    from jaxmm.train.synthetic import make_batch

    cfg = resolve_config(tiny_config("lm", {"optimizer.name": "adamw"}))
    task = build_task(cfg)
    tx, _ = make_optimizer(cfg)
    batches = [make_batch("text", i, 16, vocab_size=64, seq_len=16) for i in range(2)]
    counts = [b["attention_mask"][j::4].sum() for b in batches[:1] for j in range(4)]
    assert len(set(counts)) > 1  # micro-batches really hold different token counts
    params = nn.meta.unbox(task.init(jax.random.PRNGKey(0), batches[0]))["params"]

    def train(k):
        state = TrainState(step=jax.numpy.zeros((), "int32"), params=params, extra={},
                           opt_state=tx.init(params), rng=jax.random.PRNGKey(1))
        step = jax.jit(make_train_step(task, tx, accum_steps=k))
        out = []
        for b in batches:
            state, m = step(state, b, None)
            out.append(float(m["loss"]))
        return out, state.params

    full_loss, full_params = train(1)
    acc_loss, acc_params = train(4)
    np.testing.assert_allclose(acc_loss, full_loss, rtol=1e-6)
    _assert_params_close(acc_params, full_params)
