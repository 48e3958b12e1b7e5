"""Box encoding against anchors (centre/size deltas divided by variances) and its inverse.

The encoding shared by SSD and Faster/Mask R-CNN: for a box ``b`` and anchor ``a`` (both
``(y0, x0, y1, x1)`` pixels), with centres ``c``, sizes ``h, w``::

    t = ((cy_b - cy_a) / h_a, (cx_b - cx_a) / w_a, log(h_b / h_a), log(w_b / w_a)) / variances

SSD uses variances ``(0.1, 0.1, 0.2, 0.2)`` (``ssd_keras``); Mask R-CNN calls the same numbers
``BBOX_STD_DEV`` (``RPN_BBOX_STD_DEV`` for the RPN). Decoding clamps the log-size deltas to
``log(1000 / 16)`` so that an untrained head cannot overflow ``exp``.

Example:
    >>> import numpy as np
    >>> a = np.array([[0., 0., 10., 10.]], np.float32)
    >>> t = encode_boxes(np.array([[1., 1., 11., 11.]], np.float32), a, (0.1, 0.1, 0.2, 0.2))
    >>> np.round(np.asarray(t), 4).tolist()
    [[1.0, 1.0, 0.0, 0.0]]
"""

from __future__ import annotations

import math
from typing import Sequence

import tensorflow as tf

__all__ = ["SSD_VARIANCES", "MRCNN_BBOX_STD", "encode_boxes", "decode_boxes", "clip_boxes", "box_area"]

SSD_VARIANCES = (0.1, 0.1, 0.2, 0.2)
MRCNN_BBOX_STD = (0.1, 0.1, 0.2, 0.2)
_MAX_LOG_SCALE = math.log(1000.0 / 16.0)


def _center_size(boxes: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor]:
    y0, x0, y1, x1 = tf.unstack(boxes, axis=-1)
    h = y1 - y0
    w = x1 - x0
    return y0 + 0.5 * h, x0 + 0.5 * w, h, w


def encode_boxes(boxes, anchors, variances: Sequence[float] = SSD_VARIANCES) -> tf.Tensor:
    """Regression targets of ``boxes`` relative to ``anchors``.

    Args:
        boxes: ``[..., 4]`` ``(y0, x0, y1, x1)`` pixels; sizes must be positive where used.
        anchors: ``[..., 4]`` broadcastable to ``boxes``.
        variances: Four divisors ``(vy, vx, vh, vw)``.

    Returns:
        ``float32 [..., 4]`` deltas ``(dy, dx, dh, dw)``; rows with a zero-size box or anchor give
        finite garbage (size floored at 1e-6) and must be masked by the caller.
    """
    boxes = tf.convert_to_tensor(boxes, tf.float32)
    anchors = tf.convert_to_tensor(anchors, tf.float32)
    by, bx, bh, bw = _center_size(boxes)
    ay, ax, ah, aw = _center_size(anchors)
    ah = tf.maximum(ah, 1e-6)
    aw = tf.maximum(aw, 1e-6)
    deltas = tf.stack(
        [
            (by - ay) / ah,
            (bx - ax) / aw,
            tf.math.log(tf.maximum(bh, 1e-6) / ah),
            tf.math.log(tf.maximum(bw, 1e-6) / aw),
        ],
        axis=-1,
    )
    return deltas / tf.constant(variances, tf.float32)


def decode_boxes(deltas, anchors, variances: Sequence[float] = SSD_VARIANCES) -> tf.Tensor:
    """Boxes from regression deltas; the inverse of :func:`encode_boxes`.

    Args:
        deltas: ``[..., 4]`` ``(dy, dx, dh, dw)`` as produced by a box head.
        anchors: ``[..., 4]`` broadcastable anchors, pixels.
        variances: The variances used for encoding.

    Returns:
        ``float32 [..., 4]`` boxes ``(y0, x0, y1, x1)`` in pixels (not clipped).
    """
    deltas = tf.convert_to_tensor(deltas, tf.float32) * tf.constant(variances, tf.float32)
    anchors = tf.convert_to_tensor(anchors, tf.float32)
    ay, ax, ah, aw = _center_size(anchors)
    dy, dx, dh, dw = tf.unstack(deltas, axis=-1)
    cy = ay + dy * ah
    cx = ax + dx * aw
    h = ah * tf.exp(tf.minimum(dh, _MAX_LOG_SCALE))
    w = aw * tf.exp(tf.minimum(dw, _MAX_LOG_SCALE))
    return tf.stack([cy - 0.5 * h, cx - 0.5 * w, cy + 0.5 * h, cx + 0.5 * w], axis=-1)


def clip_boxes(boxes, image_size: Sequence[int]) -> tf.Tensor:
    """Clip ``[..., 4]`` pixel boxes to ``[0, H] x [0, W]``."""
    boxes = tf.convert_to_tensor(boxes, tf.float32)
    h, w = float(image_size[0]), float(image_size[1])
    limits = tf.constant([h, w, h, w], tf.float32)
    return tf.clip_by_value(boxes, 0.0, limits)


def box_area(boxes) -> tf.Tensor:
    """Area ``[...]`` of ``[..., 4]`` boxes in pixels^2 (0 for inverted boxes)."""
    boxes = tf.convert_to_tensor(boxes, tf.float32)
    return tf.maximum(boxes[..., 2] - boxes[..., 0], 0.0) * tf.maximum(boxes[..., 3] - boxes[..., 1], 0.0)
