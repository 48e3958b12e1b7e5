"""Volume-overlap metrics for one case: Dice, IoU (Jaccard), VOE, signed RVD, and pooled (global) Dice.

All functions take binary masks of any rank (``[H, W]`` slices or ``[D, H, W]`` volumes; any non-zero
voxel is foreground), ``y_pred`` first and the reference ``y`` second, as MONAI does. They return
Python floats. Spacing is not needed: every quantity here is a ratio of voxel counts, in which the
voxel volume cancels.

Empty-mask conventions (the LiTS per-case convention, MONAI's ``ignore_empty=False``):

=====================  ==========  ==========  ==========  ===============
case                   Dice        IoU         VOE         RVD
=====================  ==========  ==========  ==========  ===============
``y`` and pred empty   1.0         1.0         0.0         0.0
``y`` empty, pred not  0.0         0.0         1.0         +inf
pred empty, ``y`` not  0.0         0.0         1.0         -1.0
=====================  ==========  ==========  ==========  ===============

With ``ignore_empty=True`` (MONAI's default for ``DiceMetric``) Dice / IoU / VOE are NaN whenever the
reference is empty, so that such cases drop out of a ``nanmean``.
"""

from __future__ import annotations

from typing import Iterable

import numpy as np

from tfmedseg.errors import InvalidInputError
from tfmedseg.validation import as_binary, check_same_shape

__all__ = [
    "overlap_scores_from_counts",
    "compute_overlap_counts",
    "compute_dice",
    "compute_iou",
    "compute_voe",
    "compute_rvd",
    "compute_global_dice",
]


def _masks(y_pred, y) -> tuple[np.ndarray, np.ndarray]:
    p = as_binary(y_pred, "y_pred")
    t = as_binary(y, "y")
    check_same_shape(p, t, ("y_pred", "y"))
    return p, t


def compute_overlap_counts(y_pred, y) -> dict[str, int]:
    """Voxel counts from which every overlap metric (and the pooled Dice) is computed.

    Args:
        y_pred: Predicted binary mask, any rank.
        y: Reference binary mask, same shape.

    Returns:
        ``{"intersection": |P∩Y|, "pred": |P|, "ref": |Y|}`` as ints (voxels).

    Raises:
        InvalidInputError: shapes differ or a mask holds NaN.
    """
    p, t = _masks(y_pred, y)
    return {
        "intersection": int(np.count_nonzero(p & t)),
        "pred": int(np.count_nonzero(p)),
        "ref": int(np.count_nonzero(t)),
    }


def _dice_from_counts(inter: int, pred: int, ref: int, ignore_empty: bool) -> float:
    if ref == 0 and ignore_empty:
        return float("nan")
    if pred + ref == 0:
        return 1.0
    return 2.0 * inter / (pred + ref)


def overlap_scores_from_counts(intersection: int, pred: int, ref: int) -> dict[str, float]:
    """Dice, IoU, VOE and RVD of one mask pair from its voxel counts (:func:`compute_overlap_counts`).

    Empty conventions (LiTS per case): both empty -> Dice 1, IoU 1, VOE 0, RVD 0; a prediction
    without reference -> Dice 0, IoU 0, RVD +inf.

    Returns:
        ``{"dice", "iou", "voe", "rvd"}``.
    """
    union = pred + ref - intersection
    iou = 1.0 if union == 0 else intersection / union
    rvd = (0.0 if pred == 0 else float("inf")) if ref == 0 else (pred - ref) / ref
    return {"dice": _dice_from_counts(intersection, pred, ref, False), "iou": iou, "voe": 1.0 - iou, "rvd": rvd}


def compute_dice(y_pred, y, ignore_empty: bool = False) -> float:
    """Dice = 2|P∩Y| / (|P| + |Y|) of one case.

    Args:
        y_pred: Predicted binary mask, any rank.
        y: Reference binary mask, same shape.
        ignore_empty: If True, return NaN when ``y`` is empty (MONAI's default); if False (default,
            LiTS per-case convention) both-empty gives 1.0 and a prediction without reference 0.0.

    Returns:
        Dice in [0, 1] (or NaN, see ``ignore_empty``).

    Example:
        >>> compute_dice(np.array([1, 1, 0, 0]), np.array([0, 1, 1, 0]))
        0.5
    """
    c = compute_overlap_counts(y_pred, y)
    return _dice_from_counts(c["intersection"], c["pred"], c["ref"], ignore_empty)


def compute_iou(y_pred, y, ignore_empty: bool = False) -> float:
    """IoU (Jaccard) = |P∩Y| / |P∪Y|; empty conventions as :func:`compute_dice`."""
    c = compute_overlap_counts(y_pred, y)
    if c["ref"] == 0 and ignore_empty:
        return float("nan")
    return overlap_scores_from_counts(c["intersection"], c["pred"], c["ref"])["iou"]


def compute_voe(y_pred, y, ignore_empty: bool = False) -> float:
    """Volumetric overlap error VOE = 1 - IoU (LiTS; seed 002 eq. 3.4)."""
    return 1.0 - compute_iou(y_pred, y, ignore_empty=ignore_empty)


def compute_rvd(y_pred, y) -> float:
    """Signed relative volume difference RVD = (|P| - |Y|) / |Y|.

    Positive values mean over-segmentation. This is medpy's ``ravd(result=y_pred, reference=y)``;
    note that the LiTS scoring script calls ``ravd(reference, prediction)``, i.e. divides by the
    prediction volume, so its sign and scale differ when the volumes differ a lot.

    Returns:
        RVD (unitless); 0.0 when both are empty, +inf when only ``y`` is empty.
    """
    c = compute_overlap_counts(y_pred, y)
    return overlap_scores_from_counts(c["intersection"], c["pred"], c["ref"])["rvd"]


def compute_global_dice(y_preds: Iterable, ys: Iterable) -> float:
    """Global Dice (LiTS): the Dice of all voxels pooled over several cases.

    Args:
        y_preds: Iterable of predicted binary masks (one per case; shapes may differ between cases).
        ys: Iterable of reference masks, same length and per-case shapes.

    Returns:
        2 Σ|P_i∩Y_i| / Σ(|P_i| + |Y_i|); 1.0 if every mask is empty.
    """
    preds, refs = list(y_preds), list(ys)
    if len(preds) != len(refs):
        raise InvalidInputError(f"must have one mask per case of y_preds ({len(preds)}), got {len(refs)}", path="ys")
    inter = total = 0
    for p, t in zip(preds, refs):
        c = compute_overlap_counts(p, t)
        inter += c["intersection"]
        total += c["pred"] + c["ref"]
    return 1.0 if total == 0 else 2.0 * inter / total
