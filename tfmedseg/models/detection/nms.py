"""Batched, fixed-output-size non-maximum suppression (graph- and TF-Serving-friendly).

Thin wrappers over ``tf.image.combined_non_max_suppression`` so every detector returns padded
tensors of a static size: ``boxes [B, K, 4]``, ``scores [B, K]``, ``classes [B, K]`` and the number
of valid rows ``[B]``; rows past the count are zeros. No Python loops over the batch, no ragged
tensors, so the same code runs eagerly, inside ``tf.function`` and in an exported SavedModel.

Example:
    >>> import numpy as np
    >>> boxes = np.array([[[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30]]], np.float32)
    >>> scores = np.array([[[0.9], [0.8], [0.7]]], np.float32)
    >>> out = batched_nms(boxes, scores, max_detections=3, iou_threshold=0.5)
    >>> int(out["num_detections"][0])
    2
"""

from __future__ import annotations

import tensorflow as tf

__all__ = ["batched_nms", "proposal_nms"]


def batched_nms(
    boxes,
    scores,
    max_detections: int,
    iou_threshold: float,
    score_threshold: float = float("-inf"),
    max_per_class: int | None = None,
) -> dict[str, tf.Tensor]:
    """Per-class NMS over a batch, merged into the ``max_detections`` best boxes per image.

    Args:
        boxes: ``[B, N, 4]`` class-agnostic or ``[B, N, C, 4]`` per-class boxes, pixels.
        scores: ``[B, N, C]`` scores of the ``C`` foreground classes (no background column).
        max_detections: ``K``, boxes kept per image.
        iou_threshold: Suppress a box overlapping a kept one of the same class by more than this.
        score_threshold: Drop boxes scoring below this first. Default: keep all.
        max_per_class: Boxes kept per class before merging. Default ``K``.

    Returns:
        Dict ``boxes float32 [B, K, 4]``, ``scores float32 [B, K]`` (descending),
        ``classes int32 [B, K]`` (1-based: column ``c`` of ``scores`` is class ``c + 1``; 0 for
        padding rows) and ``num_detections int32 [B]``.
    """
    boxes = tf.convert_to_tensor(boxes, tf.float32)
    scores = tf.convert_to_tensor(scores, tf.float32)
    if boxes.shape.rank == 3:
        boxes = boxes[:, :, None, :]
    nmsed_boxes, nmsed_scores, nmsed_classes, valid = tf.image.combined_non_max_suppression(
        boxes,
        scores,
        max_output_size_per_class=max_per_class or max_detections,
        max_total_size=max_detections,
        iou_threshold=iou_threshold,
        score_threshold=score_threshold,
        pad_per_class=False,
        clip_boxes=False,
    )
    valid = tf.cast(valid, tf.int32)
    row_valid = tf.range(max_detections)[None, :] < valid[:, None]
    classes = tf.where(row_valid, tf.cast(nmsed_classes, tf.int32) + 1, 0)
    return {
        "boxes": tf.where(row_valid[..., None], nmsed_boxes, 0.0),
        "scores": tf.where(row_valid, nmsed_scores, 0.0),
        "classes": classes,
        "num_detections": valid,
    }


def proposal_nms(boxes, scores, pre_nms_top_k: int, max_proposals: int, iou_threshold: float) -> tf.Tensor:
    """Region proposals: top-k by score, class-agnostic NMS, zero-padded to a fixed count.

    Args:
        boxes: ``[B, A, 4]`` decoded, clipped anchor boxes, pixels.
        scores: ``[B, A]`` objectness.
        pre_nms_top_k: Keep this many best-scoring boxes before NMS (Matterport: 6000).
        max_proposals: Output size ``P`` (Matterport: 2000 training, 1000 inference).
        iou_threshold: NMS IoU (Table 11: 0.7).

    Returns:
        ``float32 [B, P, 4]`` proposals by descending score; missing rows are all-zero boxes.
    """
    boxes = tf.convert_to_tensor(boxes, tf.float32)
    scores = tf.convert_to_tensor(scores, tf.float32)
    k = tf.minimum(pre_nms_top_k, tf.shape(scores)[1])
    top_scores, top_idx = tf.math.top_k(scores, k=k, sorted=True)
    top_boxes = tf.gather(boxes, top_idx, batch_dims=1)
    out = batched_nms(top_boxes, top_scores[..., None], max_detections=max_proposals, iou_threshold=iou_threshold)
    return out["boxes"]
