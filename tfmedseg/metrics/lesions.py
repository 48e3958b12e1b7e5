"""Lesion detection as LiTS evaluates it: connected components, correspondence merging, TP/FP/FN.

Correspondence (the LiTS scoring code's ``detect_lesions``, re-implemented):

1. Label the connected components of the prediction (``p_1..p_n``) and of the reference
   (``g_1..g_m``) with the ``connectivity`` neighbourhood (default 1 = faces, ``scipy.ndimage.label``'s
   default, as LiTS) and count the pairwise intersections ``I[p, g]`` in voxels.
2. **Merge reference lesions bridged by one prediction.** Visiting the predictions in label order, the
   reference groups that ``p`` overlaps *and* for which ``p`` is the prediction with the largest
   overlap are merged into one reference group (the intersection columns are summed). A reference
   lesion shared by two predictions therefore goes to the one covering it most: the result does not
   depend on label order beyond ties.
3. **One group per prediction.** Every prediction keeps only its largest-overlap reference group.
4. **Merge predictions that share a reference group** into one predicted group (-> one-to-one).
5. A reference group is **detected** when the IoU of the merged prediction and merged reference
   groups passes the criterion: ``IoU > 0`` for ``iou_threshold == 0`` (LiTS's lenient criterion),
   ``IoU >= iou_threshold`` otherwise (seed 002 uses >= 0.5; the LiTS script uses a strict >).

Counting: a detected reference group credits as many true positives as the reference lesions merged
into it, so ``TP + FN`` always equals the number of reference components. ``FP`` is the number of
predicted groups that detect nothing (no overlap at all, or overlap below the criterion).
The LiTS script records the group size at the time of each merge; we count the original lesions in
the final group, which is what "keeps the reference lesion count invariant" means.

Lesion size groups (seed 002 Table 4.1): small ``< 1000`` voxels, medium ``1000 ..= 10000``, large
``> 10000``, by the voxel count of each (merged) reference group. The Dice of a group is
``2|P_g∩G| / (|P_g| + |G|)`` with its merged prediction (0 if none); a size group's Dice is the mean
over its reference groups (the seed does not say how it aggregated; this is per lesion).
"""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy import ndimage

from tfmedseg.errors import InvalidInputError
from tfmedseg.validation import as_binary, check_same_shape

__all__ = [
    "SIZE_GROUPS",
    "LesionMatch",
    "match_lesions",
    "compute_lesion_detection",
    "compute_dice_by_lesion_size",
    "lesion_size_group",
    "DETECTION_CRITERIA",
    "lesion_detection_counts",
    "lesion_detection_summary",
]

#: (name, lower bound inclusive, upper bound inclusive) in voxels, seed 002 Table 4.1.
SIZE_GROUPS = (("small", 0, 999), ("medium", 1000, 10000), ("large", 10001, None))


@dataclasses.dataclass
class LesionMatch:
    """One merged reference lesion group and its merged prediction.

    Attributes:
        ref_labels: Reference component labels merged into this group (1-based, from ``ref_label_map``).
        pred_labels: Predicted component labels merged and assigned to it (may be empty).
        n_ref: Number of reference lesions in the group (= ``len(ref_labels)``).
        ref_voxels: Voxels of the reference group.
        pred_voxels: Voxels of the merged prediction.
        intersection: Voxels in both.
        iou: Intersection over union of the two groups.
        dice: Dice of the two groups.
    """

    ref_labels: list[int]
    pred_labels: list[int]
    n_ref: int
    ref_voxels: int
    pred_voxels: int
    intersection: int
    iou: float
    dice: float


def lesion_size_group(n_voxels: int) -> str:
    """Returns ``"small"``, ``"medium"`` or ``"large"`` for a lesion volume in voxels."""
    for name, lo, hi in SIZE_GROUPS:
        if n_voxels >= lo and (hi is None or n_voxels <= hi):
            return name
    raise InvalidInputError(f"must be >= 0 voxels, got {n_voxels}", path="n_voxels")


def match_lesions(y_pred, y, connectivity: int = 1) -> tuple[list[LesionMatch], list[int], dict]:
    """Builds the LiTS one-to-one correspondence between predicted and reference lesion groups.

    Args:
        y_pred: Predicted binary lesion mask ``[D, H, W]`` (or ``[H, W]``).
        y: Reference binary lesion mask, same shape.
        connectivity: Connected-component neighbourhood, 1..ndim (1 = faces).

    Returns:
        ``(matches, unmatched_pred, info)``: one :class:`LesionMatch` per merged reference group;
        the labels of predicted components that overlap no reference lesion; ``info`` holds
        ``n_ref`` and ``n_pred`` (component counts) and the label maps ``pred_label_map`` /
        ``ref_label_map`` (int32, same shape as the masks).

    Raises:
        InvalidInputError: shapes differ or a mask holds NaN.
    """
    p = as_binary(y_pred, "y_pred")
    t = as_binary(y, "y")
    check_same_shape(p, t, ("y_pred", "y"))
    structure = ndimage.generate_binary_structure(max(p.ndim, 1), connectivity)
    p_lab, n_p = ndimage.label(p, structure=structure)
    g_lab, n_g = ndimage.label(t, structure=structure)
    both = (p_lab > 0) & (g_lab > 0)
    inter = np.zeros((n_p + 1, n_g + 1), dtype=np.int64)
    np.add.at(inter, (p_lab[both], g_lab[both]), 1)
    inter = inter[1:, 1:]
    p_size = np.bincount(p_lab.ravel(), minlength=n_p + 1)[1:]
    g_size = np.bincount(g_lab.ravel(), minlength=n_g + 1)[1:]

    # Step 2: merge reference columns bridged by one prediction (sequential, like LiTS).
    groups = [[j] for j in range(n_g)]  # column index -> original reference indices
    mat = inter.copy()
    for i in range(n_p):
        cols = np.nonzero(mat[i])[0]
        merge = [c for c in cols if int(np.argmax(mat[:, c])) == i]
        if len(merge) > 1:
            keep, rest = merge[0], merge[1:]
            mat[:, keep] = mat[:, merge].sum(axis=1)
            for c in rest:
                groups[keep].extend(groups[c])
            mat = np.delete(mat, rest, axis=1)
            groups = [g for k, g in enumerate(groups) if k not in set(rest)]

    # Step 3-4: each prediction goes to its largest-overlap group; predictions sharing a group merge.
    assigned: dict[int, list[int]] = {k: [] for k in range(len(groups))}
    unmatched = []
    for i in range(n_p):
        if mat.shape[1] == 0 or mat[i].max() == 0:
            unmatched.append(i + 1)
        else:
            assigned[int(np.argmax(mat[i]))].append(i)

    matches = []
    for k, members in enumerate(groups):
        preds = assigned[k]
        ref_vox = int(g_size[members].sum())
        pred_vox = int(p_size[preds].sum()) if preds else 0
        inter_vox = int(inter[np.ix_(preds, members)].sum()) if preds else 0
        union = ref_vox + pred_vox - inter_vox
        matches.append(
            LesionMatch(
                ref_labels=[m + 1 for m in sorted(members)],
                pred_labels=[q + 1 for q in preds],
                n_ref=len(members),
                ref_voxels=ref_vox,
                pred_voxels=pred_vox,
                intersection=inter_vox,
                iou=inter_vox / union if union else 0.0,
                dice=2.0 * inter_vox / (ref_vox + pred_vox) if ref_vox + pred_vox else 0.0,
            )
        )
    info = {"n_ref": int(n_g), "n_pred": int(n_p), "pred_label_map": p_lab, "ref_label_map": g_lab}
    return matches, unmatched, info


def _passes(iou: float, threshold: float) -> bool:
    return iou > 0.0 if threshold == 0 else iou >= threshold


def compute_lesion_detection(
    y_pred, y, iou_threshold: float = 0.5, connectivity: int = 1
) -> dict[str, float]:
    """LiTS lesion detection counts and precision / recall for one case.

    Args:
        y_pred: Predicted binary lesion mask ``[D, H, W]`` (or ``[H, W]``).
        y: Reference binary lesion mask, same shape.
        iou_threshold: 0 for the ``IoU > 0`` criterion, else a match needs ``IoU >= iou_threshold``.
        connectivity: Connected-component neighbourhood (1 = faces).

    Returns:
        ``{"tp", "fp", "fn", "n_ref", "n_pred", "precision", "recall"}``; precision is NaN without
        predicted groups, recall NaN without reference lesions (sum the counts over cases instead).

    Example:
        >>> y = np.zeros((1, 8, 8)); y[0, 1:3, 1:3] = 1; y[0, 5:7, 5:7] = 1
        >>> p = np.zeros((1, 8, 8)); p[0, 1:3, 1:3] = 1
        >>> compute_lesion_detection(p, y)["recall"]
        0.5
    """
    if not 0.0 <= float(iou_threshold) <= 1.0:
        raise InvalidInputError(f"must be in [0, 1], got {iou_threshold}", path="iou_threshold")
    matches, unmatched, info = match_lesions(y_pred, y, connectivity=connectivity)
    tp = fp = 0
    for m in matches:
        if m.pred_labels and _passes(m.iou, iou_threshold):
            tp += m.n_ref
        elif m.pred_labels:
            fp += 1
    fp += len(unmatched)
    fn = info["n_ref"] - tp
    n_pred_groups = sum(1 for m in matches if m.pred_labels) + len(unmatched)
    return {
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "n_ref": info["n_ref"],
        "n_pred": n_pred_groups,
        "precision": tp / (tp + fp) if tp + fp else float("nan"),
        "recall": tp / info["n_ref"] if info["n_ref"] else float("nan"),
    }


def compute_dice_by_lesion_size(y_pred, y, connectivity: int = 1) -> dict[str, dict[str, float]]:
    """Per-lesion Dice after LiTS correspondence, grouped by reference lesion size.

    Args:
        y_pred: Predicted binary lesion mask.
        y: Reference binary lesion mask, same shape.
        connectivity: Connected-component neighbourhood (1 = faces).

    Returns:
        ``{"small": {"dice": mean, "count": n, "dices": [...]}, "medium": ..., "large": ...}``;
        ``dice`` is NaN for a group without lesions. Combine cases by concatenating ``dices``.
    """
    matches, _, _ = match_lesions(y_pred, y, connectivity=connectivity)
    out = {name: {"dices": []} for name, _, _ in SIZE_GROUPS}
    for m in matches:
        out[lesion_size_group(m.ref_voxels)]["dices"].append(m.dice)
    for v in out.values():
        v["count"] = len(v["dices"])
        v["dice"] = float(np.mean(v["dices"])) if v["dices"] else float("nan")
    return out


#: The two LiTS detection criteria used in reports: ``(tag, iou_threshold)`` (IoU > 0 and IoU >= 0.5).
DETECTION_CRITERIA = (("iou0", 0.0), ("iou50", 0.5))


def lesion_detection_counts(y_pred, y, criteria=DETECTION_CRITERIA, connectivity: int = 1) -> dict[str, int]:
    """One case's lesion TP / FP / FN under each criterion, as report-row keys.

    Returns:
        ``{f"lesion_{tp|fp|fn}_{tag}": count}`` for each ``(tag, iou_threshold)`` of ``criteria``.
    """
    row = {}
    for tag, threshold in criteria:
        det = compute_lesion_detection(y_pred, y, iou_threshold=threshold, connectivity=connectivity)
        row.update({f"lesion_{k}_{tag}": det[k] for k in ("tp", "fp", "fn")})
    return row


def lesion_detection_summary(rows, criteria=DETECTION_CRITERIA) -> dict[str, float]:
    """Precision and recall of lesion detection from the counts of :func:`lesion_detection_counts`
    summed over the cases (rows); NaN where a denominator is 0.

    Returns:
        ``{f"precision_{tag}", f"recall_{tag}"}`` for each criterion.
    """
    out = {}
    for tag, _ in criteria:
        tp, fp, fn = (sum(r[f"lesion_{k}_{tag}"] for r in rows) for k in ("tp", "fp", "fn"))
        out[f"precision_{tag}"] = tp / (tp + fp) if tp + fp else float("nan")
        out[f"recall_{tag}"] = tp / (tp + fn) if tp + fn else float("nan")
    return out
