"""Detection-target layer of Mask R-CNN: sample training ROIs and build their class/box/mask targets.

Per image: proposals (plus the ground-truth boxes, Model Garden style) are matched to the ground
truth (IoU >= 0.5 positive, < 0.5 negative), ``num_rois`` are sampled with at most
``positive_fraction`` positives and the rest filled with negatives (Model Garden; Matterport
leaves the remainder as zero padding), and targets are built for them. Fixed shapes throughout.

Example:
    >>> out = detection_targets(props, gt_boxes, gt_classes, gt_masks, num_rois=200)  # doctest: +SKIP
"""

from __future__ import annotations

from typing import Sequence

import tensorflow as tf

from tfmedseg.models.detection.box_coder import box_area, encode_boxes
from tfmedseg.models.detection.matching import assign_targets, sample_balanced, select_fixed
from tfmedseg.models.detection.roi import crop_mask_targets

__all__ = ["detection_targets"]


def detection_targets(
    proposals,
    gt_boxes,
    gt_classes,
    gt_masks,
    num_rois: int = 200,
    positive_fraction: float = 0.33,
    positive_iou: float = 0.5,
    mask_size: int = 14,
    variances: Sequence[float] = (0.1, 0.1, 0.2, 0.2),
    add_ground_truth: bool = True,
    seed: int | None = None,
) -> dict[str, tf.Tensor]:
    """Sampled ROIs and their targets.

    Args:
        proposals: ``[B, P, 4]`` pixel proposals (zero rows = padding).
        gt_boxes: ``[B, N, 4]`` padded pixel boxes; ``gt_classes [B, N]`` (``<= 0`` padding).
        gt_masks: ``[B, N, M, M]`` box-relative ("mini") masks.
        num_rois: ROIs per image ``R`` (Table 11: 200).
        positive_fraction: ``ROI_POSITIVE_RATIO`` (0.33).
        positive_iou: IoU for a positive ROI (0.5); below it a ROI is background.
        mask_size: Mask-target side (14 in the seed).
        variances: ``BBOX_STD_DEV``.
        add_ground_truth: Add the ground-truth boxes to the candidates.
        seed: Sampling seed.

    Returns:
        Dict: ``rois [B, R, 4]``, ``class_targets int32 [B, R]`` (0 = background),
        ``box_targets [B, R, 4]``, ``mask_targets [B, R, S, S]`` in {0, 1},
        ``valid [B, R]`` (1 = sampled ROI, 0 = filler) and ``positive [B, R]`` (float 0/1).
    """
    proposals = tf.convert_to_tensor(proposals, tf.float32)
    gt_boxes = tf.convert_to_tensor(gt_boxes, tf.float32)
    gt_classes = tf.cast(gt_classes, tf.int32)
    candidates = proposals
    if add_ground_truth:
        candidates = tf.concat([proposals, tf.where((gt_classes > 0)[..., None], gt_boxes, 0.0)], axis=1)
    match = assign_targets(candidates, gt_boxes, gt_classes, positive_iou, positive_iou, force_match_best=False)
    labels = tf.where(box_area(candidates) > 0.0, match["labels"], -1)
    labels = sample_balanced(labels, num_rois, positive_fraction, seed)
    idx, valid = select_fixed(labels, num_rois)
    rois = tf.gather(candidates, idx, batch_dims=1)
    positive = tf.gather(labels, idx, batch_dims=1) == 1
    matched = tf.gather(match["matched_index"], idx, batch_dims=1)
    classes = tf.where(positive, tf.gather(gt_classes, matched, batch_dims=1), 0)
    boxes = tf.gather(match["matched_boxes"], idx, batch_dims=1)
    box_targets = tf.where(positive[..., None], encode_boxes(boxes, rois, variances), 0.0)
    masks = tf.cast(crop_mask_targets(gt_masks, gt_boxes, rois, matched, mask_size) >= 0.5, tf.float32)
    return {
        "rois": tf.stop_gradient(rois),
        "class_targets": tf.stop_gradient(classes),
        "box_targets": tf.stop_gradient(box_targets),
        "mask_targets": tf.stop_gradient(masks),
        "valid": tf.cast(valid, tf.float32),
        "positive": tf.cast(positive, tf.float32),
    }
