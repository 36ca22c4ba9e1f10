"""BERT/RoBERTa: parity with transformers for every head, layouts, errors, learning."""

import dataclasses
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxmm import convert, losses, sharding
from jaxmm.config import ConfigError
from jaxmm.layers import stack_layer_params
from jaxmm.models import bert as B
from jaxmm.models import build

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

HEADS = {
    "bert": ["Model", "ForMaskedLM", "ForPreTraining", "ForNextSentencePrediction",
             "ForSequenceClassification", "ForTokenClassification", "ForQuestionAnswering"],
    "roberta": ["Model", "ForMaskedLM", "ForSequenceClassification", "ForTokenClassification",
                "ForQuestionAnswering"],
}
CASES = [(family, head) for family, heads in HEADS.items() for head in heads]
# HF output field -> jaxmm output field.
FIELDS = {"last_hidden_state": "last_hidden_state", "pooler_output": "pooler_output",
          "logits": "logits", "prediction_logits": "prediction_logits",
          "seq_relationship_logits": "seq_relationship_logits",
          "start_logits": "start_logits", "end_logits": "end_logits"}


def hf_config(family: str, **kw):
    common = dict(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                  intermediate_size=37, hidden_act="gelu", attn_implementation="eager")
    common.update(kw)
    if family == "roberta":
        return transformers.RobertaConfig(max_position_embeddings=34, type_vocab_size=1,
                                          layer_norm_eps=1e-5, **common)
    return transformers.BertConfig(max_position_embeddings=32, **common)


def perturb(model, seed=0):
    """Random weights large enough that every head's logits are O(1)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.1)
    return model.eval()


def padded_batch(pad_id: int, type_vocab: int):
    rs = np.random.default_rng(1)
    ids = rs.integers(3, 99, (3, 11))
    mask = np.ones_like(ids)
    mask[1, 7:] = 0
    mask[2, 4:] = 0
    ids = np.where(mask == 1, ids, pad_id).astype(np.int32)
    types = np.zeros_like(ids) if type_vocab == 1 else (np.arange(11) >= 5).astype(np.int32)
    return ids, mask.astype(np.int32), np.broadcast_to(types, ids.shape).copy()


def _tiny(name="bert_mlm", **kw) -> nn.Module:
    kw = {"vocab_size": 40, "max_position_embeddings": 24, "num_layers": 2, "d_model": 32,
          "num_heads": 4, "mlp_dim": 64, **kw}
    return build(name, "tiny", **kw)


@pytest.fixture(scope="module")
def hf_folders(tmp_path_factory):
    """Every (family, head): a saved tiny HF model and its reference outputs."""
    out = {}
    for family, head in CASES:
        cfg = hf_config(family, num_labels=2 if head == "ForQuestionAnswering" else 3)
        torch.manual_seed(0)
        model = perturb(getattr(transformers, f"{family.capitalize()}{head}")(cfg))
        folder = tmp_path_factory.mktemp(f"{family}_{head}")
        model.save_pretrained(folder)
        ids, mask, types = padded_batch(cfg.pad_token_id, cfg.type_vocab_size)
        with torch.no_grad():
            ref = model(torch.tensor(ids, dtype=torch.long), attention_mask=torch.tensor(mask),
                        token_type_ids=torch.tensor(types, dtype=torch.long),
                        output_hidden_states=True, output_attentions=True)
        out[family, head] = (str(folder), (ids, mask, types), ref, model)
    return out


@pytest.mark.parametrize("family,head", CASES, ids=[f"{f}-{h}" for f, h in CASES])
def test_every_head_matches_transformers(hf_folders, family, head):
    folder, (ids, mask, types), ref, hf_model = hf_folders[family, head]
    conv = convert.from_hf(folder)
    assert not conv.config.scan_layers and conv.config.model_type == family
    out = conv.model.apply({"params": conv.params}, ids, attention_mask=mask,
                           token_type_ids=types, output_hidden_states=True,
                           output_attentions=True)
    compared = 0
    for hf_name, name in FIELDS.items():
        if hf_name in ref and ref[hf_name] is not None:
            got = np.asarray(getattr(out, name))
            want = ref[hf_name].numpy()
            assert got.shape == want.shape, name
            assert np.abs(want).max() > 0.05, f"{name} too small to be a useful check"
            np.testing.assert_allclose(got, want, atol=1e-4, rtol=0, err_msg=name)
            compared += 1
    assert compared >= 1
    assert len(out.hidden_states) == len(ref.hidden_states) == 3
    for got, want in zip(out.hidden_states, ref.hidden_states):
        np.testing.assert_allclose(np.asarray(got), want.numpy(), atol=1e-4, rtol=0)
    for got, want in zip(out.attentions, ref.attentions):
        np.testing.assert_allclose(np.asarray(got), want.numpy(), atol=1e-5, rtol=0)
    # The scan layout holds the same tensors, stacked on a leading layer axis.
    scan = convert.from_hf(folder, scan_layers=True)
    inner = (lambda p: p["bert"]) if "bert" in conv.params else (lambda p: p)
    stacked = stack_layer_params(inner(conv.params)["encoder"], 2)
    jax.tree.map(np.testing.assert_array_equal, inner(scan.params)["encoder"], stacked)
    if (family, head) == ("bert", "ForPreTraining"):  # one scan forward (scan == loop)
        again = scan.model.apply({"params": scan.params}, ids, attention_mask=mask,
                                 token_type_ids=types)
        np.testing.assert_allclose(again.prediction_logits, out.prediction_logits, atol=1e-5)
    if head == "Model" and family == "roberta":  # left padding: positions skip the pads
        left = np.stack([np.roll(r, int((m == 0).sum())) for r, m in zip(ids, mask)])
        left_mask = np.stack([np.roll(m, int((m == 0).sum())) for m in mask])
        with torch.no_grad():
            want = hf_model(torch.tensor(left, dtype=torch.long),
                            attention_mask=torch.tensor(left_mask)).last_hidden_state.numpy()
        got = conv.model.apply({"params": conv.params}, left, attention_mask=left_mask)
        real = left_mask == 1
        np.testing.assert_allclose(np.asarray(got.last_hidden_state)[real], want[real],
                                   atol=1e-4, rtol=0)
        np.testing.assert_allclose(np.asarray(got.last_hidden_state)[real],
                                   np.asarray(out.last_hidden_state)[mask == 1], atol=1e-4)


def test_roberta_positions_follow_hf_and_skip_padding():
    from transformers.models.roberta.modeling_roberta import RobertaEmbeddings

    ids = np.array([[0, 5, 6, 2, 1, 1], [1, 1, 0, 7, 8, 2]], np.int32)  # right and left pad
    want = RobertaEmbeddings.create_position_ids_from_input_ids(torch.tensor(ids), 1).numpy()
    got = np.asarray(B.roberta_position_ids(jnp.asarray(ids), 1))
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(got[1], [1, 1, 2, 3, 4, 5])


@pytest.mark.slow
def test_scan_remat_and_loop_agree_in_outputs_and_gradients(rng):
    loop = _tiny()
    scan = _tiny(scan_layers=True, remat_policy="full")
    ids = rng.integers(0, 40, (2, 9)).astype(np.int32)
    params = nn.meta.unbox(loop.init(jax.random.key(0), ids))["params"]
    sparams = dict(params, bert={**params["bert"],
                                 "encoder": stack_layer_params(params["bert"]["encoder"], 2)})
    assert jax.tree.map(jnp.shape, nn.meta.unbox(jax.eval_shape(
        lambda: scan.init(jax.random.key(0), ids)))["params"]) == jax.tree.map(jnp.shape, sparams)

    def loss(model):
        return jax.jit(jax.value_and_grad(
            lambda p, x: jnp.mean(model.apply({"params": p}, x).logits ** 2)))

    la, ga = loss(loop)(params, ids)
    lb, gb = loss(scan)(sparams, ids)
    np.testing.assert_allclose(la, lb, rtol=1e-5)
    ga = dict(ga, bert={**ga["bert"], "encoder": stack_layer_params(ga["bert"]["encoder"], 2)})
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5), ga, gb)


@pytest.fixture(scope="module")
def tiny_bert():
    model = _tiny("bert")
    return model, model.init(jax.random.key(0), np.zeros((1, 8), np.int32))["params"]


def test_bfloat16_compute_stays_close_to_float32(rng, tiny_bert):
    ids = rng.integers(0, 40, (2, 9)).astype(np.int32)
    (f32, params), bf16 = tiny_bert, _tiny("bert", dtype="bfloat16")
    run = lambda m: jax.jit(lambda p, x: m.apply({"params": p}, x).last_hidden_state)  # noqa: E731
    a, b = run(f32)(params, ids), run(bf16)(params, ids)
    assert b.dtype == jnp.bfloat16
    assert float(jnp.abs(a - b.astype(jnp.float32)).max()) < 0.1


def test_sizes_match_hf_parameter_counts():
    # bert-base-uncased has 109,482,240 parameters (BertModel with pooler).
    hf_base = sum(p.numel() for p in transformers.BertModel(transformers.BertConfig())
                  .parameters())
    for size, want in [("base", hf_base)]:
        model = build("bert", size)
        shapes = jax.eval_shape(lambda m=model: m.init(jax.random.key(0),
                                                       np.zeros((1, 4), np.int32)))
        assert sum(np.prod(s.shape) for s in jax.tree.leaves(shapes)) == want
    cfg = B.BertConfig.from_size("large")
    assert (cfg.num_layers, cfg.d_model, cfg.num_heads, cfg.mlp_dim) == (24, 1024, 16, 4096)


def test_input_longer_than_position_table_raises(tiny_bert):
    bert, params = tiny_bert
    ids = np.zeros((1, 25), np.int32)  # table holds 24
    with pytest.raises(ValueError, match=r"Input length 25 exceeds .*at most 24 tokens"):
        bert.apply({"params": params}, ids)
    with pytest.raises(ValueError, match="exceeds"):  # static check also under jit
        jax.jit(lambda p, x: bert.apply({"params": p}, x))(params, ids)
    roberta = build("roberta", "tiny", vocab_size=40, max_position_embeddings=24)
    with pytest.raises(ValueError, match="at most 22 tokens"):  # positions start at pad+1
        roberta.init(jax.random.key(0), np.ones((1, 23), np.int32))


def test_bad_inputs_raise_clear_errors(tiny_bert):
    bert, params = tiny_bert
    ids = np.ones((2, 5), np.int32)
    apply = lambda *a, **k: bert.apply({"params": params}, *a, **k)  # noqa: E731
    with pytest.raises(ValueError, match="token_type_ids .*type_vocab_size=2"):
        apply(ids, token_type_ids=np.full_like(ids, 2))
    with pytest.raises(ValueError, match="vocab_size is 40"):
        apply(ids + 40)
    with pytest.raises(ValueError, match="attention_mask must have the shape"):
        apply(ids, attention_mask=np.ones((2, 4), np.int32))
    with pytest.raises(ValueError, match=r"\(batch, length\)"):
        apply(ids[0])
    with pytest.raises(ConfigError, match="num_layers"):
        B.BertConfig.from_dict({"num_layer": 2})
    with pytest.raises(ConfigError, match="model_type"):
        B.BertConfig(model_type="albert")
    with pytest.raises(ConfigError, match="activation"):
        B.BertConfig(activation="gelu_fancy")


@pytest.mark.slow
def test_dropout_is_active_only_when_not_deterministic(rng):
    model = _tiny("bert_classifier", dropout_rate=0.3, num_layers=1)
    ids = rng.integers(0, 40, (2, 9)).astype(np.int32)
    params = model.init(jax.random.key(0), ids)["params"]

    @functools.partial(jax.jit, static_argnums=3)  # arguments, not constants: no folding
    def run(p, x, key, deterministic):
        return model.apply({"params": p}, x, deterministic=deterministic,
                           rngs={"dropout": key}).logits

    det = run(params, ids, jax.random.key(0), True)
    np.testing.assert_array_equal(det, run(params, ids, jax.random.key(5), True))  # rng unused
    drop = lambda k: run(params, ids, jax.random.key(k), False)  # noqa: E731
    assert not np.allclose(drop(1), det) and not np.allclose(drop(1), drop(2))
    np.testing.assert_array_equal(drop(1), drop(1))


@pytest.mark.slow
def test_sharded_init_and_apply_match_unsharded(rng):
    mesh = sharding.make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
    model = _tiny("bert_mlm")
    ids = rng.integers(0, 40, (4, 8)).astype(np.int32)
    variables, shardings = sharding.init_sharded(model, jax.random.key(0), ids, mesh=mesh)
    emb = shardings["params"]["bert"]["embeddings"]["word_embeddings"]["embedding"]
    assert emb.spec == jax.sharding.PartitionSpec("tensor", "fsdp")
    with jax.set_mesh(mesh), nn.logical_axis_rules(sharding.DEFAULT_RULES):
        got = jax.jit(lambda v, x: model.apply(v, x).logits)(variables, ids)
    host = jax.tree.map(np.asarray, variables)
    np.testing.assert_allclose(got, model.apply(host, ids).logits, atol=1e-5)


def test_sequence_classification_loss_matches_torch(rng):
    logits = rng.normal(size=(4, 3)).astype(np.float32)
    cfg = B.BertConfig(num_labels=3)
    cls = rng.integers(0, 3, 4)
    t = torch.tensor(logits)
    want = torch.nn.functional.cross_entropy(t, torch.tensor(cls)).item()
    np.testing.assert_allclose(B.sequence_classification_loss(cfg, logits, cls), want, rtol=1e-5)
    multi = rng.integers(0, 2, (4, 3)).astype(np.float32)
    want = torch.nn.functional.binary_cross_entropy_with_logits(t, torch.tensor(multi)).item()
    np.testing.assert_allclose(B.sequence_classification_loss(cfg, logits, multi), want,
                               rtol=1e-5)
    reg = dataclasses.replace(cfg, num_labels=1)
    target = rng.normal(size=4).astype(np.float32)
    want = torch.nn.functional.mse_loss(t[:, 0], torch.tensor(target)).item()
    np.testing.assert_allclose(B.sequence_classification_loss(reg, logits[:, :1], target), want,
                               rtol=1e-5)


# ---------------------------------------------------------------------------
# Learning: a tiny BERT learns MLM and a classification task with optax.
# ---------------------------------------------------------------------------

PAD, CLS, SEP, MASK, FIRST = 0, 1, 2, 3, 4  # content tokens are FIRST..FIRST+N-1
N_CONTENT = 28


def progressions(rs, n, length=14):
    """[CLS] a, a+s, a+2s, ... (mod N) [SEP]: every token follows from its neighbours."""
    start = rs.integers(0, N_CONTENT, (n, 1))
    step = rs.integers(1, 3, (n, 1))
    body = FIRST + (start + step * np.arange(length - 2)) % N_CONTENT
    return np.concatenate([np.full((n, 1), CLS), body, np.full((n, 1), SEP)], 1).astype(np.int32)


@pytest.mark.slow
def test_tiny_bert_learns_masked_lm():
    model = _tiny("bert_mlm", vocab_size=FIRST + N_CONTENT, dropout_rate=0.0,
                  attention_dropout_rate=0.0, num_layers=1, d_model=64, mlp_dim=128)
    rs = np.random.default_rng(0)
    params = model.init(jax.random.key(0), progressions(rs, 2))["params"]
    opt = optax.adamw(3e-3, weight_decay=0.01)
    state = opt.init(params)

    def loss_fn(p, ids, key):
        masked, labels = losses.mlm_mask(key, ids, mask_token_id=MASK,
                                         vocab_size=FIRST + N_CONTENT, special_ids=(CLS, SEP),
                                         mlm_probability=0.2)
        logits = model.apply({"params": p}, masked).logits
        hit = (logits.argmax(-1) == labels) & (labels != -100)
        acc = hit.sum() / jnp.maximum((labels != -100).sum(), 1)
        return losses.cross_entropy(logits, labels), acc

    @jax.jit
    def step(p, s, ids, key):
        (loss, acc), g = jax.value_and_grad(loss_fn, has_aux=True)(p, ids, key)
        updates, s = opt.update(g, s, p)
        return optax.apply_updates(p, updates), s, loss, acc

    key = jax.random.key(1)
    history = []
    for _ in range(300):
        key, sub = jax.random.split(key)
        params, state, loss, acc = step(params, state, progressions(rs, 32), sub)
        history.append((float(loss), float(acc)))
    # Each batch is new data, measured before the update on it: held-out metrics.
    start, end = np.mean(history[:10], 0), np.mean(history[-20:], 0)
    assert start[0] > 0.9 * np.log(N_CONTENT)  # starts at chance
    assert end[0] < 0.4 * start[0]
    assert end[1] > 0.6  # chance is 1/28


@pytest.mark.slow
def test_tiny_bert_learns_sequence_classification():
    """Label: does the sequence contain token 5 more often than token 6?"""
    model = _tiny("bert_classifier", num_labels=2, vocab_size=12, dropout_rate=0.0,
                  attention_dropout_rate=0.0, num_layers=1)
    rs = np.random.default_rng(0)

    def batch(n):
        ids = rs.integers(4, 12, (n, 10)).astype(np.int32)
        ids[:, 0] = CLS
        label = ((ids == 5).sum(1) > (ids == 6).sum(1)).astype(np.int32)
        return ids, label

    params = model.init(jax.random.key(0), batch(2)[0])["params"]
    opt = optax.adam(2e-3)
    state = opt.init(params)
    cfg = model.config

    @jax.jit
    def step(p, s, ids, y):
        loss, g = jax.value_and_grad(lambda p: B.sequence_classification_loss(
            cfg, model.apply({"params": p}, ids).logits, y))(p)
        updates, s = opt.update(g, s, p)
        return optax.apply_updates(p, updates), s, loss

    for _ in range(150):
        params, state, _ = step(params, state, *batch(32))
    ids, y = batch(512)
    pred = np.asarray(model.apply({"params": params}, ids).logits.argmax(-1))
    assert (pred == y).mean() > 0.9  # majority class is ~0.6
