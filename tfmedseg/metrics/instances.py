"""Instance metrics for bone-scan lesions and the chest box (seed 001, spec section 6).

Matching: per image, predictions (at or above ``score_threshold``, the seed evaluates at 0.7) are
visited by descending score and each takes the still unmatched reference instance of highest IoU if
that IoU is >= ``iou_threshold`` (0.5): greedy one-to-one, class-agnostic. IoU is the mask IoU when
both instances carry a mask, else the box IoU (``use="box"`` forces boxes).

From the matched pairs:

- **localisation** (Table 5): TP = matched pairs, FP = unmatched predictions, FN = unmatched references.
- **per class** c (Tables 4 and 6): TP_c = matched pairs whose reference *and* prediction are c;
  FP_c = predictions of class c that are not such a pair; FN_c = references of class c that are not.
  Precision, sensitivity and F1 per class, and their support-weighted averages (weights = number of
  reference instances of each class, sklearn's "weighted avg"; the weighted F1 is the weighted mean
  of per-class F1, not the harmonic mean of the weighted P and S, which matches the seed's numbers).
- **confusion matrix** (Fig. 17-18): counts of (reference class, predicted class) over matched pairs.
- **image-level metastasis** (Table 7): an image is predicted positive if it has a malignant
  prediction; it is a TP only if a malignant prediction is matched to a malignant reference. A
  reference-positive image without such a match is a FN (even if it has a false malignant alarm);
  a reference-negative image with a malignant prediction is a FP, without one a TN.

Instances are :class:`tfmedseg.datasets.case.Instance`-like objects (``class_name``, ``box``
``(y0, x0, y1, x1)`` exclusive ends, optional ``mask``) or dicts with those keys; predictions may add
``score``.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from tfmedseg.datasets.case import LESION_CLASSES
from tfmedseg.errors import InvalidInputError

__all__ = [
    "box_iou",
    "match_instances",
    "compute_instance_metrics",
    "compute_metastasis_detection",
    "compute_box_jaccard",
]

_USE = ("auto", "mask", "box")


def _get(obj: Any, key: str, default=None):
    if isinstance(obj, Mapping):
        return obj.get(key, default)
    return getattr(obj, key, default)


def box_iou(box_a: Sequence[float], box_b: Sequence[float]) -> float:
    """IoU of two ``(y0, x0, y1, x1)`` boxes (ends exclusive, pixels)."""
    a = np.asarray(box_a, np.float64)
    b = np.asarray(box_b, np.float64)
    if a.shape != (4,) or b.shape != (4,):
        raise InvalidInputError(f"boxes must be (y0, x0, y1, x1), got {a.tolist()} and {b.tolist()}", path="box")
    ih = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iw = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ih * iw
    area = lambda x: max(0.0, x[2] - x[0]) * max(0.0, x[3] - x[1])  # noqa: E731
    union = area(a) + area(b) - inter
    return float(inter / union) if union > 0 else 0.0


def _iou(pred, ref, use: str) -> float:
    pm, rm = _get(pred, "mask"), _get(ref, "mask")
    if use != "box" and pm is not None and rm is not None:
        pm, rm = np.asarray(pm, bool), np.asarray(rm, bool)
        if pm.shape != rm.shape:
            raise InvalidInputError(f"prediction mask {pm.shape} and reference mask {rm.shape} differ", path="mask")
        union = np.count_nonzero(pm | rm)
        return np.count_nonzero(pm & rm) / union if union else 0.0
    if use == "mask":
        raise InvalidInputError("use='mask' needs a mask on every instance", path="use")
    return box_iou(_get(pred, "box"), _get(ref, "box"))


def match_instances(
    preds: Sequence, refs: Sequence, iou_threshold: float = 0.5, score_threshold: float = 0.0, use: str = "auto"
) -> tuple[list[tuple[int, int, float]], list[int], list[int]]:
    """Greedy one-to-one matching by descending score for one image.

    Args:
        preds: Predicted instances (``class_name``, ``box``, optional ``mask`` and ``score``).
        refs: Reference instances.
        iou_threshold: Minimum IoU of a match (inclusive).
        score_threshold: Predictions scoring below it are ignored.
        use: ``"auto"`` (mask IoU when both have masks, else box), ``"mask"`` or ``"box"``.

    Returns:
        ``(pairs, unmatched_preds, unmatched_refs)``: ``(pred_index, ref_index, iou)`` tuples and the
        indices left over (ignored low-score predictions appear in neither).
    """
    if use not in _USE:
        raise InvalidInputError(f"must be one of {_USE}, got {use!r}", path="use")
    kept = [i for i, p in enumerate(preds) if float(_get(p, "score", 1.0)) >= score_threshold]
    kept.sort(key=lambda i: -float(_get(preds[i], "score", 1.0)))
    free = set(range(len(refs)))
    pairs, unmatched = [], []
    for i in kept:
        best, best_iou = None, -1.0
        for j in sorted(free):
            v = _iou(preds[i], refs[j], use)
            if v > best_iou:
                best, best_iou = j, v
        if best is not None and best_iou >= iou_threshold:
            pairs.append((i, best, best_iou))
            free.discard(best)
        else:
            unmatched.append(i)
    return pairs, unmatched, sorted(free)


def _prf(tp: int, fp: int, fn: int) -> dict[str, float]:
    p = tp / (tp + fp) if tp + fp else 0.0
    s = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * p * s / (p + s) if p + s else 0.0
    return {"precision": p, "sensitivity": s, "f1": f1, "tp": tp, "fp": fp, "fn": fn}


def compute_instance_metrics(
    preds_per_image: Sequence[Sequence],
    refs_per_image: Sequence[Sequence],
    classes: Sequence[str] = LESION_CLASSES,
    iou_threshold: float = 0.5,
    score_threshold: float = 0.0,
    use: str = "auto",
) -> dict[str, Any]:
    """Localisation, per-class and weighted precision / sensitivity / F1, and the confusion matrix.

    Args:
        preds_per_image: For each image, its predicted instances.
        refs_per_image: For each image, its reference instances (same number of images).
        classes: Class names, in the confusion-matrix order (default the seed-001 lesion classes).
        iou_threshold: IoU for a match (default 0.5, inclusive).
        score_threshold: Ignore predictions below this score (the seed uses 0.7).
        use: IoU on ``"auto"`` / ``"mask"`` / ``"box"``.

    Returns:
        ``{"localization": {...}, "per_class": {class: {...}}, "weighted": {"precision",
        "sensitivity", "f1"}, "confusion": int array [C, C] (rows = reference, cols = prediction),
        "support": {class: n}}``. A class without predictions has precision 0.

    Raises:
        InvalidInputError: image counts differ, an unknown class name, or bad ``use``.
    """
    if len(preds_per_image) != len(refs_per_image):
        raise InvalidInputError(
            f"must have one entry per image of preds_per_image ({len(preds_per_image)}), got {len(refs_per_image)}",
            path="refs_per_image",
        )
    index = {c: k for k, c in enumerate(classes)}
    n_c = len(classes)
    tp = np.zeros(n_c, int)
    n_pred = np.zeros(n_c, int)
    support = np.zeros(n_c, int)
    confusion = np.zeros((n_c, n_c), int)
    loc_tp = loc_fp = loc_fn = 0

    def cls(obj, arg):
        name = _get(obj, "class_name")
        if name not in index:
            raise InvalidInputError(f"class_name must be one of {tuple(classes)}, got {name!r}", path=arg)
        return index[name]

    for preds, refs in zip(preds_per_image, refs_per_image):
        pairs, un_p, un_r = match_instances(preds, refs, iou_threshold, score_threshold, use)
        loc_tp += len(pairs)
        loc_fp += len(un_p)
        loc_fn += len(un_r)
        for r in refs:
            support[cls(r, "refs_per_image")] += 1
        for i in [i for i, _, _ in pairs] + un_p:
            n_pred[cls(preds[i], "preds_per_image")] += 1
        for i, j, _ in pairs:
            ci, cj = cls(preds[i], "preds_per_image"), cls(refs[j], "refs_per_image")
            confusion[cj, ci] += 1
            if ci == cj:
                tp[ci] += 1
    per_class = {c: _prf(int(tp[k]), int(n_pred[k] - tp[k]), int(support[k] - tp[k])) for c, k in index.items()}
    w = support / support.sum() if support.sum() else np.zeros(n_c)
    weighted = {
        m: float(sum(w[k] * per_class[c][m] for c, k in index.items())) for m in ("precision", "sensitivity", "f1")
    }
    return {
        "localization": _prf(loc_tp, loc_fp, loc_fn),
        "per_class": per_class,
        "weighted": weighted,
        "confusion": confusion,
        "support": {c: int(support[k]) for c, k in index.items()},
    }


def compute_metastasis_detection(
    preds_per_image: Sequence[Sequence],
    refs_per_image: Sequence[Sequence],
    malignant: str = "malignant",
    iou_threshold: float = 0.5,
    score_threshold: float = 0.0,
    use: str = "auto",
) -> dict[str, float]:
    """Image-level metastasis detection (seed 001 Table 7; the unit is one image / view).

    Returns:
        ``{"tp", "fp", "fn", "tn", "accuracy", "precision", "sensitivity", "specificity", "f1"}``.
    """
    tp = fp = fn = tn = 0
    for preds, refs in zip(preds_per_image, refs_per_image, strict=True):
        kept = [p for p in preds if float(_get(p, "score", 1.0)) >= score_threshold]
        mal_p = [p for p in kept if _get(p, "class_name") == malignant]
        mal_r = [r for r in refs if _get(r, "class_name") == malignant]
        if mal_r:
            pairs, _, _ = match_instances(mal_p, mal_r, iou_threshold, 0.0, use)
            if pairs:
                tp += 1
            else:
                fn += 1
        elif mal_p:
            fp += 1
        else:
            tn += 1
    n = tp + fp + fn + tn
    prec = tp / (tp + fp) if tp + fp else 0.0
    sens = tp / (tp + fn) if tp + fn else 0.0
    return {
        "tp": tp, "fp": fp, "fn": fn, "tn": tn,
        "accuracy": (tp + tn) / n if n else 0.0,
        "precision": prec,
        "sensitivity": sens,
        "specificity": tn / (tn + fp) if tn + fp else 0.0,
        "f1": 2 * prec * sens / (prec + sens) if prec + sens else 0.0,
    }


def compute_box_jaccard(pred_boxes: Sequence, ref_boxes: Sequence) -> dict[str, float]:
    """Box Jaccard (IoU) of the chest detector, min / mean / max over images.

    Args:
        pred_boxes: One ``(y0, x0, y1, x1)`` box per image (the top-scoring chest box), or None when the
            detector found nothing (IoU 0).
        ref_boxes: The reference chest box per image.

    Returns:
        ``{"min", "mean", "max", "ious": [...]}``.
    """
    if len(pred_boxes) != len(ref_boxes) or not ref_boxes:
        raise InvalidInputError(
            f"must be a non-empty list with one box per predicted box ({len(pred_boxes)}), got {len(ref_boxes)}",
            path="ref_boxes",
        )
    ious = [0.0 if p is None else box_iou(p, r) for p, r in zip(pred_boxes, ref_boxes)]
    return {"min": float(min(ious)), "mean": float(np.mean(ious)), "max": float(max(ious)), "ious": ious}
