"""Region proposal network: shared head over pyramid levels, proposal generation, RPN targets.

Faster R-CNN's RPN (Ren et al., 2015) on FPN levels as in Matterport Mask R-CNN: a shared 3x3 conv
(512) + ReLU, then 1x1 convs giving ``2k`` objectness logits (softmax, background/object) and
``4k`` box deltas per cell, ``k`` = anchors per cell (3 ratios). Outputs of all levels are
concatenated in the order of :func:`tfmedseg.models.detection.anchors.multilevel_anchors`.

Example:
    >>> head = RPNHead(num_anchors=3, filters=8)
    >>> logits, deltas = head([np.zeros((1, 4, 4, 8), np.float32), np.zeros((1, 2, 2, 8), np.float32)])
    >>> tuple(logits.shape), tuple(deltas.shape)
    ((1, 60, 2), (1, 60, 4))
"""

from __future__ import annotations

from typing import Sequence

import keras
import numpy as np  # noqa: F401  (doctest)
import tensorflow as tf

from tfmedseg.models.detection.box_coder import clip_boxes, decode_boxes, encode_boxes
from tfmedseg.models.detection.matching import assign_targets, sample_balanced
from tfmedseg.models.detection.nms import proposal_nms

__all__ = ["RPNHead", "generate_proposals", "rpn_targets"]


@keras.saving.register_keras_serializable(package="tfmedseg")
class RPNHead(keras.layers.Layer):
    """Shared-weight RPN head applied to every pyramid level.

    Args:
        num_anchors: Anchors per cell ``k`` (3 ratios x 1 scale per level).
        filters: Width of the shared 3x3 conv (Matterport: 512).
        weight_decay: L2 factor on the conv kernels (0 = none).

    Call args:
        features: List of ``[B, h_l, w_l, C]`` maps, finest first.

    Returns:
        ``(logits [B, A, 2], deltas [B, A, 4])`` with ``A = sum_l h_l * w_l * k``.
    """

    def __init__(self, num_anchors: int = 3, filters: int = 512, weight_decay: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        self.num_anchors = int(num_anchors)
        self.filters = int(filters)
        self.weight_decay = float(weight_decay)
        reg = keras.regularizers.L2(weight_decay) if weight_decay > 0 else None
        self.shared = keras.layers.Conv2D(filters, 3, padding="same", activation="relu", kernel_regularizer=reg, name="rpn_conv_shared")
        self.cls = keras.layers.Conv2D(2 * num_anchors, 1, kernel_regularizer=reg, name="rpn_class_raw")
        self.box = keras.layers.Conv2D(4 * num_anchors, 1, kernel_regularizer=reg, name="rpn_bbox_pred")

    def build(self, input_shape):
        shape = tuple(input_shape[0])
        self.shared.build(shape)
        inner = shape[:-1] + (self.filters,)
        self.cls.build(inner)
        self.box.build(inner)

    def call(self, features):
        logits, deltas = [], []
        for f in features:
            x = self.shared(f)
            b = tf.shape(x)[0]
            logits.append(tf.reshape(self.cls(x), [b, -1, 2]))
            deltas.append(tf.reshape(self.box(x), [b, -1, 4]))
        return tf.concat(logits, axis=1), tf.concat(deltas, axis=1)

    def get_config(self):
        return {**super().get_config(), "num_anchors": self.num_anchors, "filters": self.filters, "weight_decay": self.weight_decay}


def generate_proposals(logits, deltas, anchors, image_size: Sequence[int], pre_nms_top_k: int, max_proposals: int, iou_threshold: float, variances: Sequence[float]) -> tf.Tensor:
    """Proposal layer: decode the RPN deltas on the anchors, clip, top-k, NMS.

    Args:
        logits: ``[B, A, 2]`` RPN logits.
        deltas: ``[B, A, 4]`` RPN deltas.
        anchors: ``[A, 4]`` pixel anchors.
        image_size: ``(H, W)`` for clipping.
        pre_nms_top_k, max_proposals, iou_threshold: See :func:`~tfmedseg.models.detection.nms.proposal_nms`.
        variances: ``RPN_BBOX_STD_DEV``.

    Returns:
        ``float32 [B, max_proposals, 4]`` proposals (zero rows = none), gradient-stopped.
    """
    scores = tf.nn.softmax(logits, axis=-1)[..., 1]
    boxes = clip_boxes(decode_boxes(deltas, tf.convert_to_tensor(anchors, tf.float32)[None], variances), image_size)
    return tf.stop_gradient(proposal_nms(boxes, scores, pre_nms_top_k, max_proposals, iou_threshold))


def rpn_targets(anchors, gt_boxes, gt_classes, num_samples: int = 256, positive_fraction: float = 0.5, positive_iou: float = 0.7, negative_iou: float = 0.3, variances: Sequence[float] = (0.1, 0.1, 0.2, 0.2), seed: int | None = None) -> dict[str, tf.Tensor]:
    """RPN training targets: IoU matching (with best-anchor forcing) and balanced sampling.

    Args:
        anchors: ``[A, 4]`` pixel anchors.
        gt_boxes: ``[B, N, 4]`` padded pixel boxes; ``gt_classes [B, N]`` (``<= 0`` padding).
        num_samples: Anchors per image in the loss (Table 11: 256).
        positive_fraction: Largest positive share (0.5).
        positive_iou, negative_iou: Matching thresholds (0.7 / 0.3).
        variances: Box-coder variances.
        seed: Sampling seed.

    Returns:
        ``labels int32 [B, A]`` (1 / 0 / -1 not sampled) and ``deltas float32 [B, A, 4]``.
    """
    match = assign_targets(anchors, gt_boxes, gt_classes, positive_iou, negative_iou, force_match_best=True)
    labels = sample_balanced(match["labels"], num_samples, positive_fraction, seed)
    deltas = encode_boxes(match["matched_boxes"], tf.convert_to_tensor(anchors, tf.float32)[None], variances)
    return {"labels": tf.stop_gradient(labels), "deltas": tf.stop_gradient(deltas)}
