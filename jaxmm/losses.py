"""Training objectives.

* Token- and sequence-level cross-entropy with label smoothing and an ignore index.
* Contrastive image–text objectives: symmetric InfoNCE (CLIP) and the sigmoid
  loss (SigLIP), correct under data parallelism: negatives always come from the
  *global* batch (automatic for ``jax.jit`` over sharded arrays; pass
  ``axis_name`` inside ``shard_map``/``pmap`` to all-gather explicitly).
* Triplet loss with in-batch hard negatives; image–text matching.
* DETR's set criterion: Hungarian matching, class + L1 + GIoU losses per decoder layer.
* Knowledge distillation (soft + hard targets) and feature matching.
* Input corruption for pre-training: BERT masked-LM masking and NSP pairs.

All functions are pure and jittable unless noted.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxmm.layers.boxes import box_cxcywh_to_xyxy, generalized_box_iou
from jaxmm.layers.matching import hungarian_match
from jaxmm.layers.norms import l2_normalize

Array = jax.Array
Reduction = Literal["mean", "sum", "none"]

__all__ = [
    "IGNORE_INDEX",
    "cross_entropy",
    "detr_loss",
    "detr_matching_cost",
    "distillation_loss",
    "feature_matching_loss",
    "infonce_loss",
    "itm_loss",
    "make_nsp_pairs",
    "mlm_mask",
    "sample_itm_negatives",
    "sequence_log_likelihood",
    "sigmoid_contrastive_loss",
    "triplet_loss",
]

IGNORE_INDEX = -100


def _reduce(per_item: Array, weights: Array, reduction: Reduction) -> Array:
    per_item = per_item * weights
    if reduction == "none":
        return per_item
    total = jnp.sum(per_item)
    if reduction == "sum":
        return total
    if reduction == "mean":
        return total / jnp.maximum(jnp.sum(weights), 1e-9)
    raise ValueError(f"Unknown reduction {reduction!r}; use 'mean', 'sum' or 'none'.")


# ---------------------------------------------------------------------------
# Cross-entropy
# ---------------------------------------------------------------------------


def cross_entropy(
    logits: Array,
    labels: Array,
    *,
    label_smoothing: float = 0.0,
    ignore_index: int | None = IGNORE_INDEX,
    weights: Array | None = None,
    reduction: Reduction = "mean",
) -> Array:
    """Softmax cross-entropy against integer labels, with label smoothing.

    The target distribution is ``y_ls = (1 - eps) * one_hot(y) + eps / K`` (as
    PyTorch's ``CrossEntropyLoss(label_smoothing=eps)``). Works for any leading
    shape: ``(B, K)`` sequence-level or ``(B, T, K)`` token-level.

    Args:
      logits: ``(..., K)``.
      labels: ``(...)`` integers; entries equal to ``ignore_index`` are skipped.
      label_smoothing: ``eps`` in ``[0, 1)``.
      weights: optional ``(...)`` per-item weights (multiplied with the mask).
      reduction: ``"mean"`` over non-ignored items (0 if there are none),
        ``"sum"``, or ``"none"`` (per item, 0 where ignored).
    """
    if logits.shape[:-1] != labels.shape:
        raise ValueError(
            f"cross_entropy: logits {tuple(logits.shape)} need labels of shape "
            f"{tuple(logits.shape[:-1])}; got {tuple(labels.shape)}."
        )
    if not 0.0 <= label_smoothing < 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1); got {label_smoothing}.")
    valid = jnp.ones(labels.shape, jnp.float32)
    if ignore_index is not None:
        valid = (labels != ignore_index).astype(jnp.float32)
    safe = jnp.where(valid > 0, labels, 0)
    logits = logits.astype(jnp.float32)
    # (1 - eps) * NLL(y) + eps * mean_k(-log p_k), without a (..., K) one-hot.
    per_item = optax.softmax_cross_entropy_with_integer_labels(logits, safe)
    if label_smoothing:
        uniform = jax.nn.logsumexp(logits, axis=-1) - jnp.mean(logits, axis=-1)
        per_item = (1.0 - label_smoothing) * per_item + label_smoothing * uniform
    if weights is not None:
        valid = valid * weights.astype(jnp.float32)
    return _reduce(per_item, valid, reduction)


def sequence_log_likelihood(
    logits: Array, labels: Array, *, ignore_index: int | None = IGNORE_INDEX
) -> tuple[Array, Array]:
    """Per-sequence summed log-probability of ``labels`` and token counts.

    ``logits`` ``(B, T, K)``, ``labels`` ``(B, T)`` -> ``((B,), (B,))``. Useful
    for scoring candidates and for perplexity (``exp(-sum(ll) / sum(n))``).
    """
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    valid = labels != ignore_index if ignore_index is not None else jnp.ones_like(labels, bool)
    picked = jnp.take_along_axis(logp, jnp.where(valid, labels, 0)[..., None], axis=-1)[..., 0]
    return jnp.sum(jnp.where(valid, picked, 0.0), axis=-1), jnp.sum(valid, axis=-1)


# ---------------------------------------------------------------------------
# Contrastive losses
# ---------------------------------------------------------------------------


def _check_pair(a: Array, b: Array, name: str) -> None:
    if a.ndim != 2 or b.ndim != 2 or a.shape != b.shape:
        raise ValueError(
            f"{name}: expected two (batch, dim) embedding arrays of the same shape; got "
            f"{tuple(a.shape)} and {tuple(b.shape)}."
        )


def _gather(x: Array, axis_name: str | None) -> tuple[Array, Array]:
    """All rows of ``x`` across ``axis_name`` and the offset of this shard's rows."""
    if axis_name is None:
        return x, jnp.asarray(0)
    full = jax.lax.all_gather(x, axis_name, tiled=True)
    return full, jax.lax.axis_index(axis_name) * x.shape[0]


def _negatives(negatives: Array | None, mask: Array | None, like: Array, normalize: bool,
               axis_name: str | None, name: str) -> tuple[Array, Array] | None:
    """Hard negatives ``(N, D)`` normalised and gathered across ``axis_name``, with their
    validity ``(N,)`` (all valid without ``mask``); ``None`` without negatives."""
    if negatives is None:
        if mask is not None:
            raise ValueError(f"{name}: negative_mask given without negatives.")
        return None
    if negatives.ndim != 2 or negatives.shape[1] != like.shape[1]:
        raise ValueError(f"{name}: negatives must be (N, {like.shape[1]}) like the embeddings; "
                         f"got {tuple(negatives.shape)}.")
    if mask is not None and mask.shape != negatives.shape[:1]:
        raise ValueError(f"{name}: negative_mask must be ({negatives.shape[0]},); "
                         f"got {tuple(mask.shape)}.")
    neg = l2_normalize(negatives) if normalize else negatives.astype(jnp.float32)
    valid = jnp.ones(neg.shape[:1], bool) if mask is None else mask.astype(bool)
    return _gather(neg, axis_name)[0], _gather(valid, axis_name)[0]


def infonce_loss(
    image_embeds: Array,
    text_embeds: Array,
    logit_scale: Array | float,
    *,
    normalize: bool = True,
    max_scale: float | None = 100.0,
    axis_name: str | None = None,
    negatives: Array | None = None,
    negative_mask: Array | None = None,
) -> Array:
    """Symmetric InfoNCE (CLIP): mean of image->text and text->image cross-entropy.

    ``logits = exp(logit_scale) * cos(image_i, text_j)``; the positive for row
    ``i`` is column ``i``. ``logit_scale`` is the learnable *log* inverse
    temperature (CLIP initialises it to ``log(1/0.07)``); the scale is clipped
    at ``max_scale``.

    Under ``jax.jit`` with batch-sharded inputs the arrays are global, so every
    example is contrasted against the whole global batch. Inside
    ``shard_map``/``pmap`` pass ``axis_name``: each shard all-gathers the other
    side and scores its own rows; the result is the same global loss.

    Hard negatives (NegCLIP, Yuksekgonul et al., 2023): ``negatives`` ``(N, D)`` are
    extra *text* candidates, never a target, appended to every image's image->text
    softmax (e.g. each caption with its shape words swapped, see the ``swap_words``
    op); ``negative_mask`` ``(N,)`` leaves out the invalid ones (a foil identical to its
    caption). The text->image direction is unchanged.

    Args:
      image_embeds, text_embeds: ``(B, D)``.
    Returns:
      scalar loss.
    """
    _check_pair(image_embeds, text_embeds, "infonce_loss")
    extra = _negatives(negatives, negative_mask, text_embeds, normalize, axis_name,
                       "infonce_loss")
    img = l2_normalize(image_embeds) if normalize else image_embeds.astype(jnp.float32)
    txt = l2_normalize(text_embeds) if normalize else text_embeds.astype(jnp.float32)
    scale = jnp.exp(jnp.asarray(logit_scale, jnp.float32))
    if max_scale is not None:
        scale = jnp.minimum(scale, max_scale)
    all_img, offset = _gather(img, axis_name)
    all_txt, _ = _gather(txt, axis_name)
    local = img.shape[0]
    targets = offset + jnp.arange(local)
    logits_i2t = scale * img @ all_txt.T  # (b, B)
    logits_t2i = scale * txt @ all_img.T  # (b, B)
    if extra is not None:
        neg, valid = extra  # (N_global, D), (N_global,)
        logits_neg = jnp.where(valid[None, :], scale * img @ neg.T, -jnp.inf)
        logits_i2t = jnp.concatenate([logits_i2t, logits_neg], axis=1)  # (b, B + N)
    loss = 0.5 * (
        optax.softmax_cross_entropy_with_integer_labels(logits_i2t, targets).mean()
        + optax.softmax_cross_entropy_with_integer_labels(logits_t2i, targets).mean()
    )
    if axis_name is not None:
        loss = jax.lax.pmean(loss, axis_name)
    return loss


def sigmoid_contrastive_loss(
    image_embeds: Array,
    text_embeds: Array,
    logit_scale: Array | float,
    logit_bias: Array | float,
    *,
    normalize: bool = True,
    axis_name: str | None = None,
    negatives: Array | None = None,
    negative_mask: Array | None = None,
) -> Array:
    """SigLIP loss: every pair is a binary problem, positives on the diagonal.

    ``loss = -1/B * sum_ij log sigmoid(z_ij * (exp(logit_scale) * cos_ij + bias))``
    with ``z_ij = 1`` if ``i == j`` else ``-1`` (Zhai et al., 2023), over the
    global batch (see :func:`infonce_loss` for ``axis_name``). Hard ``negatives``
    ``(N, D)`` (texts, see :func:`infonce_loss`) add one ``z = -1`` pair per image and
    valid negative to the sum; the normaliser stays ``B``.
    """
    _check_pair(image_embeds, text_embeds, "sigmoid_contrastive_loss")
    extra = _negatives(negatives, negative_mask, text_embeds, normalize, axis_name,
                       "sigmoid_contrastive_loss")
    img = l2_normalize(image_embeds) if normalize else image_embeds.astype(jnp.float32)
    txt = l2_normalize(text_embeds) if normalize else text_embeds.astype(jnp.float32)
    all_txt, offset = _gather(txt, axis_name)
    logits = jnp.exp(jnp.asarray(logit_scale, jnp.float32)) * img @ all_txt.T + logit_bias
    rows = offset + jnp.arange(img.shape[0])
    signs = jnp.where(rows[:, None] == jnp.arange(all_txt.shape[0])[None, :], 1.0, -1.0)
    total = -jnp.sum(jax.nn.log_sigmoid(signs * logits))
    if extra is not None:
        neg, valid = extra
        logits_neg = jnp.exp(jnp.asarray(logit_scale, jnp.float32)) * img @ neg.T + logit_bias
        total -= jnp.sum(jnp.where(valid[None, :], jax.nn.log_sigmoid(-logits_neg), 0.0))
    if axis_name is not None:
        total = jax.lax.psum(total, axis_name)
    return total / all_txt.shape[0]


def triplet_loss(
    anchor: Array,
    positive: Array,
    negative: Array | None = None,
    *,
    margin: float = 0.2,
    distance: Literal["cosine", "euclidean"] = "cosine",
    mining: Literal["hardest", "all"] = "hardest",
    labels: Array | None = None,
) -> Array:
    """``mean(max(0, d(a, p) - d(a, n) + margin))``.

    With ``negative=None`` negatives come from the batch: every other row's
    positive (and, if ``labels`` are given, only rows with a different label).
    ``mining="hardest"`` uses each anchor's closest negative (VSE++);
    ``"all"`` averages the hinge over all valid negatives.

    ``distance="cosine"`` uses ``1 - cos``; ``"euclidean"`` the L2 distance.
    """
    _check_pair(anchor, positive, "triplet_loss")

    def dist(x, y):  # pairwise (N, M)
        if distance == "cosine":
            return 1.0 - l2_normalize(x) @ l2_normalize(y).T
        if distance == "euclidean":
            sq = (jnp.sum(x * x, -1)[:, None] + jnp.sum(y * y, -1)[None, :] - 2 * x @ y.T)
            return jnp.sqrt(jnp.maximum(sq, 1e-12))
        raise ValueError(f"Unknown distance {distance!r}; use 'cosine' or 'euclidean'.")

    anchor = anchor.astype(jnp.float32)
    positive = positive.astype(jnp.float32)
    d_pos = jnp.diagonal(dist(anchor, positive))
    if negative is not None:
        _check_pair(anchor, negative, "triplet_loss")
        d_neg = jnp.diagonal(dist(anchor, negative.astype(jnp.float32)))
        return jnp.mean(jax.nn.relu(d_pos - d_neg + margin))
    d_all = dist(anchor, positive)
    n = anchor.shape[0]
    valid = ~jnp.eye(n, dtype=bool)
    if labels is not None:
        valid = valid & (labels[:, None] != labels[None, :])
    hinge = jax.nn.relu(d_pos[:, None] - d_all + margin)
    if mining == "hardest":
        hardest = jnp.min(jnp.where(valid, d_all, jnp.inf), axis=1)
        has_neg = jnp.any(valid, axis=1)
        per = jnp.where(has_neg, jax.nn.relu(d_pos - hardest + margin), 0.0)
        return jnp.sum(per) / jnp.maximum(jnp.sum(has_neg), 1)
    if mining == "all":
        return jnp.sum(jnp.where(valid, hinge, 0.0)) / jnp.maximum(jnp.sum(valid), 1)
    raise ValueError(f"Unknown mining {mining!r}; use 'hardest' or 'all'.")


def sample_itm_negatives(rng: Array, similarity: Array, *, exclude_diagonal: bool = True):
    """Hard negatives for image–text matching, sampled by ``softmax(similarity)``.

    For each image ``i`` (row) samples a text ``j != i`` with probability
    proportional to ``exp(similarity[i, j])`` (ALBEF-style), and for each text a
    hard negative image likewise. Returns ``(text_for_image, image_for_text)``
    index arrays of shape ``(B,)``.
    """
    n = similarity.shape[0]
    logits = similarity.astype(jnp.float32)
    if exclude_diagonal:
        logits = jnp.where(jnp.eye(n, dtype=bool), -jnp.inf, logits)
    k1, k2 = jax.random.split(rng)
    text_for_image = jax.random.categorical(k1, logits, axis=1)
    image_for_text = jax.random.categorical(k2, logits.T, axis=1)
    return text_for_image, image_for_text


def itm_loss(logits: Array, is_match: Array, *, reduction: Reduction = "mean") -> Array:
    """Image–text matching: 2-way cross-entropy (``(B, 2)`` logits, class 1 = match)
    or binary cross-entropy (``(B,)`` logits)."""
    is_match = is_match.astype(jnp.int32)
    if logits.ndim == is_match.ndim + 1 and logits.shape[-1] == 2:
        return cross_entropy(logits, is_match, ignore_index=None, reduction=reduction)
    if logits.shape != is_match.shape:
        raise ValueError(
            f"itm_loss: logits {tuple(logits.shape)} must be (B, 2) or match labels "
            f"{tuple(is_match.shape)}."
        )
    per = optax.sigmoid_binary_cross_entropy(logits.astype(jnp.float32), is_match)
    return _reduce(per, jnp.ones_like(per), reduction)


# ---------------------------------------------------------------------------
# Distillation
# ---------------------------------------------------------------------------


def distillation_loss(
    student_logits: Array,
    teacher_logits: Array,
    labels: Array | None = None,
    *,
    temperature: float = 2.0,
    alpha: float = 0.5,
    label_smoothing: float = 0.0,
    ignore_index: int | None = IGNORE_INDEX,
    mask: Array | None = None,
) -> Array:
    """Hinton et al. knowledge distillation.

    ``alpha * T^2 * KL(softmax(teacher/T) || softmax(student/T))
    + (1 - alpha) * CE(student, labels)``. The teacher gets ``stop_gradient``
    (its params are frozen). KL is averaged over items (``batchmean``); items
    whose label equals ``ignore_index`` or whose ``mask`` is 0 are skipped.
    With ``labels=None`` only the soft term is used (``alpha`` ignored).
    """
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(
            f"distillation_loss: student logits {tuple(student_logits.shape)} and teacher "
            f"logits {tuple(teacher_logits.shape)} differ."
        )
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0; got {temperature}.")
    teacher = jax.lax.stop_gradient(teacher_logits.astype(jnp.float32))
    t_logp = jax.nn.log_softmax(teacher / temperature, axis=-1)
    s_logp = jax.nn.log_softmax(student_logits.astype(jnp.float32) / temperature, axis=-1)
    kl = jnp.sum(jnp.exp(t_logp) * (t_logp - s_logp), axis=-1)
    weights = jnp.ones(kl.shape, jnp.float32) if mask is None else mask.astype(jnp.float32)
    if labels is not None and ignore_index is not None:
        weights = weights * (labels != ignore_index)
    soft = (temperature**2) * _reduce(kl, weights, "mean")
    if labels is None:
        return soft
    hard = cross_entropy(student_logits, labels, label_smoothing=label_smoothing,
                         ignore_index=ignore_index, weights=weights)
    return alpha * soft + (1.0 - alpha) * hard


def feature_matching_loss(
    student: Array,
    teacher: Array,
    *,
    kind: Literal["mse", "cosine"] = "mse",
    mask: Array | None = None,
) -> Array:
    """Matches student features/embeddings to a frozen teacher's.

    ``student``/``teacher`` ``(..., D)`` (project the student to the teacher's
    width first if they differ). ``mse``: mean squared error per feature;
    ``cosine``: ``1 - cos``. ``mask`` ``(...)`` selects items (e.g. real tokens).
    """
    if student.shape != teacher.shape:
        raise ValueError(
            f"feature_matching_loss: shapes differ {tuple(student.shape)} vs "
            f"{tuple(teacher.shape)}; project the student features to the teacher's width."
        )
    teacher = jax.lax.stop_gradient(teacher.astype(jnp.float32))
    student = student.astype(jnp.float32)
    if kind == "mse":
        per = jnp.mean(jnp.square(student - teacher), axis=-1)
    elif kind == "cosine":
        per = 1.0 - jnp.sum(l2_normalize(student) * l2_normalize(teacher), axis=-1)
    else:
        raise ValueError(f"Unknown kind {kind!r}; use 'mse' or 'cosine'.")
    weights = jnp.ones(per.shape, jnp.float32) if mask is None else mask.astype(jnp.float32)
    return _reduce(per, weights, "mean")


# ---------------------------------------------------------------------------
# Pre-training input corruption
# ---------------------------------------------------------------------------


def mlm_mask(
    rng: Array,
    input_ids: Array,
    *,
    mask_token_id: int,
    vocab_size: int,
    special_ids: Sequence[int] = (),
    special_tokens_mask: Array | None = None,
    attention_mask: Array | None = None,
    mlm_probability: float = 0.15,
    mask_fraction: float = 0.8,
    random_fraction: float = 0.1,
) -> tuple[Array, Array]:
    """BERT masked-LM corruption, deterministic given ``rng``.

    Selects each eligible token with probability ``mlm_probability``; of the
    selected, ``mask_fraction`` become ``mask_token_id``, ``random_fraction``
    a uniformly random token and the rest stay unchanged. Special tokens
    (``special_ids`` or ``special_tokens_mask`` == 1) and padding
    (``attention_mask`` == 0) are never selected.

    Returns:
      ``(corrupted_ids, labels)``: labels hold the original id at selected
      positions and ``-100`` elsewhere.
    """
    if mask_fraction + random_fraction > 1.0:
        raise ValueError("mask_fraction + random_fraction must be <= 1.")
    input_ids = jnp.asarray(input_ids)
    eligible = jnp.ones(input_ids.shape, bool)
    for sid in special_ids:
        eligible &= input_ids != sid
    if special_tokens_mask is not None:
        eligible &= ~jnp.asarray(special_tokens_mask).astype(bool)
    if attention_mask is not None:
        eligible &= jnp.asarray(attention_mask).astype(bool)
    k_sel, k_kind, k_tok = jax.random.split(rng, 3)
    selected = eligible & jax.random.bernoulli(k_sel, mlm_probability, input_ids.shape)
    u = jax.random.uniform(k_kind, input_ids.shape)
    to_mask = selected & (u < mask_fraction)
    to_random = selected & (u >= mask_fraction) & (u < mask_fraction + random_fraction)
    random_ids = jax.random.randint(k_tok, input_ids.shape, 0, vocab_size, input_ids.dtype)
    corrupted = jnp.where(to_mask, mask_token_id, input_ids)
    corrupted = jnp.where(to_random, random_ids, corrupted)
    labels = jnp.where(selected, input_ids, IGNORE_INDEX)
    return corrupted, labels


def make_nsp_pairs(
    documents: Sequence[Sequence[str]],
    *,
    seed: int = 0,
    random_next_probability: float = 0.5,
) -> list[tuple[str, str, int]]:
    """Next-sentence-prediction pairs from documents (lists of sentences).

    For each consecutive sentence pair (A, B) of a document, with probability
    ``random_next_probability`` B is replaced by a random sentence from a
    *different* document. Labels follow Hugging Face ``BertForPreTraining``:
    ``0`` = B follows A, ``1`` = B is random. Host-side (NumPy), deterministic
    given ``seed``.
    """
    docs = [list(d) for d in documents if len(d) > 0]
    if len(docs) < 2:
        raise ValueError("make_nsp_pairs needs at least two non-empty documents.")
    rs = np.random.default_rng(seed)
    pairs = []
    for di, doc in enumerate(docs):
        for si in range(len(doc) - 1):
            if rs.random() < random_next_probability:
                other = int(rs.integers(len(docs) - 1))
                other += other >= di
                b = docs[other][int(rs.integers(len(docs[other])))]
                pairs.append((doc[si], b, 1))
            else:
                pairs.append((doc[si], doc[si + 1], 0))
    return pairs


# ---------------------------------------------------------------------------
# Set prediction (DETR): Hungarian matching + class, L1 and GIoU box losses
# ---------------------------------------------------------------------------


def detr_matching_cost(logits: Array, pred_boxes: Array, labels: Array, boxes: Array, *,
                       class_weight: float = 1.0, bbox_weight: float = 5.0,
                       giou_weight: float = 2.0) -> Array:
    """DETR's matching cost ``[B, Q, N]`` of giving target ``n`` to query ``q``.

    ``class_weight * -p_q(label_n) + bbox_weight * |box_q - box_n|_1 +
    giou_weight * -GIoU(box_q, box_n)``, boxes in normalised cxcywh. Shapes: ``logits``
    ``[B, Q, C + 1]``, ``pred_boxes`` ``[B, Q, 4]``, ``labels`` ``[B, N]``, ``boxes``
    ``[B, N, 4]``.
    """
    prob = jax.nn.softmax(logits.astype(jnp.float32), axis=-1)
    safe = jnp.clip(labels, 0, logits.shape[-1] - 1).astype(jnp.int32)
    cost_class = -jnp.take_along_axis(prob, jnp.broadcast_to(
        safe[:, None, :], prob.shape[:2] + safe.shape[-1:]), axis=-1)
    pred, tgt = pred_boxes.astype(jnp.float32), boxes.astype(jnp.float32)
    cost_bbox = jnp.abs(pred[:, :, None, :] - tgt[:, None, :, :]).sum(-1)
    cost_giou = -generalized_box_iou(box_cxcywh_to_xyxy(pred), box_cxcywh_to_xyxy(tgt))
    return class_weight * cost_class + bbox_weight * cost_bbox + giou_weight * cost_giou


def _detr_layer_loss(logits, pred_boxes, labels, boxes, mask, num_boxes, image_weights, *,
                     eos_coef, weights, solver):
    num_queries, no_object = logits.shape[1], logits.shape[-1] - 1
    cost = detr_matching_cost(logits, pred_boxes, labels, boxes, class_weight=weights[0],
                              bbox_weight=weights[1], giou_weight=weights[2])
    match = hungarian_match(jax.lax.stop_gradient(cost), mask, solver=solver)  # [B, N]
    rows = jnp.arange(labels.shape[0])[:, None]
    # Each query's target class: its matched object's label, else "no object".
    query_class = jnp.full(logits.shape[:2], no_object, jnp.int32).at[
        rows, jnp.where(mask, match, num_queries)].set(labels.astype(jnp.int32), mode="drop")
    class_w = jnp.where(query_class == no_object, eos_coef, 1.0) * image_weights[:, None]
    loss_ce = cross_entropy(logits, query_class, ignore_index=None, weights=class_w)
    # Box losses on the matched pairs, normalised by the number of objects.
    matched = jnp.take_along_axis(pred_boxes.astype(jnp.float32),
                                  jnp.where(mask, match, 0)[..., None], axis=1)  # [B, N, 4]
    tgt = boxes.astype(jnp.float32)
    maskf = mask.astype(jnp.float32)
    loss_bbox = jnp.sum(jnp.abs(matched - tgt).sum(-1) * maskf) / num_boxes
    giou = generalized_box_iou(box_cxcywh_to_xyxy(matched)[..., None, :],
                               box_cxcywh_to_xyxy(tgt)[..., None, :])[..., 0, 0]
    loss_giou = jnp.sum((1.0 - giou) * maskf) / num_boxes
    total = weights[0] * loss_ce + weights[1] * loss_bbox + weights[2] * loss_giou
    return total, dict(loss_ce=loss_ce, loss_bbox=loss_bbox, loss_giou=loss_giou)


def detr_loss(
    logits: Array, pred_boxes: Array, labels: Array, boxes: Array, box_mask: Array, *,
    eos_coef: float = 0.1, class_weight: float = 1.0, bbox_weight: float = 5.0,
    giou_weight: float = 2.0, solver: str = "auto", image_weights: Array | None = None,
) -> tuple[Array, dict[str, Array]]:
    """DETR's set criterion, summed over decoder layers (auxiliary losses).

    Per layer, queries are matched one-to-one to the real objects by
    :func:`jaxmm.layers.hungarian_match` on :func:`detr_matching_cost` (no gradient
    through the matching). Then: softmax cross-entropy of every query against its
    matched label or "no object" (the last class), weighted mean with weight
    ``eos_coef`` on "no object"; L1 and ``1 - GIoU`` of the matched boxes, summed and
    divided by the number of real objects in the batch (at least 1). A layer's loss is
    ``class_weight * ce + bbox_weight * l1 + giou_weight * giou``; the same weights
    price the matching (DETR's 1, 5, 2).

    Args:
      logits: ``[B, Q, C + 1]`` or per decoder layer ``[L, B, Q, C + 1]``.
      pred_boxes: ``[B, Q, 4]`` or ``[L, B, Q, 4]``, normalised cxcywh.
      labels: ``[B, N]`` int in ``[0, C)``; boxes ``[B, N, 4]`` normalised cxcywh;
        box_mask ``[B, N]`` 1 for real objects (an image may have none).
      solver: the matcher's solver (``"auto"``, ``"jax"`` or ``"scipy"``).
      image_weights: ``[B]`` 0/1 (0: a padding row, left out of every term).

    Returns:
      ``(loss, metrics)``: the summed loss and the last layer's ``loss_ce``,
      ``loss_bbox``, ``loss_giou``.
    """
    if logits.ndim == 3:
        logits, pred_boxes = logits[None], pred_boxes[None]
    if labels.shape != box_mask.shape or boxes.shape != labels.shape + (4,):
        raise ValueError(
            f"detr_loss: labels {tuple(labels.shape)}, box_mask {tuple(box_mask.shape)} and "
            f"boxes {tuple(boxes.shape)} must be [B, N], [B, N] and [B, N, 4].")
    image_weights = (jnp.ones(labels.shape[:1], jnp.float32) if image_weights is None
                     else jnp.asarray(image_weights, jnp.float32))
    mask = box_mask.astype(bool) & (image_weights[:, None] > 0)
    num_boxes = jnp.maximum(jnp.sum(mask.astype(jnp.float32)), 1.0)
    weights = (class_weight, bbox_weight, giou_weight)
    total, metrics = 0.0, {}
    for layer in range(logits.shape[0]):
        loss, metrics = _detr_layer_loss(logits[layer], pred_boxes[layer], labels, boxes, mask,
                                         num_boxes, image_weights, eos_coef=eos_coef,
                                         weights=weights, solver=solver)
        total = total + loss
    return total, metrics
