"""DETR's set criterion against an independent NumPy + scipy re-computation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment

from jaxmm import losses


def np_giou(a, b):
    """One pair of cxcywh boxes."""
    a = [a[0] - a[2] / 2, a[1] - a[3] / 2, a[0] + a[2] / 2, a[1] + a[3] / 2]
    b = [b[0] - b[2] / 2, b[1] - b[3] / 2, b[0] + b[2] / 2, b[1] + b[3] / 2]
    inter = (max(0, min(a[2], b[2]) - max(a[0], b[0]))
             * max(0, min(a[3], b[3]) - max(a[1], b[1])))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    hull = (max(a[2], b[2]) - min(a[0], b[0])) * (max(a[3], b[3]) - min(a[1], b[1]))
    return inter / union - (hull - union) / hull


def np_detr_layer(logits, pred, labels, boxes, mask, eos, w):
    b_, q_, k = logits.shape
    prob = np.exp(logits - logits.max(-1, keepdims=True))
    prob /= prob.sum(-1, keepdims=True)
    logp = np.log(prob)
    num = max(mask.sum(), 1)
    ce_num = ce_den = l1 = giou = 0.0
    for b in range(b_):
        real = np.flatnonzero(mask[b])
        cls = np.full(q_, k - 1)
        if real.size:
            cost = np.array([[w[0] * -prob[b, q, labels[b, n]]
                              + w[1] * np.abs(pred[b, q] - boxes[b, n]).sum()
                              + w[2] * -np_giou(pred[b, q], boxes[b, n])
                              for n in real] for q in range(q_)])
            qs, ns = linear_sum_assignment(cost)
            for q, n in zip(qs, real[ns]):
                cls[q] = labels[b, n]
                l1 += np.abs(pred[b, q] - boxes[b, n]).sum()
                giou += 1 - np_giou(pred[b, q], boxes[b, n])
        for q in range(q_):
            wq = eos if cls[q] == k - 1 else 1.0
            ce_num += -wq * logp[b, q, cls[q]]
            ce_den += wq
    ce, l1, giou = ce_num / ce_den, l1 / num, giou / num
    return w[0] * ce + w[1] * l1 + w[2] * giou, (ce, l1, giou)


def test_detr_loss_matches_numpy_with_aux_layers_and_an_empty_image(rng):
    solver = "jax"  # (the scipy solver gives the same matching: tests/layers/test_matching.py)
    layers, b, q, n, c = 2, 3, 5, 3, 4
    logits = rng.normal(size=(layers, b, q, c + 1)).astype(np.float32)
    pred = rng.uniform(0.2, 0.8, size=(layers, b, q, 4)).astype(np.float32)
    pred[..., 2:] *= 0.5
    labels = rng.integers(0, c, size=(b, n))
    boxes = rng.uniform(0.2, 0.8, size=(b, n, 4)).astype(np.float32)
    boxes[..., 2:] *= 0.5
    mask = np.array([[1, 1, 1], [1, 0, 1], [0, 0, 0]])  # the last image has no objects
    w = (1.0, 5.0, 2.0)
    fn = jax.jit(lambda *a: losses.detr_loss(*a, eos_coef=0.1, solver=solver))
    total, metrics = fn(logits, pred, labels, boxes, mask)
    ref = [np_detr_layer(logits[i], pred[i], labels, boxes, mask, 0.1, w) for i in range(layers)]
    assert float(total) == pytest.approx(sum(r[0] for r in ref), rel=1e-4)
    got = (metrics["loss_ce"], metrics["loss_bbox"], metrics["loss_giou"])
    np.testing.assert_allclose(np.array(got, np.float64), ref[-1][1], rtol=1e-4)
    # No gradient flows through the matching, and the gradient is finite.
    grads = jax.grad(lambda lg, pb: fn(lg, pb, labels, boxes, mask)[0], argnums=(0, 1))(
        jnp.asarray(logits), jnp.asarray(pred))
    assert all(bool(jnp.all(jnp.isfinite(g))) for g in grads)


def test_batch_without_any_object_only_learns_no_object():
    logits = jnp.zeros((1, 2, 3, 4))
    total, metrics = jax.jit(losses.detr_loss)(
        logits, jnp.full((1, 2, 3, 4), 0.5), jnp.zeros((2, 1), int), jnp.zeros((2, 1, 4)),
        jnp.zeros((2, 1)))
    assert float(total) == pytest.approx(np.log(4), rel=1e-5)  # uniform logits, all no-object
    assert float(metrics["loss_bbox"]) == float(metrics["loss_giou"]) == 0.0
