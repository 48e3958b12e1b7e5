"""LiTS-style evaluation of liver and tumour label maps (seed 002 Tables 4.6-4.8, seed 003).

:func:`evaluate_liver_tumour_case` returns one flat row per case (for the per-case CSV);
:func:`summarize_liver_tumour` pools the rows into the seed's summary figures: Dice per case
(mean), global Dice (voxels pooled over all cases), VOE, RVD, ASSD, MSSD, lesion detection at
IoU > 0 and IoU >= 0.5 (counts summed, then precision/recall), and Dice by lesion size (per-lesion
Dice after LiTS correspondence, pooled over cases).
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

from tfmedseg.metrics.lesions import SIZE_GROUPS, compute_dice_by_lesion_size, compute_lesion_detection
from tfmedseg.metrics.overlap import compute_dice, compute_overlap_counts, compute_rvd, compute_voe
from tfmedseg.metrics.surface import compute_assd, compute_mssd

__all__ = ["evaluate_liver_tumour_case", "summarize_liver_tumour"]


def _finite_mean(values: Sequence[float]) -> float:
    vals = [v for v in values if v is not None and math.isfinite(v)]
    return float(np.mean(vals)) if vals else float("nan")


def evaluate_liver_tumour_case(labels: np.ndarray, reference: np.ndarray, spacing: Sequence[float], case_id: str = "") -> dict[str, Any]:
    """Metrics of one case; ``labels`` and ``reference`` are 0/1/2 maps ``[D, H, W]``, spacing in mm.

    Liver is ``label >= 1`` (liver including tumour, as LiTS scores it), tumour ``label == 2``.
    Surface distances of an empty mask are reported as NaN / inf by the metric functions and
    skipped in the summary means.
    """
    row: dict[str, Any] = {"case_id": case_id}
    for name, pred, ref in (("liver", labels >= 1, reference >= 1), ("tumour", labels == 2, reference == 2)):
        counts = compute_overlap_counts(pred, ref)
        row[f"{name}_dice"] = compute_dice(pred, ref)
        row[f"{name}_voe"] = compute_voe(pred, ref)
        row[f"{name}_rvd"] = compute_rvd(pred, ref) if ref.any() else float("nan")
        row[f"{name}_assd_mm"] = compute_assd(pred, ref, spacing=spacing) if (pred.any() or ref.any()) else float("nan")
        row[f"{name}_mssd_mm"] = compute_mssd(pred, ref, spacing=spacing) if (pred.any() or ref.any()) else float("nan")
        row[f"{name}_tp_voxels"] = counts["intersection"]
        row[f"{name}_pred_voxels"] = counts["pred"]
        row[f"{name}_ref_voxels"] = counts["ref"]
    for tag, threshold in (("iou0", 0.0), ("iou50", 0.5)):
        det = compute_lesion_detection(labels == 2, reference == 2, iou_threshold=threshold)
        for key in ("tp", "fp", "fn"):
            row[f"lesion_{key}_{tag}"] = det[key]
    by_size = compute_dice_by_lesion_size(labels == 2, reference == 2)
    for group, _, _ in SIZE_GROUPS:
        row[f"lesion_dices_{group}"] = by_size[group]["dices"]
    return row


def summarize_liver_tumour(rows: Sequence[dict[str, Any]]) -> dict[str, float]:
    """Pool per-case rows of :func:`evaluate_liver_tumour_case` into the seed's summary figures."""
    out: dict[str, float] = {"cases": float(len(rows))}
    for name in ("liver", "tumour"):
        out[f"{name}_dice_per_case"] = _finite_mean([r[f"{name}_dice"] for r in rows])
        tp = sum(r[f"{name}_tp_voxels"] for r in rows)
        total = sum(r[f"{name}_pred_voxels"] + r[f"{name}_ref_voxels"] for r in rows)
        out[f"{name}_global_dice"] = 2.0 * tp / total if total else 1.0
        for metric in ("voe", "rvd", "assd_mm", "mssd_mm"):
            out[f"{name}_{metric}"] = _finite_mean([r[f"{name}_{metric}"] for r in rows])
    for tag in ("iou0", "iou50"):
        tp = sum(r[f"lesion_tp_{tag}"] for r in rows)
        fp = sum(r[f"lesion_fp_{tag}"] for r in rows)
        fn = sum(r[f"lesion_fn_{tag}"] for r in rows)
        out[f"lesion_precision_{tag}"] = tp / (tp + fp) if tp + fp else float("nan")
        out[f"lesion_recall_{tag}"] = tp / (tp + fn) if tp + fn else float("nan")
    for group, _, _ in SIZE_GROUPS:
        dices = [d for r in rows for d in r[f"lesion_dices_{group}"]]
        out[f"tumour_dice_{group}"] = float(np.mean(dices)) if dices else float("nan")
        out[f"tumour_count_{group}"] = float(len(dices))
    return out
