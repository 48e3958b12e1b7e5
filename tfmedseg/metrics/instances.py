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

import dataclasses
from typing import Any, Mapping, Sequence

import numpy as np

from tfmedseg.errors import InvalidInputError

__all__ = [
    "box_iou",
    "match_instances",
    "compute_instance_metrics",
    "compute_metastasis_detection",
    "compute_box_jaccard",
    "compute_patient_metastasis",
    "compute_confusion_scores",
    "binary_scores",
    "compute_detection_report",
    "compute_image_scores",
    "MatchRule",
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
    classes: Sequence[str],
    iou_threshold: float = 0.5,
    score_threshold: float = 0.0,
    use: str = "auto",
) -> dict[str, Any]:
    """Localisation, per-class and weighted precision / sensitivity / F1, and the confusion matrix.

    Args:
        preds_per_image: For each image, its predicted instances.
        refs_per_image: For each image, its reference instances (same number of images).
        classes: Class names, in the confusion-matrix order (seed 001:
            :data:`tfmedseg.datasets.case.LESION_CLASSES`).
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
    return binary_scores(tp, fp, fn, tn)


def binary_scores(tp: int, fp: int, fn: int, tn: int) -> dict[str, float]:
    """Accuracy, precision, sensitivity, specificity and F1 of binary decision counts (0.0 for an
    empty denominator), with the counts: ``{"tp", "fp", "fn", "tn", "accuracy", ...}``."""
    n = tp + fp + fn + tn
    prf = _prf(tp, fp, fn)
    return {
        "tp": tp, "fp": fp, "fn": fn, "tn": tn,
        "accuracy": (tp + tn) / n if n else 0.0,
        "precision": prf["precision"],
        "sensitivity": prf["sensitivity"],
        "specificity": tn / (tn + fp) if tn + fp else 0.0,
        "f1": prf["f1"],
    }


def compute_patient_metastasis(per_image: Sequence[tuple[str, Mapping[str, int]]]) -> dict[str, float]:
    """Patient-level metastasis from per-image outcomes of :func:`compute_metastasis_detection`.

    A patient is metastatic if any of its images has a malignant reference lesion (a TP or FN image);
    it is a TP if any image's malignant prediction matches one, else a FN. A non-metastatic patient
    with a malignant false alarm on any image is a FP, else a TN.

    Args:
        per_image: ``(patient_id, outcome)`` per image, ``outcome`` with the ``tp``/``fp``/``fn``/``tn``
            counts of that one image.

    Returns:
        :func:`binary_scores` over patients.
    """
    by_patient: dict[str, list] = {}
    for patient, outcome in per_image:
        by_patient.setdefault(patient, []).append(outcome)
    tp = fp = fn = tn = 0
    for outcomes in by_patient.values():
        if any(o["tp"] or o["fn"] for o in outcomes):
            tp, fn = (tp + 1, fn) if any(o["tp"] for o in outcomes) else (tp, fn + 1)
        elif any(o["fp"] for o in outcomes):
            fp += 1
        else:
            tn += 1
    return binary_scores(tp, fp, fn, tn)


def compute_confusion_scores(confusion, classes: Sequence[str]) -> dict[str, dict[str, float]]:
    """One-vs-rest accuracy and specificity of each class from a confusion matrix (rows reference,
    columns prediction), as in seed 001 Table 6 (classification among localised lesions).

    Returns:
        ``{class: {"accuracy", "specificity"}}``; NaN for an empty matrix or denominator.
    """
    conf = np.asarray(confusion)
    total = conf.sum()
    out = {}
    for k, c in enumerate(classes):
        tp = conf[k, k]
        fp, fn = conf[:, k].sum() - tp, conf[k, :].sum() - tp
        tn = total - tp - fp - fn
        out[c] = {"accuracy": (tp + tn) / total if total else float("nan"),
                  "specificity": tn / (tn + fp) if tn + fp else float("nan")}
    return out


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


@dataclasses.dataclass(frozen=True)
class MatchRule:
    """How predictions meet references in the seed-001 scores.

    Attributes:
        iou_threshold: IoU for a match (inclusive; seed 0.5).
        score_threshold: Predictions below this score are ignored (seed 0.7).
        use: IoU on ``"auto"`` / ``"mask"`` / ``"box"`` masks or boxes.
        malignant: The class that makes an image / patient metastatic.
    """

    iou_threshold: float = 0.5
    score_threshold: float = 0.0
    use: str = "auto"
    malignant: str = "malignant"

    def kwargs(self) -> dict[str, Any]:
        return {"iou_threshold": self.iou_threshold, "score_threshold": self.score_threshold, "use": self.use}


def compute_detection_report(preds_per_image: Sequence[Sequence], refs_per_image: Sequence[Sequence],
                             patients: Sequence[str], pred_boxes: Sequence, ref_boxes: Sequence, *,
                             classes: Sequence[str], rule: MatchRule = MatchRule()) -> dict[str, Any]:
    """Every pooled seed-001 score of a set of images in one dict.

    Args:
        preds_per_image / refs_per_image: Predicted and reference instances per image.
        patients: Patient id of each image (for the patient-level metastasis).
        pred_boxes / ref_boxes: Detected (or None) and reference chest box per image.
        classes: Class names (:func:`compute_instance_metrics`).
        rule: The matching rule.

    Returns:
        ``{"instances", "instances_box" (box IoU), "metastasis_image", "metastasis_patient",
        "chest_jaccard"}``.
    """
    kw = rule.kwargs()
    outcomes = [(p, compute_metastasis_detection([pr], [rf], rule.malignant, **kw))
                for p, pr, rf in zip(patients, preds_per_image, refs_per_image, strict=True)]
    return {
        "instances": compute_instance_metrics(preds_per_image, refs_per_image, classes, **kw),
        "instances_box": compute_instance_metrics(preds_per_image, refs_per_image, classes, **{**kw, "use": "box"}),
        "metastasis_image": compute_metastasis_detection(preds_per_image, refs_per_image, rule.malignant, **kw),
        "metastasis_patient": compute_patient_metastasis(outcomes),
        "chest_jaccard": compute_box_jaccard(pred_boxes, ref_boxes),
    }


def compute_image_scores(preds: Sequence, refs: Sequence, pred_box, ref_box, *, classes: Sequence[str],
                         rule: MatchRule = MatchRule()) -> dict[str, Any]:
    """One image's seed-001 scores as a flat report row.

    Args:
        preds / refs: Predicted and reference instances of the image.
        pred_box / ref_box: Detected chest box (or None) and reference chest box.
        classes: Class names.
        rule: The matching rule.

    Returns:
        ``chest_jaccard``, ``lesions_ref``, ``lesions_pred`` (at or above the score threshold), the
        localisation ``tp``/``fp``/``fn``, ``ref_<class>`` and ``tp_<class>`` per class, and
        ``metastasis_ref`` (0/1), ``metastasis_pred`` (0/1), ``metastasis_outcome`` (``tp``/``fp``/``fn``/``tn``).
    """
    kw = rule.kwargs()
    one = compute_instance_metrics([preds], [refs], classes, **kw)
    met = compute_metastasis_detection([preds], [refs], rule.malignant, **kw)
    loc = one["localization"]
    kept = [p for p in preds if float(_get(p, "score", 1.0)) >= rule.score_threshold]
    return {
        "chest_jaccard": compute_box_jaccard([pred_box], [ref_box])["mean"],
        "lesions_ref": len(refs), "lesions_pred": len(kept),
        "tp": loc["tp"], "fp": loc["fp"], "fn": loc["fn"],
        **{f"ref_{c}": one["support"][c] for c in classes},
        **{f"tp_{c}": one["per_class"][c]["tp"] for c in classes},
        "metastasis_ref": int(bool(met["tp"] or met["fn"])),
        "metastasis_pred": int(any(_get(p, "class_name") == rule.malignant for p in kept)),
        "metastasis_outcome": next(k for k in ("tp", "fp", "fn", "tn") if met[k]),
    }
