"""Bounding-box operations for detection (pure, jittable, any leading batch dims).

Boxes are ``[..., 4]`` arrays in one of two layouts:

* ``cxcywh``: centre x, centre y, width, height (what DETR predicts, normalised to [0, 1]);
* ``xyxy``: left, top, right, bottom (what areas and intersections are computed on).

Pairwise functions take ``a [..., N, 4]`` and ``b [..., M, 4]`` (``xyxy``) and return
``[..., N, M]``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

Array = jax.Array

__all__ = ["box_area", "box_cxcywh_to_xyxy", "box_xyxy_to_cxcywh", "box_iou", "generalized_box_iou"]


def box_cxcywh_to_xyxy(boxes: Array) -> Array:
    """``[..., 4]`` (cx, cy, w, h) -> ``[..., 4]`` (x0, y0, x1, y1)."""
    cx, cy, w, h = jnp.moveaxis(jnp.asarray(boxes), -1, 0)
    return jnp.stack([cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h], axis=-1)


def box_xyxy_to_cxcywh(boxes: Array) -> Array:
    """``[..., 4]`` (x0, y0, x1, y1) -> ``[..., 4]`` (cx, cy, w, h)."""
    x0, y0, x1, y1 = jnp.moveaxis(jnp.asarray(boxes), -1, 0)
    return jnp.stack([(x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0], axis=-1)


def box_area(boxes: Array) -> Array:
    """Area of ``xyxy`` boxes ``[..., 4]`` -> ``[...]`` (degenerate boxes give 0)."""
    boxes = jnp.asarray(boxes)
    w = jnp.maximum(boxes[..., 2] - boxes[..., 0], 0)
    h = jnp.maximum(boxes[..., 3] - boxes[..., 1], 0)
    return w * h


def _inter_union(a: Array, b: Array) -> tuple[Array, Array]:
    a, b = jnp.asarray(a), jnp.asarray(b)
    lt = jnp.maximum(a[..., :, None, :2], b[..., None, :, :2])  # [..., N, M, 2]
    rb = jnp.minimum(a[..., :, None, 2:], b[..., None, :, 2:])
    wh = jnp.maximum(rb - lt, 0)
    inter = wh[..., 0] * wh[..., 1]
    union = box_area(a)[..., :, None] + box_area(b)[..., None, :] - inter
    return inter, union


def box_iou(a: Array, b: Array, eps: float = 1e-7) -> Array:
    """Pairwise IoU of ``xyxy`` boxes: ``[..., N, 4]``, ``[..., M, 4]`` -> ``[..., N, M]``.

    ``eps`` keeps two empty boxes at IoU 0 instead of NaN.
    """
    inter, union = _inter_union(a, b)
    return inter / jnp.maximum(union, eps)


def generalized_box_iou(a: Array, b: Array, eps: float = 1e-7) -> Array:
    """Pairwise generalized IoU (Rezatofighi et al. 2019) of ``xyxy`` boxes, in [-1, 1].

    ``GIoU = IoU - (|C| - |A u B|) / |C|`` with ``C`` the smallest box enclosing both.
    Shapes as :func:`box_iou`.
    """
    a, b = jnp.asarray(a), jnp.asarray(b)
    inter, union = _inter_union(a, b)
    iou = inter / jnp.maximum(union, eps)
    lt = jnp.minimum(a[..., :, None, :2], b[..., None, :, :2])
    rb = jnp.maximum(a[..., :, None, 2:], b[..., None, :, 2:])
    wh = jnp.maximum(rb - lt, 0)
    enclosing = wh[..., 0] * wh[..., 1]
    return iou - (enclosing - union) / jnp.maximum(enclosing, eps)
