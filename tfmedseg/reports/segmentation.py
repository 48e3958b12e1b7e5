"""Per-case segmentation report rows: every metric of a label map's classes as one flat dict."""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from tfmedseg.metrics.lesions import compute_dice_by_lesion_size
from tfmedseg.metrics.overlap import compute_overlap_counts, overlap_scores_from_counts
from tfmedseg.metrics.surface import compute_surface_distances, surface_scores
from tfmedseg.validation import as_array, check_same_shape, check_spacing

__all__ = ["LITS_CLASSES", "evaluate_segmentation_case"]

#: Label values of each class in a LiTS label map (0 background, 1 liver, 2 tumour; liver includes tumour).
LITS_CLASSES = {"liver": (1, 2), "tumour": (2,)}


def evaluate_segmentation_case(
    y_pred, y, *, spacing, classes: Mapping[str, Sequence[int]] = LITS_CLASSES, surface: bool = True,
    lesion_sizes: str | None = "tumour",
) -> dict[str, float]:
    """All per-case segmentation metrics of a label map, as one flat report row.

    Args:
        y_pred: Predicted label map ``[D, H, W]`` (or ``[H, W]``).
        y: Reference label map, same shape.
        spacing: Voxel size in mm per axis (required; for the surface distances).
        classes: ``{name: label values}``; default LiTS (liver = 1 or 2, tumour = 2).
        surface: Also compute ASSD / MSSD / HD95 (the slowest part).
        lesion_sizes: Class whose per-lesion Dice by size is added (``<name>_dice_small`` ...), or None.

    Returns:
        ``{f"{name}_{metric}": value}`` for metric in dice, iou, voe, rvd, assd, mssd, hd95 and the
        counts ``intersection``, ``pred``, ``ref`` (for the global Dice).
    """
    p = as_array(y_pred, "y_pred")
    t = as_array(y, "y")
    check_same_shape(p, t, ("y_pred", "y"))
    check_spacing(spacing, p.ndim)
    row: dict[str, float] = {}
    for name, values in classes.items():
        pm, tm = np.isin(p, values), np.isin(t, values)
        c = compute_overlap_counts(pm, tm)
        scores = overlap_scores_from_counts(c["intersection"], c["pred"], c["ref"])
        row.update({f"{name}_{k}": v for k, v in scores.items()})
        row.update({f"{name}_intersection": c["intersection"], f"{name}_pred": c["pred"], f"{name}_ref": c["ref"]})
        if surface:
            distances = surface_scores(*compute_surface_distances(pm, tm, spacing=spacing))
            row.update({f"{name}_{k}": v for k, v in distances.items()})
        if lesion_sizes == name:
            for group, v in compute_dice_by_lesion_size(pm, tm).items():
                row[f"{name}_dice_{group}"] = v["dice"]
    return row

