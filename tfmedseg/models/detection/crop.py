"""Detector-box crops and their inverse mapping (SSD chest box -> 320x320 MaligNet input).

The chest box found by the SSD on a whole-body view is cropped from the view and resized to the
second stage's input (320x320, seed §2); :class:`CropTransform` maps boxes and masks predicted
on the crop back to the whole-body view (and the other way for ground truth). Host-side numpy,
run once per view.

Example:
    >>> img = np.zeros((100, 80), np.float32)
    >>> crop, tf_ = crop_box(img, (10, 20, 60, 60), output_size=20)
    >>> crop.shape, tf_.boxes_to_source([[0, 0, 20, 20]]).tolist()
    ((20, 20), [[10.0, 20.0, 60.0, 60.0]])
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
