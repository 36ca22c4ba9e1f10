"""RandAugment (Cubuk et al., 2019) with TF stateless randomness.

``rand_augment(image, seed, num_layers, magnitude)`` applies ``num_layers``
transforms drawn uniformly from :data:`TRANSFORMS`, each at strength
``magnitude / 10`` of its maximum, with a random sign for signed transforms.
Images are uint8 ``(H, W, C)``; the output has the same shape and dtype.
"""

from __future__ import annotations

import math

import tensorflow as tf

__all__ = ["TRANSFORMS", "rand_augment"]

_FILL = 128.0


def _blend(a: tf.Tensor, b: tf.Tensor, factor: tf.Tensor) -> tf.Tensor:
    """``b + factor * (a - b)`` on floats, clipped to [0, 255] (PIL ImageEnhance)."""
    return tf.clip_by_value(b + factor * (a - b), 0.0, 255.0)


def _gray(x: tf.Tensor) -> tf.Tensor:
    return tf.image.rgb_to_grayscale(x) if x.shape[-1] == 3 else x


def _affine(x: tf.Tensor, transform: list) -> tf.Tensor:
    """Projective transform (8 params, output->input mapping), constant fill."""
    t = tf.cast(tf.stack(transform), tf.float32)[None]
    out = tf.raw_ops.ImageProjectiveTransformV3(
        images=x[None], transforms=t, output_shape=tf.shape(x)[:2],
        fill_value=_FILL, interpolation="BILINEAR", fill_mode="CONSTANT")
    return out[0]


def _autocontrast(x, m, sign):
    lo = tf.reduce_min(x, axis=[0, 1], keepdims=True)
    hi = tf.reduce_max(x, axis=[0, 1], keepdims=True)
    scale = tf.where(hi > lo, 255.0 / tf.maximum(hi - lo, 1e-6), 1.0)
    return tf.where(hi > lo, (x - lo) * scale, x)


def _equalize_channel(c):
    c = tf.cast(c, tf.int32)
    hist = tf.math.bincount(tf.reshape(c, [-1]), minlength=256, maxlength=256)
    nonzero = tf.boolean_mask(hist, hist > 0)
    step = (tf.reduce_sum(nonzero) - nonzero[-1]) // 255
    lut = (tf.cumsum(hist) - hist + step // 2) // tf.maximum(step, 1)
    lut = tf.clip_by_value(lut, 0, 255)
    out = tf.where(step > 0, tf.gather(lut, c), c)
    return tf.cast(out, tf.float32)


def _equalize(x, m, sign):
    channels = [_equalize_channel(x[..., i]) for i in range(x.shape[-1])]
    return tf.stack(channels, axis=-1)


def _rotate(x, m, sign):
    angle = sign * m * 30.0 * math.pi / 180.0
    h, w = tf.cast(tf.shape(x)[0], tf.float32), tf.cast(tf.shape(x)[1], tf.float32)
    cos, sin = tf.cos(angle), tf.sin(angle)
    cx, cy = (w - 1) / 2, (h - 1) / 2
    return _affine(x, [cos, -sin, cx - cos * cx + sin * cy,
                       sin, cos, cy - sin * cx - cos * cy, 0.0, 0.0])


def _solarize(x, m, sign):
    threshold = 256.0 - m * 256.0
    return tf.where(x >= threshold, 255.0 - x, x)


def _color(x, m, sign):
    return _blend(x, tf.broadcast_to(_gray(x), tf.shape(x)), 1.0 + sign * m * 0.9)


def _posterize(x, m, sign):
    bits = 8 - tf.cast(tf.round(m * 4.0), tf.int32)
    shift = 8 - bits
    xi = tf.cast(x, tf.int32)
    return tf.cast(tf.bitwise.left_shift(tf.bitwise.right_shift(xi, shift), shift), tf.float32)


def _contrast(x, m, sign):
    mean = tf.reduce_mean(_gray(x))
    return _blend(x, tf.fill(tf.shape(x), mean), 1.0 + sign * m * 0.9)


def _brightness(x, m, sign):
    return _blend(x, tf.zeros_like(x), 1.0 + sign * m * 0.9)


def _sharpness(x, m, sign):
    kernel = tf.constant([[1, 1, 1], [1, 5, 1], [1, 1, 1]], tf.float32) / 13.0
    c = x.shape[-1]
    k = tf.tile(kernel[:, :, None, None], [1, 1, c, 1])
    smooth = tf.nn.depthwise_conv2d(x[None], k, [1, 1, 1, 1], "SAME")[0]
    return _blend(x, smooth, 1.0 + sign * m * 0.9)


def _shear_x(x, m, sign):
    return _affine(x, [1.0, sign * m * 0.3, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0])


def _shear_y(x, m, sign):
    return _affine(x, [1.0, 0.0, 0.0, sign * m * 0.3, 1.0, 0.0, 0.0, 0.0])


def _translate_x(x, m, sign):
    dx = sign * m * 0.45 * tf.cast(tf.shape(x)[1], tf.float32)
    return _affine(x, [1.0, 0.0, -dx, 0.0, 1.0, 0.0, 0.0, 0.0])


def _translate_y(x, m, sign):
    dy = sign * m * 0.45 * tf.cast(tf.shape(x)[0], tf.float32)
    return _affine(x, [1.0, 0.0, 0.0, 0.0, 1.0, -dy, 0.0, 0.0])


def _identity(x, m, sign):
    return x


TRANSFORMS = {
    "identity": _identity,
    "autocontrast": _autocontrast,
    "equalize": _equalize,
    "rotate": _rotate,
    "solarize": _solarize,
    "color": _color,
    "posterize": _posterize,
    "contrast": _contrast,
    "brightness": _brightness,
    "sharpness": _sharpness,
    "shear_x": _shear_x,
    "shear_y": _shear_y,
    "translate_x": _translate_x,
    "translate_y": _translate_y,
}


def apply_transform(image: tf.Tensor, name: str, magnitude: float, sign: float = 1.0):
    """Applies one named transform at ``magnitude`` in [0, 10] to a uint8 image."""
    x = tf.cast(image, tf.float32)
    out = TRANSFORMS[name](x, tf.constant(magnitude / 10.0), tf.constant(sign))
    return tf.cast(tf.clip_by_value(tf.round(out), 0, 255), tf.uint8)


def rand_augment(image: tf.Tensor, seed: tf.Tensor, num_layers: int = 2,
                 magnitude: float = 9.0) -> tf.Tensor:
    """``num_layers`` random transforms at ``magnitude`` (0-10); uint8 in and out."""
    if not 0 <= magnitude <= 10:
        raise ValueError(f"randaugment magnitude must be in [0, 10], got {magnitude}.")
    x = tf.cast(image, tf.float32)
    m = tf.constant(magnitude / 10.0)
    fns = list(TRANSFORMS.values())
    for layer in range(num_layers):
        s = tf.random.experimental.stateless_fold_in(seed, layer)
        which = tf.random.stateless_uniform([], s, 0, len(fns), dtype=tf.int32)
        sign = tf.where(tf.random.stateless_uniform([], s[::-1]) < 0.5, -1.0, 1.0)
        branches = [lambda f=f, x=x, sg=sign: tf.ensure_shape(f(x, m, sg), x.shape) for f in fns]
        x = tf.switch_case(which, branches)
        x = tf.clip_by_value(tf.round(x), 0.0, 255.0)
    return tf.cast(x, tf.uint8)
