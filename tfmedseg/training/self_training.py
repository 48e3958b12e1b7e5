"""Self-training with pseudo-labels (seed 001 §4 "Self-training variant", Table 8, L1019-1037).

The trained model (the teacher) predicts every unlabeled image at the detection minimum confidence
(0.7, Table 11); its predictions become pseudo-labels after one of two filters at a threshold
``t`` (Table 8 reports 0.8, 0.85 and 0.9):

* **lesion-level**: drop the pseudo-lesions scoring ``<= t``, keep every image (the images count
  stays 18,560 in Table 8);
* **image-level**: drop every image having at least one pseudo-lesion scoring ``<= t`` (it removes
  ~30 % of the images at 0.85, L1037), keep the remaining images with all their lesions.

``threshold=None`` keeps every prediction >= the minimum confidence (Table 8's "All" row). Images
without any prediction stay as lesion-free pseudo-labeled images under both filters. The student
then trains on the labeled plus pseudo-labeled images (one round, L1187).

These are pure functions on per-image prediction dicts (numpy), independent of the model.

Example:
    >>> preds = [{"boxes": np.zeros((2, 4)), "classes": np.array([1, 2]), "scores": np.array([0.95, 0.8])}]
    >>> kept, counts = filter_pseudo_labels(preds, 0.85, "image")
    >>> counts
    {'images': 0, 'lesions': 0}
    >>> kept, counts = filter_pseudo_labels(preds, 0.85, "lesion")
    >>> counts, kept[0][1]["classes"].tolist()
    ({'images': 1, 'lesions': 1}, [1])
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from tfmedseg.errors import ConfigError

__all__ = ["FILTER_LEVELS", "confident_predictions", "filter_pseudo_labels", "pseudo_label_samples", "select_instances"]

FILTER_LEVELS = ("lesion", "image")


def select_instances(prediction: dict, keep: np.ndarray) -> dict:
    """The rows ``keep`` (bool ``[N]``) of every per-instance array of a prediction dict.

    Arrays whose first axis is ``N`` (``boxes``, ``classes``, ``scores``, ``masks``...) are
    indexed; other entries are copied.
    """
    keep = np.asarray(keep, bool)
    n = len(keep)
    out = {}
    for key, value in prediction.items():
        arr = np.asarray(value) if isinstance(value, (list, np.ndarray)) else value
        out[key] = arr[keep] if isinstance(arr, np.ndarray) and arr.ndim >= 1 and len(arr) == n else value
    return out


def confident_predictions(prediction: dict, min_confidence: float = 0.7) -> dict:
    """Keep the instances with ``scores >= min_confidence`` (the teacher's detection layer)."""
    return select_instances(prediction, np.asarray(prediction["scores"], np.float32) >= min_confidence)


def filter_pseudo_labels(predictions: Sequence[dict], threshold: float | None, level: str = "image",
                         min_confidence: float = 0.7) -> tuple[list[tuple[int, dict]], dict[str, int]]:
    """Pseudo-labels kept by Table 8's filter.

    Args:
        predictions: Per unlabeled image ``{"scores" [N], "classes" [N], "boxes" [N, 4], ...}``.
        threshold: Confidence threshold ``t`` (strictly above is kept: "> 0.85"); None keeps all.
        level: ``"lesion"`` or ``"image"`` (see the module docstring).
        min_confidence: Teacher's detection minimum confidence applied first (0.7).

    Returns:
        ``([(image index, filtered prediction)], {"images": kept images, "lesions": kept lesions})``.

    Raises:
        ConfigError: Unknown level or a threshold outside ``[0, 1)``.
    """
    if level not in FILTER_LEVELS:
        raise ConfigError(f"unknown filter level {level!r}; allowed: {FILTER_LEVELS}", path="self_training.filter")
    if threshold is not None and not 0.0 <= threshold < 1.0:
        raise ConfigError(f"threshold must be in [0, 1), got {threshold}", path="self_training.threshold")
    kept: list[tuple[int, dict]] = []
    lesions = 0
    for index, pred in enumerate(predictions):
        pred = confident_predictions(pred, min_confidence)
        scores = np.asarray(pred["scores"], np.float32)
        if threshold is not None:
            above = scores > threshold
            if level == "image":
                if not above.all():
                    continue
            else:
                pred = select_instances(pred, above)
        kept.append((index, pred))
        lesions += len(np.asarray(pred["scores"]))
    return kept, {"images": len(kept), "lesions": lesions}


def pseudo_label_samples(kept: Sequence[tuple[int, dict]], samples: Sequence) -> list:
    """Turn filtered predictions into labeled detection samples for the student.

    Args:
        kept: ``filter_pseudo_labels``' first output: ``(index into samples, prediction)`` with
            ``boxes [N, 4]`` (pixels of the sample image), ``classes [N]`` (1-based) and ``masks
            [N, H, W]`` (full-size, thresholded) per prediction.
        samples: The unlabeled :class:`~tfmedseg.data.detection.DetectionSample` s predicted.

    Returns:
        :class:`~tfmedseg.data.detection.DetectionSample` s with the pseudo-labels (``sample_id``
        suffixed ``#pseudo``); an image without kept lesions becomes a lesion-free labeled image.
    """
    from tfmedseg.data.detection import DetectionSample

    out = []
    for index, pred in kept:
        src = samples[index]
        h, w = src.image.shape[:2]
        n = len(np.asarray(pred["scores"]))
        masks = np.asarray(pred.get("masks", np.zeros((n, h, w), np.uint8))).reshape(n, h, w)
        out.append(DetectionSample(f"{src.sample_id}#pseudo", src.image, np.asarray(pred["boxes"], np.float32).reshape(n, 4),
                                   (masks > 0).astype(np.uint8), np.asarray(pred["classes"], np.int32).reshape(n)))
    return out
