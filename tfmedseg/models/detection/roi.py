"""ROIAlign over an FPN pyramid, mask-target cropping and mask pasting, on ``crop_and_resize``.

Every op here is ``tf.image.crop_and_resize`` plus elementwise maths with fixed output shapes, so
the graph exports to a SavedModel that TF Serving runs (no ``py_function``, no ragged tensors).

Sampling geometry ("aligned" ROIAlign, He et al. 2017, as Detectron2 ``aligned=True``): pixel ``k``
covers ``[k, k + 1)``, a box ``(y0, x0, y1, x1)`` in pixels is divided into ``n x n`` bins and
each bin is sampled bilinearly at ``sampling_ratio x sampling_ratio`` regularly spaced points that
are averaged. For a linear feature map the result is exactly the map's value at the bin centre.

Level assignment (FPN, Lin et al. 2017, eq. 1): a box of side ``sqrt(h * w)`` pixels is pooled
from ``P_k``, ``k = floor(k0 + log2(sqrt(h * w) / 224))`` with ``k0 = 4``, clipped to the levels
available.

Example:
    >>> import numpy as np
    >>> feat = np.arange(16, dtype=np.float32).reshape(1, 4, 4, 1)  # value = 4 * row + col
    >>> out = aligned_crop(feat, np.array([[0., 0., 2., 2.]], np.float32), np.array([0]), 1)
    >>> float(out[0, 0, 0, 0])  # bin centre (0.5, 0.5) in pixel-centre coordinates
    2.5
"""

from __future__ import annotations

from typing import Sequence

import keras
import numpy as np
import tensorflow as tf

from tfmedseg.data.box_crops import aligned_crop
from tfmedseg.errors import ConfigError
from tfmedseg.config import attribute_config

__all__ = [
    "aligned_crop",
    "assign_levels",
    "MultilevelROIAlign",
    "crop_mask_targets",
    "make_mini_masks",
    "paste_masks",
]


def assign_levels(boxes, min_level: int, max_level: int, canonical_size: float = 224.0, canonical_level: int = 4) -> tf.Tensor:
    """FPN level ``int32 [...]`` of ``[..., 4]`` pixel boxes (eq. 1 of the FPN paper)."""
    boxes = tf.convert_to_tensor(boxes, tf.float32)
    area = tf.maximum(boxes[..., 2] - boxes[..., 0], 0.0) * tf.maximum(boxes[..., 3] - boxes[..., 1], 0.0)
    side = tf.sqrt(tf.maximum(area, 1e-8))
    level = tf.floor(canonical_level + tf.math.log(side / canonical_size) / tf.math.log(2.0))
    return tf.cast(tf.clip_by_value(level, min_level, max_level), tf.int32)


@keras.saving.register_keras_serializable(package="tfmedseg")
class MultilevelROIAlign(keras.layers.Layer):
    """ROIAlign of image-space boxes from the pyramid level chosen by box size.

    The boxes are partitioned by level (``tf.dynamic_partition``), each level crops only its own
    boxes and the crops are stitched back in box order (``tf.dynamic_stitch``), as torchvision's
    ``MultiScaleRoIAlign`` does: one crop per box forward and one scatter per box in the gradient.

    Args:
        output_size: Bins per side ``n`` (7 for the box head, 14 for the mask head).
        min_level: Level of ``features[0]`` (2 for ``P2``).
        max_level: Level of ``features[-1]`` (5 for ``P5``).
        sampling_ratio: Samples per bin side. Default 1.
        canonical_size: FPN's 224-pixel canonical box side.
        canonical_level: FPN's ``k0 = 4``.

    Call args:
        features: List of ``max_level - min_level + 1`` maps ``[B, H / 2^l, W / 2^l, C]``.
        boxes: ``[B, R, 4]`` pixel boxes in the network input's coordinates, or ``[K, 4]`` with
            ``box_indices``.
        box_indices: Optional ``int32 [K]`` image of each of ``[K, 4]`` boxes.

    Returns:
        ``float32 [B, R, n, n, C]`` (``[K, n, n, C]`` with ``box_indices``).
    """

    def __init__(
        self,
        output_size: int = 7,
        min_level: int = 2,
        max_level: int = 5,
        sampling_ratio: int = 1,
        canonical_size: float = 224.0,
        canonical_level: int = 4,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if output_size < 1 or sampling_ratio < 1 or max_level < min_level:
            raise ConfigError(
                f"need output_size >= 1, sampling_ratio >= 1, max_level >= min_level; got "
                f"{output_size}, {sampling_ratio}, {min_level}..{max_level}",
                path="MultilevelROIAlign",
            )
        self.output_size = int(output_size)
        self.min_level = int(min_level)
        self.max_level = int(max_level)
        self.sampling_ratio = int(sampling_ratio)
        self.canonical_size = float(canonical_size)
        self.canonical_level = int(canonical_level)
        self.built = True  # no weights

    def call(self, features, boxes, box_indices=None):
        boxes = tf.stop_gradient(tf.cast(boxes, tf.float32))
        if box_indices is None:
            batch, rois = tf.shape(boxes)[0], tf.shape(boxes)[1]
            flat = tf.reshape(boxes, [-1, 4])
            indices = tf.repeat(tf.range(batch), rois)
        else:
            flat, indices = boxes, tf.cast(box_indices, tf.int32)
        n = len(features)
        top = min(self.max_level, self.min_level + n - 1)
        levels = assign_levels(flat, self.min_level, top, self.canonical_size, self.canonical_level) - self.min_level
        parts = tf.dynamic_partition(flat, levels, n)
        part_indices = tf.dynamic_partition(indices, levels, n)
        positions = tf.dynamic_partition(tf.range(tf.shape(flat)[0]), levels, n)
        crops = [
            aligned_crop(feature, part / float(2 ** (self.min_level + i)), idx, self.output_size, self.sampling_ratio)
            for i, (feature, part, idx) in enumerate(zip(features, parts, part_indices))
        ]
        out = tf.dynamic_stitch(positions, crops)
        out = tf.ensure_shape(out, [None, self.output_size, self.output_size, features[0].shape[-1]])
        if box_indices is not None:
            return out
        return tf.reshape(out, [batch, rois, self.output_size, self.output_size, out.shape[-1]])

    def get_config(self):
        return attribute_config(super().get_config(), self, "output_size", "min_level", "max_level", "sampling_ratio",
                                "canonical_size", "canonical_level")


def crop_mask_targets(gt_masks, gt_boxes, rois, matched_index, output_size: int) -> tf.Tensor:
    """Mask targets of ROIs, cropped from box-relative ("mini") ground-truth masks.

    Args:
        gt_masks: ``[B, N, M, M]`` masks in ``[0, 1]``, each covering its own ground-truth box
            (see :func:`make_mini_masks`).
        gt_boxes: ``[B, N, 4]`` pixel boxes the masks cover.
        rois: ``[B, R, 4]`` pixel ROIs.
        matched_index: ``int32 [B, R]`` ground-truth row of each ROI.
        output_size: ``S`` of the mask head (14 in the seed).

    Returns:
        ``float32 [B, R, S, S]`` bilinear targets in ``[0, 1]`` (threshold at 0.5 to binarise).
    """
    gt_masks = tf.convert_to_tensor(gt_masks, tf.float32)
    shape = tf.shape(gt_masks)
    batch, n, m = shape[0], shape[1], gt_masks.shape[-1]
    rois_shape = tf.shape(rois)
    g = tf.gather(tf.convert_to_tensor(gt_boxes, tf.float32), matched_index, batch_dims=1)  # [B, R, 4]
    gh = tf.maximum(g[..., 2] - g[..., 0], 1e-6)
    gw = tf.maximum(g[..., 3] - g[..., 1], 1e-6)
    scale = tf.stack([gh, gw, gh, gw], axis=-1) / float(m)
    rel = (tf.cast(rois, tf.float32) - tf.stack([g[..., 0], g[..., 1], g[..., 0], g[..., 1]], axis=-1)) / scale
    idx = tf.range(batch)[:, None] * n + tf.cast(matched_index, tf.int32)
    crops = aligned_crop(
        tf.reshape(gt_masks, [-1, m, m, 1]), tf.reshape(rel, [-1, 4]), tf.reshape(idx, [-1]), output_size
    )
    return tf.reshape(crops, [rois_shape[0], rois_shape[1], output_size, output_size])


def make_mini_masks(masks: np.ndarray, boxes: np.ndarray, size: int = 56) -> np.ndarray:
    """Resample full-image instance masks to ``size x size`` over their boxes (host side).

    Args:
        masks: ``[N, H, W]`` bool/float instance masks.
        boxes: ``[N, 4]`` pixel boxes of the instances.
        size: Output side ``M`` (Matterport ``MINI_MASK_SHAPE``: 56).

    Returns:
        ``float32 [N, M, M]`` in ``[0, 1]``.
    """
    masks = np.asarray(masks, np.float32)
    if len(masks) == 0:
        return np.zeros((0, size, size), np.float32)
    out = aligned_crop(masks[..., None], np.asarray(boxes, np.float32), np.arange(len(masks)), size)
    return np.asarray(out[..., 0])


def paste_masks(masks, boxes, image_size: Sequence[int]) -> tf.Tensor:
    """Paste ``S x S`` box-relative mask probabilities into full images (graph-friendly).

    Inside its box a mask is resampled bilinearly with edge clamping (like resizing the mask to
    the box, Matterport ``unmold_mask``); outside its box it is 0.

    Args:
        masks: ``[B, D, S, S]`` probabilities for the detections.
        boxes: ``[B, D, 4]`` pixel boxes; zero boxes (padding) give empty masks.
        image_size: ``(H, W)`` of the output.

    Returns:
        ``float32 [B, D, H, W]`` probabilities (threshold at 0.5 for binary masks).
    """
    masks = tf.convert_to_tensor(masks, tf.float32)
    boxes = tf.convert_to_tensor(boxes, tf.float32)
    h, w = int(image_size[0]), int(image_size[1])
    shape = tf.shape(masks)
    s = masks.shape[-1]
    flat = tf.reshape(masks, [-1, s, s, 1])
    flat = tf.pad(flat, [[0, 0], [1, 1], [1, 1], [0, 0]], mode="SYMMETRIC")
    b = tf.reshape(boxes, [-1, 4])
    y0, x0, y1, x1 = tf.unstack(b, axis=-1)
    bh = tf.maximum(y1 - y0, 1e-3)
    bw = tf.maximum(x1 - x0, 1e-3)
    # padded mask index of image pixel centre c: (c - y0) / bh * S + 0.5; normalise by (S + 1)
    norm = tf.stack(
        [
            ((0.5 - y0) / bh * s + 0.5) / (s + 1),
            ((0.5 - x0) / bw * s + 0.5) / (s + 1),
            ((h - 0.5 - y0) / bh * s + 0.5) / (s + 1),
            ((w - 0.5 - x0) / bw * s + 0.5) / (s + 1),
        ],
        axis=-1,
    )
    n = tf.shape(flat)[0]
    full = tf.image.crop_and_resize(flat, norm, tf.range(n), (h, w), extrapolation_value=0.0)[..., 0]
    cy = tf.range(h, dtype=tf.float32) + 0.5
    cx = tf.range(w, dtype=tf.float32) + 0.5
    inside_y = (cy[None, :] >= y0[:, None]) & (cy[None, :] < y1[:, None])  # [n, H]
    inside_x = (cx[None, :] >= x0[:, None]) & (cx[None, :] < x1[:, None])  # [n, W]
    inside = tf.cast(inside_y[:, :, None] & inside_x[:, None, :], tf.float32)
    return tf.reshape(full * inside, [shape[0], shape[1], h, w])
