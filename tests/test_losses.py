"""Objectives against NumPy formulas / PyTorch, incl. sharded contrastive losses."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec

from jaxmm import losses
from jaxmm.sharding import make_mesh


def np_log_softmax(x):
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def np_normalize(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def test_cross_entropy_with_label_smoothing_matches_formula_and_torch(rng):
    torch = pytest.importorskip("torch")
    logits = rng.normal(size=(3, 5, 7)).astype(np.float32)
    labels = rng.integers(0, 7, size=(3, 5))
    labels[0, :2] = -100
    eps = 0.1
    got = float(losses.cross_entropy(logits, labels, label_smoothing=eps))
    # y_ls = (1 - eps) * one_hot + eps / K
    valid = labels != -100
    y = np.eye(7)[np.where(valid, labels, 0)] * (1 - eps) + eps / 7
    per = -(y * np_log_softmax(logits)).sum(-1)
    assert got == pytest.approx(per[valid].mean(), rel=1e-5)
    ref = torch.nn.functional.cross_entropy(
        torch.tensor(logits).reshape(-1, 7), torch.tensor(labels).reshape(-1),
        ignore_index=-100, label_smoothing=eps)
    assert got == pytest.approx(float(ref), rel=1e-5)
    summed = float(losses.cross_entropy(logits, labels, label_smoothing=eps, reduction="sum"))
    assert summed == pytest.approx(per[valid].sum(), rel=1e-5)
    none = np.asarray(losses.cross_entropy(logits, labels, reduction="none"))
    assert none.shape == (3, 5) and np.all(none[0, :2] == 0)


def test_cross_entropy_all_ignored_is_zero_not_nan():
    out = losses.cross_entropy(jnp.zeros((2, 3, 4)), jnp.full((2, 3), -100))
    assert float(out) == 0.0


def test_cross_entropy_shape_error():
    with pytest.raises(ValueError, match="need labels of shape"):
        losses.cross_entropy(jnp.zeros((2, 3, 4)), jnp.zeros((2, 4), jnp.int32))


def test_sequence_log_likelihood(rng):
    logits = rng.normal(size=(2, 4, 6)).astype(np.float32)
    labels = np.array([[1, 2, 3, -100], [0, 5, -100, -100]])
    ll, n = losses.sequence_log_likelihood(logits, labels)
    lp = np_log_softmax(logits)
    want = [lp[0, 0, 1] + lp[0, 1, 2] + lp[0, 2, 3], lp[1, 0, 0] + lp[1, 1, 5]]
    np.testing.assert_allclose(np.asarray(ll), want, rtol=1e-5)
    np.testing.assert_array_equal(np.asarray(n), [3, 2])


def np_infonce(a, b, log_scale):
    logits = np.exp(log_scale) * np_normalize(a) @ np_normalize(b).T
    idx = np.arange(len(a))
    i2t = -np_log_softmax(logits)[idx, idx].mean()
    t2i = -np_log_softmax(logits.T)[idx, idx].mean()
    return (i2t + t2i) / 2


def np_sigmoid(a, b, log_scale, bias):
    logits = np.exp(log_scale) * np_normalize(a) @ np_normalize(b).T + bias
    z = 2 * np.eye(len(a)) - 1
    return -np.log(1 / (1 + np.exp(-z * logits))).sum() / len(a)


def test_infonce_and_sigmoid_match_numpy(rng):
    a = rng.normal(size=(8, 16)).astype(np.float32)
    b = rng.normal(size=(8, 16)).astype(np.float32)
    assert float(losses.infonce_loss(a, b, np.log(10.0))) == pytest.approx(
        np_infonce(a, b, np.log(10.0)), rel=1e-5)
    assert float(losses.sigmoid_contrastive_loss(a, b, np.log(10.0), -10.0)) == pytest.approx(
        np_sigmoid(a, b, np.log(10.0), -10.0), rel=1e-5)
    # The scale is clipped at 100 as in CLIP.
    assert float(losses.infonce_loss(a, b, np.log(1000.0))) == pytest.approx(
        np_infonce(a, b, np.log(100.0)), rel=1e-5)


def np_negclip(a, b, neg, valid, log_scale):
    """NegCLIP by hand: image i's softmax over all captions plus the valid foils."""
    a, b, neg = np_normalize(a), np_normalize(b), np_normalize(neg)
    s = np.exp(log_scale)
    idx = np.arange(len(a))
    i2t = np.concatenate([s * a @ b.T, (s * a @ neg.T)[:, valid]], axis=1)
    t2i = s * b @ a.T
    return (-np_log_softmax(i2t)[idx, idx].mean() - np_log_softmax(t2i)[idx, idx].mean()) / 2


def np_sigmoid_negatives(a, b, neg, valid, log_scale, bias):
    logits = np.exp(log_scale) * np_normalize(a) @ np_normalize(neg)[valid].T + bias
    return np_sigmoid(a, b, log_scale, bias) + np.log1p(np.exp(logits)).sum() / len(a)


def test_hard_negatives_match_numpy_and_masked_ones_are_left_out(rng):
    a, b, neg = (rng.normal(size=(8, 16)).astype(np.float32) for _ in range(3))
    valid = np.array([1, 0, 1, 1, 0, 1, 1, 1], bool)
    got = losses.infonce_loss(a, b, np.log(10.0), negatives=neg, negative_mask=valid)
    assert float(got) == pytest.approx(np_negclip(a, b, neg, valid, np.log(10.0)), rel=1e-5)
    got = losses.sigmoid_contrastive_loss(a, b, np.log(10.0), -2.0, negatives=neg,
                                          negative_mask=valid)
    assert float(got) == pytest.approx(
        np_sigmoid_negatives(a, b, neg, valid, np.log(10.0), -2.0), rel=1e-5)
    # Foils make the task harder: the loss grows; with every foil masked it is plain CLIP.
    assert float(losses.infonce_loss(a, b, np.log(10.0), negatives=neg)) > float(
        losses.infonce_loss(a, b, np.log(10.0)))
    none = losses.infonce_loss(a, b, np.log(10.0), negatives=neg,
                               negative_mask=np.zeros(8, bool))
    assert float(none) == pytest.approx(np_infonce(a, b, np.log(10.0)), rel=1e-5)
    # Masked foils get no gradient, and nothing is NaN.
    grad = jax.grad(lambda n: losses.infonce_loss(a, b, np.log(10.0), negatives=n,
                                                  negative_mask=valid))(neg)
    assert np.isfinite(grad).all() and not np.asarray(grad)[~valid].any()
    assert np.abs(np.asarray(grad)[valid]).sum() > 0
    with pytest.raises(ValueError, match=r"negatives must be \(N, 16\)"):
        losses.infonce_loss(a, b, 1.0, negatives=neg[:, :4])
    with pytest.raises(ValueError, match="negative_mask must be"):
        losses.infonce_loss(a, b, 1.0, negatives=neg, negative_mask=valid[:3])


def test_contrastive_losses_use_the_global_batch_when_sharded(rng):
    """Batch sharded over 8 devices: jit over global arrays and shard_map with
    all_gather both equal the single-device loss (negatives span the global batch)."""
    a = rng.normal(size=(16, 8)).astype(np.float32)
    b = rng.normal(size=(16, 8)).astype(np.float32)
    want_nce = np_infonce(a, b, np.log(20.0))
    want_sig = np_sigmoid(a, b, np.log(20.0), -5.0)
    mesh = make_mesh(data=8)
    spec = PartitionSpec(("data", "fsdp"))
    sa = jax.device_put(a, NamedSharding(mesh, spec))
    sb = jax.device_put(b, NamedSharding(mesh, spec))
    got = jax.jit(lambda x, y: losses.infonce_loss(x, y, jnp.log(20.0)))(sa, sb)
    assert float(got) == pytest.approx(want_nce, rel=1e-5)

    @functools.partial(jax.shard_map, mesh=mesh, in_specs=(spec, spec), out_specs=PartitionSpec())
    def per_shard(x, y):
        nce = losses.infonce_loss(x, y, jnp.log(20.0), axis_name=("data", "fsdp"))
        sig = losses.sigmoid_contrastive_loss(x, y, jnp.log(20.0), -5.0,
                                              axis_name=("data", "fsdp"))
        # Hard negatives (here the other side, reversed) are gathered like the batch.
        neg = losses.infonce_loss(x, y, jnp.log(20.0), axis_name=("data", "fsdp"),
                                  negatives=2 * y[::-1])
        return jnp.stack([nce, sig, neg])

    nce, sig, neg = np.asarray(jax.jit(per_shard)(sa, sb))
    assert nce == pytest.approx(want_nce, rel=1e-5)
    assert sig == pytest.approx(want_sig, rel=1e-5)
    per_shard_rows = np.concatenate([2 * b[i:i + 2][::-1] for i in range(0, 16, 2)])
    assert neg == pytest.approx(np_negclip(a, b, per_shard_rows, np.ones(16, bool),
                                           np.log(20.0)), rel=1e-5)
    # A per-shard loss (local negatives only) would differ: the check has teeth.
    local = np.mean([np_infonce(a[i:i + 2], b[i:i + 2], np.log(20.0)) for i in range(0, 16, 2)])
    assert abs(local - want_nce) > 1e-2


@pytest.mark.slow
def test_triplet_loss(rng):
    a = rng.normal(size=(6, 4)).astype(np.float32)
    p = a + 0.1 * rng.normal(size=(6, 4)).astype(np.float32)
    n = rng.normal(size=(6, 4)).astype(np.float32)
    cos_d = lambda x, y: 1 - (np_normalize(x) * np_normalize(y)).sum(-1)  # noqa: E731
    want = np.maximum(cos_d(a, p) - cos_d(a, n) + 0.3, 0).mean()
    assert float(losses.triplet_loss(a, p, n, margin=0.3)) == pytest.approx(want, rel=1e-5)
    # In-batch hardest negatives (euclidean).
    d = np.linalg.norm(a[:, None] - p[None], axis=-1)
    hardest = np.where(np.eye(6, dtype=bool), np.inf, d).min(1)
    want = np.maximum(np.diag(d) - hardest + 0.5, 0).mean()
    got = losses.triplet_loss(a, p, margin=0.5, distance="euclidean")
    assert float(got) == pytest.approx(want, rel=1e-4)
    # Same-label rows are not negatives.
    labels = np.array([0, 0, 1, 1, 2, 2])
    valid = (labels[:, None] != labels[None]) & ~np.eye(6, dtype=bool)
    hinge = np.maximum(np.diag(d)[:, None] - d + 0.5, 0)
    want_all = hinge[valid].mean()
    got_all = losses.triplet_loss(a, p, margin=0.5, distance="euclidean", mining="all",
                                  labels=labels)
    assert float(got_all) == pytest.approx(want_all, rel=1e-4)


def test_itm_loss_and_negative_sampling(rng):
    logits = rng.normal(size=(5, 2)).astype(np.float32)
    match = np.array([1, 0, 1, 0, 0])
    want = -np_log_softmax(logits)[np.arange(5), match].mean()
    assert float(losses.itm_loss(logits, match)) == pytest.approx(want, rel=1e-5)
    z = rng.normal(size=(5,)).astype(np.float32)
    want = np.mean(np.log1p(np.exp(-z)) * match + np.log1p(np.exp(z)) * (1 - match))
    assert float(losses.itm_loss(z, match)) == pytest.approx(want, rel=1e-5)
    sim = jnp.asarray(rng.normal(size=(6, 6)) * 5, jnp.float32)
    t, i = losses.sample_itm_negatives(jax.random.key(0), sim)
    assert np.all(np.asarray(t) != np.arange(6)) and np.all(np.asarray(i) != np.arange(6))


def test_distillation_loss_formula_and_frozen_teacher(rng):
    s = rng.normal(size=(4, 6)).astype(np.float32)
    t = rng.normal(size=(4, 6)).astype(np.float32)
    y = np.array([0, 3, 5, 1])
    T, alpha = 3.0, 0.7
    pt = np.exp(np_log_softmax(t / T))
    kl = (pt * (np_log_softmax(t / T) - np_log_softmax(s / T))).sum(-1).mean()
    ce = -np_log_softmax(s)[np.arange(4), y].mean()
    want = alpha * T**2 * kl + (1 - alpha) * ce
    got = losses.distillation_loss(s, t, y, temperature=T, alpha=alpha)
    assert float(got) == pytest.approx(want, rel=1e-5)
    g_teacher = jax.grad(lambda tt: losses.distillation_loss(s, tt, y))(t)
    assert np.all(np.asarray(g_teacher) == 0)
    # Soft-only term is zero when the student equals the teacher.
    assert float(losses.distillation_loss(t, t)) == pytest.approx(0.0, abs=1e-6)


def test_feature_matching(rng):
    s = rng.normal(size=(2, 3, 4)).astype(np.float32)
    t = rng.normal(size=(2, 3, 4)).astype(np.float32)
    mask = np.array([[1, 1, 0], [1, 0, 0]])
    per = ((s - t) ** 2).mean(-1)
    assert float(losses.feature_matching_loss(s, t, mask=mask)) == pytest.approx(
        per[mask == 1].mean(), rel=1e-5)
    cos = 1 - (np_normalize(s) * np_normalize(t)).sum(-1)
    assert float(losses.feature_matching_loss(s, t, kind="cosine")) == pytest.approx(
        cos.mean(), rel=1e-5)
    with pytest.raises(ValueError, match="project the student"):
        losses.feature_matching_loss(s, t[..., :2])


@pytest.mark.slow
def test_mlm_mask_statistics_and_determinism():
    vocab, mask_id, cls_id, sep_id, pad_id = 1000, 3, 1, 2, 0
    ids = np.random.default_rng(0).integers(10, vocab, size=(256, 128))
    ids[:, 0], ids[:, -1] = cls_id, sep_id
    ids[:, 100:127] = pad_id
    attn = (ids != pad_id).astype(np.int32)
    kwargs = dict(mask_token_id=mask_id, vocab_size=vocab, special_ids=(cls_id, sep_id),
                  attention_mask=attn)
    out, labels = losses.mlm_mask(jax.random.key(0), ids, **kwargs)
    out2, labels2 = losses.mlm_mask(jax.random.key(0), ids, **kwargs)
    np.testing.assert_array_equal(out, out2)
    np.testing.assert_array_equal(labels, labels2)
    out, labels = np.asarray(out), np.asarray(labels)
    selected = labels != -100
    eligible = (attn == 1) & (ids != cls_id) & (ids != sep_id)
    assert not np.any(selected & ~eligible)  # never special tokens or padding
    np.testing.assert_array_equal(labels[selected], ids[selected])
    np.testing.assert_array_equal(out[~selected], ids[~selected])
    rate = selected.sum() / eligible.sum()
    assert rate == pytest.approx(0.15, abs=0.01)
    masked = (out == mask_id) & selected
    kept = (out == ids) & selected
    assert masked.sum() / selected.sum() == pytest.approx(0.8, abs=0.02)
    # Random replacements are ~10%; a random token can equal the original (1/vocab).
    assert kept.sum() / selected.sum() == pytest.approx(0.1, abs=0.02)


def test_nsp_pairs():
    docs = [[f"d{d}s{s}" for s in range(5)] for d in range(40)]
    pairs = losses.make_nsp_pairs(docs, seed=1)
    assert pairs == losses.make_nsp_pairs(docs, seed=1)
    assert len(pairs) == 40 * 4
    for a, b, label in pairs:
        da, sa = a[1:].split("s")
        db, sb = b[1:].split("s")
        if label == 0:
            assert (da, int(sa) + 1) == (db, int(sb))
        else:
            assert da != db
    frac = np.mean([p[2] for p in pairs])
    assert 0.4 < frac < 0.6
    with pytest.raises(ValueError, match="at least two"):
        losses.make_nsp_pairs([["only"]])
