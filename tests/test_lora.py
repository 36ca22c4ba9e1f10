"""LoRA (jaxmm.lora) as a params transform, and in the trainer (config ``lora`` block)."""

from __future__ import annotations

import functools
import json
import math
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from jaxmm import lora
from jaxmm.config import ConfigError
from jaxmm.models import registry
from jaxmm.models.gpt import GPTConfig
from tests.train.helpers import losses, tiny_config, write_config


@functools.cache
def _tiny_gpt():
    cfg = GPTConfig.from_size("tiny", vocab_size=128, d_model=32, num_heads=2, mlp_dim=64,
                              max_position_embeddings=64, bos_token_id=1, eos_token_id=2)
    model = registry.build("gpt", cfg.to_dict())
    ids = jax.random.randint(jax.random.PRNGKey(1), (2, 12), 0, 128)
    params = nn.meta.unbox(model.init(jax.random.PRNGKey(0), ids)["params"])
    return model, params, ids


def _random_b(adapters, seed=3):
    """Adapters with random (non-zero) B factors, so the update is not zero."""
    flat = traverse_util.flatten_dict(adapters, sep="/")
    rs = np.random.RandomState(seed)
    for k in sorted(flat):
        if k.endswith("lora_b"):
            flat[k] = (0.05 * rs.standard_normal(flat[k].shape)).astype(np.float32)
    return traverse_util.unflatten_dict(flat, sep="/")


def _init(params, cfg, seed=2):
    """``lora.init_adapters`` compiled once (as the trainer runs it), not op by op."""
    return jax.jit(lambda p, k: lora.init_adapters(p, k, cfg))(params, jax.random.PRNGKey(seed))


def _merge(params, adapters, scale):
    return jax.jit(lambda p, a: lora.merge(p, a, scale))(params, adapters)


def _unmerged_forward(model, params, adapters, scale, ids):
    """Reference LoRA forward as PEFT computes it: every adapted layer returns
    ``base(x) + scale * (x @ A) @ B`` on its *activations* (Flax method interception),
    while the model runs on the unchanged base params."""
    flat = traverse_util.flatten_dict(adapters, sep="/")
    seen = []

    def interceptor(next_fun, args, kwargs, context):
        out = next_fun(*args, **kwargs)
        path = "/".join(context.module.scope.path) + "/kernel"
        if context.method_name != "__call__" or path + "/lora_a" not in flat:
            return out
        x = args[0]
        _, n_in, _ = lora.kernel_layout(path, context.module.variables["params"]["kernel"].shape)
        x2 = x.reshape(*x.shape[: x.ndim - n_in], -1)
        y = (x2 @ flat[path + "/lora_a"]) @ flat[path + "/lora_b"]
        seen.append(path)
        return out + scale * y.reshape(out.shape)

    with nn.intercept_methods(interceptor):
        logits = model.apply({"params": params}, ids).logits
    return logits, seen


def test_init_merged_equals_base_and_shapes():
    model, params, ids = _tiny_gpt()
    cfg = lora.LoraConfig(rank=4, alpha=8.0)
    adapters = _init(params, cfg)
    merged = _merge(params, adapters, cfg.scale)
    # B = 0: the merged params are the base params, bit for bit, and so are the logits.
    for a, b in zip(jax.tree.leaves(merged), jax.tree.leaves(params), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    np.testing.assert_array_equal(model.apply({"params": merged}, ids).logits,
                                  model.apply({"params": params}, ids).logits)
    flat = traverse_util.flatten_dict(adapters, sep="/")
    # 2 layers x (query, key, value, out, wi, wo), each with A and B.
    assert len(flat) == 2 * 6 * 2
    q = "model/decoder/layers_0/layer/self_attention/query/kernel"
    o = "model/decoder/layers_0/layer/self_attention/out/kernel"
    assert flat[q + "/lora_a"].shape == (32, 4) and flat[q + "/lora_b"].shape == (4, 32)
    assert flat[o + "/lora_a"].shape == (32, 4) and flat[o + "/lora_b"].shape == (4, 32)
    assert not np.any(np.asarray(flat[q + "/lora_b"]))
    bound = 1 / math.sqrt(32)  # kaiming-uniform A, as PEFT
    assert np.abs(np.asarray(flat[q + "/lora_a"])).max() <= bound


def test_merged_logits_equal_unmerged_lora_forward():
    model, params, ids = _tiny_gpt()
    cfg = lora.LoraConfig(rank=4, alpha=8.0)
    adapters = _random_b(_init(params, cfg))
    merged = model.apply({"params": _merge(params, adapters, cfg.scale)}, ids).logits
    ref, seen = _unmerged_forward(model, params, adapters, cfg.scale, ids)
    assert len(seen) == 12  # every adapted layer took the LoRA path
    base = model.apply({"params": params}, ids).logits
    assert float(jnp.abs(merged - base).max()) > 1e-3  # the adapters do change the output
    np.testing.assert_allclose(merged, ref, atol=2e-5, rtol=1e-5)


def test_scan_layers_stacked_kernels_get_per_layer_adapters():
    """``scan_layers`` stacks each kernel on a leading ``layers`` axis: one adapter per
    layer, and each layer's slice merges to ``W_l + A_l @ B_l``."""
    rs = np.random.RandomState(0)
    params = {"decoder": {"layers": {
        "mlp": {"wi": {"kernel": rs.standard_normal((2, 8, 16)).astype(np.float32)}},
        "attention": {"out": {"kernel": rs.standard_normal((2, 2, 4, 8)).astype(np.float32)}}}}}
    adapters = _random_b(_init(params, lora.LoraConfig(rank=2)))
    flat = traverse_util.flatten_dict(adapters, sep="/")
    wi, out = "decoder/layers/mlp/wi/kernel", "decoder/layers/attention/out/kernel"
    assert flat[wi + "/lora_a"].shape == (2, 8, 2) and flat[wi + "/lora_b"].shape == (2, 2, 16)
    assert flat[out + "/lora_a"].shape == (2, 8, 2) and flat[out + "/lora_b"].shape == (2, 2, 8)
    merged = traverse_util.flatten_dict(_merge(params, adapters, 0.5), sep="/")
    base = traverse_util.flatten_dict(params, sep="/")
    for path in (wi, out):
        a, b, w = np.asarray(flat[path + "/lora_a"]), np.asarray(flat[path + "/lora_b"]), base[path]
        for layer in range(2):
            want = np.asarray(w[layer]) + 0.5 * (a[layer] @ b[layer]).reshape(w.shape[1:])
            np.testing.assert_allclose(merged[path][layer], want, atol=1e-6)


def test_no_kernel_matched_and_bad_config_are_one_line_errors():
    _, params, _ = _tiny_gpt()
    with pytest.raises(ConfigError, match="match no kernel"):
        lora.init_adapters(params, jax.random.PRNGKey(0), lora.LoraConfig(targets=("nope",)))
    with pytest.raises(ConfigError, match="rank"):
        lora.LoraConfig(rank=0)
    from jaxmm.train.run_config import resolve_config

    with pytest.raises(ConfigError, match="Unknown config key 'lora.rnk'"):
        resolve_config(tiny_config("lm", {"lora.rnk": 4}))


def test_train_steps_change_only_adapters_and_optimizer_state_is_adapter_sized():
    from jaxmm.train.build import build_run

    built = build_run(tiny_config("lm", {"lora.rank": 4, "optimizer.learning_rate": 1e-2}))
    state = built.init_state()
    base0 = jax.device_get(state.params)
    extra0 = jax.device_get(state.extra)
    lora0 = jax.device_get(state.lora)
    batches = built.batches(built.config.data, "train", built.config.batch_size,
                            shuffle=True, repeat=True)
    with jax.set_mesh(built.mesh):
        for _ in range(3):
            state, metrics = built.train_step(state, next(batches), built.constants)
    assert int(state.step) == 3 and np.isfinite(float(metrics["loss"]))
    # The frozen base is bit-identical; every adapter factor moved.
    for a, b in zip(jax.tree.leaves(jax.device_get(state.params)), jax.tree.leaves(base0),
                    strict=True):
        np.testing.assert_array_equal(a, b)
    assert jax.tree.structure(jax.device_get(state.extra)) == jax.tree.structure(extra0)
    for new, old in zip(jax.tree.leaves(jax.device_get(state.lora)), jax.tree.leaves(lora0),
                        strict=True):
        assert not np.array_equal(new, old)
    # AdamW keeps two moments per trained scalar (plus scalar counts): adapters only.
    adapter_n = lora.num_params(state.lora)
    r, d, mlp, layers = 4, 32, 64, 1  # tests/train/tiny_models.py TinyConfig
    assert adapter_n == layers * (4 * (d * r + r * d) + (d * r + r * mlp) + (mlp * r + r * d))
    moments = sum(x.size for x in jax.tree.leaves(state.opt_state) if x.ndim)
    assert moments == 2 * adapter_n
    full_opt = jax.eval_shape(built.tx.init, built.abstract_state.params)  # full fine-tuning
    full_moments = sum(math.prod(x.shape) for x in jax.tree.leaves(full_opt) if len(x.shape))
    assert full_moments == 2 * built.num_params
    assert built.num_trainable == adapter_n < built.num_params / 3
    # What evaluation/export see: the merged params.
    merged = jax.device_get(state.variables["params"])
    assert not np.array_equal(jax.tree.leaves(merged), jax.tree.leaves(base0))


@pytest.mark.slow
def test_jaxmm_train_with_lora_learns_resumes_exactly_and_exports_merged(tmp_path):
    """``jaxmm train`` with a ``lora`` block: loss falls; a run split in two (resumed
    from the checkpoint holding the adapters) ends bit-identical to one straight run;
    the export holds the merged params; evaluating the checkpoint (base + adapters,
    merged) gives the export's metrics."""
    from jaxmm import cli
    from jaxmm.train import evaluate_checkpoint, load_run_config
    from jaxmm.train.checkpoint import Checkpointer, load_exported

    over = {"lora.rank": 8, "num_steps": 30, "optimizer.learning_rate": 3e-2,
            "checkpoint.every_steps": 15, "checkpoint.async_save": False,
            "checkpoint.export_params": True}
    cfg = write_config(tmp_path / "lora_cfg.py", "lm", over)
    straight, split = str(tmp_path / "straight"), str(tmp_path / "split")
    assert cli.main(["train", "--config", cfg, "--workdir", straight]) == 0
    loss = losses(straight)
    first = np.mean([loss[s] for s in range(1, 6)])
    last = np.mean([loss[s] for s in range(26, 31)])
    assert last < first - 0.03, (first, last)
    assert cli.main(["train", "--config", cfg, "--workdir", split,
                     "--config.num_steps=15"]) == 0
    assert cli.main(["train", "--config", cfg, "--workdir", split]) == 0
    with open(os.path.join(split, "summary.json")) as f:
        assert json.load(f)["step"] == 30

    def saved(workdir):
        ck = Checkpointer(os.path.join(workdir, "checkpoints"), create=False)
        try:
            return jax.device_get(ck.restore_variables(30))
        finally:
            ck.close()

    a, b = saved(straight), saved(split)
    assert "lora" in a
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(x, y)
    _, exported = load_exported(os.path.join(straight, "export"))
    merged = lora.merge(a["params"], a["lora"], 16.0 / 8)
    assert "lora" not in exported
    for x, y in zip(jax.tree.leaves(exported["params"]), jax.tree.leaves(merged), strict=True):
        np.testing.assert_allclose(x, y, atol=1e-6)
    run_cfg = load_run_config(cfg)
    from_ckpt = evaluate_checkpoint(run_cfg, straight)["metrics"]
    from_export = evaluate_checkpoint(run_cfg, straight,
                                      params_dir=os.path.join(straight, "export"))["metrics"]
    assert from_ckpt.keys() == from_export.keys() and "loss" in from_ckpt
    for key in from_ckpt:
        assert from_ckpt[key] == pytest.approx(from_export[key], rel=1e-5), key


def test_train_full_trains_a_new_head_with_the_adapters():
    """``lora.train_full`` (PEFT's modules_to_save): the classifier head is trained in
    full next to the adapters; the base copy of it stays frozen."""
    from jaxmm.train.build import build_run

    built = build_run(tiny_config("classification", {
        "lora.rank": 2, "lora.train_full": ("^head/",), "optimizer.learning_rate": 1e-2}))
    state = built.init_state()
    base0 = jax.device_get(state.params)
    head = {k: np.asarray(v) for k, v in base0["head"].items()}
    np.testing.assert_array_equal(state.lora["head"]["kernel"]["full"], head["kernel"])
    batches = built.batches(built.config.data, "train", built.config.batch_size,
                            shuffle=True, repeat=True)
    with jax.set_mesh(built.mesh):
        for _ in range(2):
            state, _ = built.train_step(state, next(batches), built.constants)
    for a, b in zip(jax.tree.leaves(jax.device_get(state.params)), jax.tree.leaves(base0),
                    strict=True):
        np.testing.assert_array_equal(a, b)
    merged_head = jax.device_get(state.variables["params"]["head"])
    for name in ("kernel", "bias"):
        assert not np.array_equal(merged_head[name], head[name])
        np.testing.assert_array_equal(merged_head[name], state.lora["head"][name]["full"])
    assert built.num_trainable == lora.num_params(state.lora) >= sum(x.size for x in head.values())
    with pytest.raises(ConfigError, match="train_full .* matches no param"):
        build_run(tiny_config("classification", {"lora.rank": 2, "lora.train_full": ("nope",)}))
