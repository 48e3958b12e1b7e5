"""The chest detector's score: Jaccard of predicted and reference boxes (seed 001, Table 5).

The crops themselves (:func:`crop_box`, :class:`CropTransform`, :func:`crop_top_detection`) live in
:mod:`tfmedseg.data.box_crops` and are re-exported here.
"""

from __future__ import annotations

import numpy as np

from tfmedseg.data.box_crops import CropTransform, crop_box, crop_top_detection
from tfmedseg.models.detection.matching import box_iou

__all__ = ["CropTransform", "crop_box", "crop_top_detection", "box_jaccard_summary"]


def box_jaccard_summary(pred_boxes, gt_boxes) -> dict[str, float | list[float]]:
    """Jaccard (IoU) of paired boxes, as the seed reports the chest detector: min / mean / max.

    Args:
        pred_boxes: ``[N, 4]`` predicted boxes (one per image).
        gt_boxes: ``[N, 4]`` ground-truth boxes.

    Returns:
        ``{"min", "mean", "max", "per_image"}``.
    """
    p = np.asarray(pred_boxes, np.float32).reshape(-1, 4)
    g = np.asarray(gt_boxes, np.float32).reshape(-1, 4)
    iou = np.asarray(box_iou(p[:, None], g[:, None]))[:, 0, 0]
    return {"min": float(iou.min()), "mean": float(iou.mean()), "max": float(iou.max()), "per_image": iou.tolist()}
