"""Image and video preprocessing ops (TF, one example at a time).

Images enter as uint8 ``(H, W, C)`` (tfds ``Image`` features) or encoded bytes
(``decode``) and leave as float32 ``(H, W, C)`` after ``value_range`` or
``normalize``. Random ops use only their stateless ``seed``.
"""

from __future__ import annotations

from collections.abc import Sequence

import tensorflow as tf

from jaxmm.data.preprocess import register, require

__all__ = ["MEANS_STDS"]

# Per-channel (mean, std) in [0, 1] units.
MEANS_STDS = {
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "clip": ((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)),
    "half": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
}


def _hw(size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(size, int):
        return size, size
    h, w = size
    return int(h), int(w)


def _to_float(image: tf.Tensor) -> tf.Tensor:
    return tf.cast(image, tf.float32)


def _restore_dtype(image: tf.Tensor, dtype: tf.DType) -> tf.Tensor:
    if dtype == tf.uint8:
        return tf.cast(tf.clip_by_value(tf.round(image), 0, 255), tf.uint8)
    return tf.cast(image, dtype)


def _cxcywh(x0: tf.Tensor, y0: tf.Tensor, x1: tf.Tensor, y1: tf.Tensor) -> tf.Tensor:
    """Corner coordinates -> ``(N, 4)`` cxcywh (the detection task's box format)."""
    return tf.stack([(x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0], -1)


def _padded_targets(ex: dict, key: str, boxes: tf.Tensor, labels: tf.Tensor,
                    max_objects: int) -> dict:
    """``ex`` without its ``key/...`` object fields, with ``boxes`` ``(max_objects, 4)``,
    ``labels`` and ``box_mask`` (1 = a real object) padded to ``max_objects``."""
    pad = max_objects - tf.shape(labels)[0]
    out = {k: v for k, v in ex.items() if not k.startswith(f"{key}/")}
    out["boxes"] = tf.ensure_shape(tf.pad(boxes, [[0, pad], [0, 0]]), [max_objects, 4])
    out["labels"] = tf.ensure_shape(tf.pad(labels, [[0, pad]]), [max_objects])
    out["box_mask"] = tf.ensure_shape(tf.pad(tf.ones_like(labels), [[0, pad]]), [max_objects])
    return out


def _boxes_after_crop(ex: dict, boxes: str | None, mask: str, size, top, left, crop_h, crop_w
                      ) -> dict:
    """``ex`` with its normalised cxcywh ``boxes`` (relative to an image of ``size``
    ``(h, w)``) moved into the crop window ``(top, left, crop_h, crop_w)`` (pixels) and
    clipped to it; a box left with no area is zeroed and its ``mask`` entry set to 0.
    Without ``boxes``, ``ex`` unchanged."""
    if boxes is None:
        return ex
    b = tf.cast(require(ex, boxes, "a box-aware crop"), tf.float32)
    h, w = (tf.cast(v, tf.float32) for v in size)
    top, left, crop_h, crop_w = (tf.cast(v, tf.float32) for v in (top, left, crop_h, crop_w))
    x0 = tf.clip_by_value(((b[:, 0] - b[:, 2] / 2) * w - left) / crop_w, 0.0, 1.0)
    x1 = tf.clip_by_value(((b[:, 0] + b[:, 2] / 2) * w - left) / crop_w, 0.0, 1.0)
    y0 = tf.clip_by_value(((b[:, 1] - b[:, 3] / 2) * h - top) / crop_h, 0.0, 1.0)
    y1 = tf.clip_by_value(((b[:, 1] + b[:, 3] / 2) * h - top) / crop_h, 0.0, 1.0)
    valid = (x1 > x0) & (y1 > y0)
    out = dict(ex)
    if mask in ex:
        valid &= tf.cast(ex[mask], tf.bool)
        out[mask] = tf.cast(valid, ex[mask].dtype)
    out[boxes] = tf.where(valid[:, None], _cxcywh(x0, y0, x1, y1), 0.0)
    return out


@register("decode")
def decode(key: str = "image", channels: int = 3):
    """Decodes encoded image bytes (PNG/JPEG/...) to uint8 ``(H, W, channels)``.

    Already decoded images (tfds ``Image`` features) pass through unchanged.
    """

    def op(ex, seed):
        image = require(ex, key, "decode")
        if image.dtype == tf.string:
            image = tf.io.decode_image(image, channels=channels, expand_animations=False)
            image.set_shape([None, None, channels])
        return {**ex, key: image}

    return op


@register("resize")
def resize(size: int | Sequence[int], key: str = "image", method: str = "bilinear",
           antialias: bool = True):
    """Resizes to ``size`` (int or ``(h, w)``), keeping the dtype. Normalised boxes need
    no change."""
    h, w = _hw(size)

    def op(ex, seed):
        image = require(ex, key, "resize")
        if tuple(image.shape[-3:-1]) == (h, w):  # static and already that size: identity
            return ex
        out = tf.image.resize(image, (h, w), method=method, antialias=antialias)
        return {**ex, key: _restore_dtype(out, image.dtype)}

    return op


@register("resize_small")
def resize_small(size: int, key: str = "image", method: str = "bilinear"):
    """Resizes so the shorter side is ``size``, keeping the aspect ratio."""

    def op(ex, seed):
        image = require(ex, key, "resize_small")
        shape = tf.shape(image)
        h, w = tf.cast(shape[0], tf.float32), tf.cast(shape[1], tf.float32)
        ratio = float(size) / tf.minimum(h, w)
        new = (tf.cast(tf.round(h * ratio), tf.int32), tf.cast(tf.round(w * ratio), tf.int32))
        out = tf.image.resize(image, new, method=method, antialias=True)
        return {**ex, key: _restore_dtype(out, image.dtype)}

    return op


@register("central_crop")
def central_crop(size: int | Sequence[int], key: str = "image", boxes: str | None = None,
                 box_mask: str = "box_mask"):
    """Crops the central ``size`` window (the image must be at least that large).
    ``boxes``: the key of ``(N, 4)`` normalised cxcywh boxes (the detection task's
    format), moved with the image; a box cut to nothing is zeroed and masked out in
    ``box_mask``."""
    h, w = _hw(size)

    def op(ex, seed):
        image = require(ex, key, "central_crop")
        shape = tf.shape(image)
        top, left = (shape[0] - h) // 2, (shape[1] - w) // 2
        out = image[top:top + h, left:left + w]
        out.set_shape([h, w, image.shape[-1]])
        ex = _boxes_after_crop(ex, boxes, box_mask, (shape[0], shape[1]), top, left, h, w)
        return {**ex, key: out}

    return op


@register("random_crop")
def random_crop(size: int | Sequence[int], key: str = "image", boxes: str | None = None,
                box_mask: str = "box_mask"):
    """Crops a random ``size`` window.
    ``boxes``: the key of ``(N, 4)`` normalised cxcywh boxes (the detection task's
    format), moved with the image; a box cut to nothing is zeroed and masked out in
    ``box_mask``."""
    h, w = _hw(size)

    def op(ex, seed):
        image = require(ex, key, "random_crop")
        channels = image.shape[-1] if image.shape[-1] is not None else tf.shape(image)[-1]
        if boxes is None:
            out = tf.image.stateless_random_crop(image, [h, w, channels], seed=seed)
            return {**ex, key: out}
        shape = tf.shape(image)
        seeds = tf.random.experimental.stateless_split(seed, 2)
        top = tf.random.stateless_uniform([], seeds[0], 0, shape[0] - h + 1, dtype=tf.int32)
        left = tf.random.stateless_uniform([], seeds[1], 0, shape[1] - w + 1, dtype=tf.int32)
        out = tf.ensure_shape(image[top:top + h, left:left + w], [h, w, image.shape[-1]])
        ex = _boxes_after_crop(ex, boxes, box_mask, (shape[0], shape[1]), top, left, h, w)
        return {**ex, key: out}

    return op


@register("inception_crop")
def inception_crop(size: int | Sequence[int], key: str = "image", area_min: float = 0.05,
                   area_max: float = 1.0, aspect_min: float = 0.75, aspect_max: float = 1.333,
                   boxes: str | None = None, box_mask: str = "box_mask"):
    """Random-resized crop (Inception style): random area/aspect box, resized to
    ``size``.
    ``boxes``: the key of ``(N, 4)`` normalised cxcywh boxes (the detection task's
    format), moved with the image; a box cut to nothing is zeroed and masked out in
    ``box_mask``."""
    h, w = _hw(size)

    def op(ex, seed):
        image = require(ex, key, "inception_crop")
        begin, crop_size, _ = tf.image.stateless_sample_distorted_bounding_box(
            tf.shape(image), tf.zeros([0, 0, 4], tf.float32), seed=seed,
            area_range=(area_min, area_max), aspect_ratio_range=(aspect_min, aspect_max),
            min_object_covered=0.0, use_image_if_no_bounding_boxes=True,
        )
        crop = tf.slice(image, begin, crop_size)
        out = tf.image.resize(crop, (h, w), antialias=True)
        shape = tf.shape(image)
        ex = _boxes_after_crop(ex, boxes, box_mask, (shape[0], shape[1]), begin[0], begin[1],
                               crop_size[0], crop_size[1])
        return {**ex, key: _restore_dtype(out, image.dtype)}

    return op


@register("flip_lr")
def flip_lr(key: str = "image", boxes: str | None = None):
    """Flips left-right with probability 1/2 (works on images and videos). ``boxes``: the
    key of ``(N, 4)`` normalised cxcywh boxes, flipped with the image (``cx -> 1 - cx``;
    all-zero padding rows stay zero)."""

    def op(ex, seed):
        image = require(ex, key, "flip_lr")
        flip = tf.random.stateless_uniform([], seed) < 0.5
        out = tf.cond(flip, lambda: tf.reverse(image, axis=[-2]), lambda: image)
        ex = {**ex, key: out}
        if boxes is not None:
            b = tf.cast(require(ex, boxes, "flip_lr"), tf.float32)
            real = tf.reduce_any(b != 0, axis=-1, keepdims=True)
            mirrored = tf.concat([1.0 - b[:, :1], b[:, 1:]], -1)
            ex[boxes] = tf.where(flip & real, mirrored, b)
        return ex

    return op


@register("value_range")
def value_range(vmin: float = -1.0, vmax: float = 1.0, key: str = "image",
                in_min: float = 0.0, in_max: float = 255.0, clip: bool = False):
    """Linearly maps ``[in_min, in_max]`` to ``[vmin, vmax]`` (float32)."""

    def op(ex, seed):
        x = _to_float(require(ex, key, "value_range"))
        x = (x - in_min) / (in_max - in_min) * (vmax - vmin) + vmin
        if clip:
            x = tf.clip_by_value(x, vmin, vmax)
        return {**ex, key: x}

    return op


@register("normalize")
def normalize(stats: str | None = "imagenet", mean: Sequence[float] | None = None,
              std: Sequence[float] | None = None, key: str = "image"):
    """``(x / 255 - mean) / std`` per channel; ``stats`` names a preset in MEANS_STDS."""
    if mean is None or std is None:
        if stats not in MEANS_STDS:
            raise ValueError(f"normalize: unknown stats {stats!r}; use one of "
                             f"{list(MEANS_STDS)} or pass mean= and std=.")
        mean, std = MEANS_STDS[stats]
    m = tf.constant(mean, tf.float32)
    s = tf.constant(std, tf.float32)

    def op(ex, seed):
        x = _to_float(require(ex, key, "normalize")) / 255.0
        return {**ex, key: (x - m) / s}

    return op


@register("sample_frames")
def sample_frames(num_frames: int, stride: int = 1, key: str = "video", random: bool = True):
    """Takes ``num_frames`` frames ``stride`` apart from a ``(F, H, W, C)`` video.

    The clip starts at a random frame (``random=True``) or is centred. Short
    videos are looped so the output always has ``num_frames`` frames.
    """

    def op(ex, seed):
        video = require(ex, key, "sample_frames")
        total = tf.shape(video)[0]
        span = (num_frames - 1) * stride + 1
        max_start = tf.maximum(total - span, 0)
        if random:
            start = tf.random.stateless_uniform([], seed, 0, max_start + 1, dtype=tf.int32)
        else:
            start = max_start // 2
        idx = (start + tf.range(num_frames) * stride) % tf.maximum(total, 1)
        out = tf.gather(video, idx)
        out.set_shape([num_frames] + video.shape[1:].as_list())
        return {**ex, key: out}

    return op


@register("randaugment")
def randaugment(num_layers: int = 2, magnitude: int = 9, key: str = "image"):
    """RandAugment (Cubuk et al. 2019) on uint8 images: see :mod:`jaxmm.data.randaugment`."""
    from jaxmm.data.randaugment import rand_augment

    def op(ex, seed):
        image = require(ex, key, "randaugment")
        if image.dtype != tf.uint8:
            raise TypeError("randaugment expects uint8 images; put it before value_range/"
                            "normalize.")
        return {**ex, key: rand_augment(image, seed, num_layers, magnitude)}

    return op


@register("scene_boxes")
def scene_boxes(max_objects: int = 9, key: str = "objects", image_key: str = "image"):
    """The built-in scenes' objects -> detection targets (before any resize or crop).

    Reads ``objects/shape`` (class ids), ``objects/cx``, ``objects/cy`` and
    ``objects/radius`` (pixels) and the image size; writes ``boxes``
    ``(max_objects, 4)`` normalised cxcywh (each shape's exact drawn box,
    :data:`jaxmm.data.scenes.BOX_EXTENTS`, clipped to the image), ``labels``
    ``(max_objects,)`` (the shape) and ``box_mask`` (1 = a real object); objects past
    ``max_objects`` are dropped.
    """
    from jaxmm.data.scenes import BOX_EXTENTS, SHAPES

    extents = tf.constant([BOX_EXTENTS[s] for s in SHAPES], tf.float32)

    def op(ex, seed):
        objects = {k: require(ex, f"{key}/{k}", "scene_boxes")
                   for k in ("shape", "cx", "cy", "radius")}
        image = require(ex, image_key, "scene_boxes")
        h = tf.cast(tf.shape(image)[-3], tf.float32)
        w = tf.cast(tf.shape(image)[-2], tf.float32)
        shape = tf.cast(objects["shape"][:max_objects], tf.int32)
        ext = tf.gather(extents, shape)
        cx, cy, r = (tf.cast(objects[k][:max_objects], tf.float32) for k in ("cx", "cy", "radius"))
        x0 = tf.clip_by_value((cx - ext[:, 0] * r) / w, 0.0, 1.0)
        x1 = tf.clip_by_value((cx + ext[:, 0] * r) / w, 0.0, 1.0)
        y0 = tf.clip_by_value((cy - ext[:, 1] * r) / h, 0.0, 1.0)
        y1 = tf.clip_by_value((cy + ext[:, 2] * r) / h, 0.0, 1.0)
        return _padded_targets(ex, key, _cxcywh(x0, y0, x1, y1), shape, max_objects)

    return op


@register("tfds_boxes")
def tfds_boxes(max_objects: int = 100, key: str = "objects", crowd: bool = False):
    """tfds detection objects (``objects/bbox`` normalised ``(ymin, xmin, ymax, xmax)``,
    ``objects/label``, ``objects/is_crowd``: tfds ``coco/2017`` and ``jaxmm data
    build-coco-detection``) -> the detection task's ``boxes`` ``(max_objects, 4)``
    normalised cxcywh, ``labels`` and ``box_mask``. Crowd regions are dropped unless
    ``crowd`` (DETR trains without them); objects past ``max_objects`` are dropped."""

    def op(ex, seed):
        bbox = tf.cast(tf.reshape(require(ex, f"{key}/bbox", "tfds_boxes"), [-1, 4]),
                       tf.float32)
        label = tf.cast(require(ex, f"{key}/label", "tfds_boxes"), tf.int32)
        keep = tf.ones_like(label, tf.bool)
        if not crowd and f"{key}/is_crowd" in ex:
            keep = ~tf.cast(ex[f"{key}/is_crowd"], tf.bool)
        bbox, label = tf.boolean_mask(bbox, keep)[:max_objects], tf.boolean_mask(
            label, keep)[:max_objects]
        y0, x0, y1, x1 = tf.unstack(bbox, axis=-1)
        return _padded_targets(ex, key, _cxcywh(x0, y0, x1, y1), label, max_objects)

    return op
