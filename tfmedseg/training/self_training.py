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

import dataclasses
import weakref
from collections.abc import Sequence

import numpy as np

from tfmedseg.errors import ConfigError

__all__ = ["FILTER_LEVELS", "SelfTrainingConfig", "confident_predictions", "filter_pseudo_labels", "pseudo_label_samples",
           "pseudo_label_table", "predict_samples", "select_instances", "self_training_rounds"]

FILTER_LEVELS = ("lesion", "image")


@dataclasses.dataclass
class SelfTrainingConfig:
    """The self-training stage (Table 8).

    Attributes:
        rounds: Teacher -> pseudo-labels -> student rounds (the seed: 1); each student is the next
            round's teacher.
        threshold: Filter threshold of the pseudo-labels the student trains on (None: all >= ``min_confidence``).
        filter: ``"image"`` or ``"lesion"`` level (module docstring).
        min_confidence: The teacher's detection minimum confidence (Table 11: 0.7).
        report_thresholds: Thresholds whose kept images / lesions are counted for Table 8 (both levels).
        epochs: Student epochs; None: the lesion stage's.
    """

    rounds: int = 1
    threshold: float | None = 0.85
    filter: str = "image"
    min_confidence: float = 0.7
    report_thresholds: tuple = (0.8, 0.85, 0.9)
    epochs: int | None = None

    def __post_init__(self) -> None:
        if self.rounds < 1:
            raise ConfigError(f"must be >= 1, got {self.rounds}", path="self_training.rounds")
        if self.filter not in FILTER_LEVELS:
            raise ConfigError(f"unknown filter level {self.filter!r}; allowed: {FILTER_LEVELS}", path="self_training.filter")
        for t in ([self.threshold] if self.threshold is not None else []) + list(self.report_thresholds):
            if not 0.0 <= t < 1.0:
                raise ConfigError(f"thresholds must be in [0, 1), got {t}", path="self_training.threshold")
        if not 0.0 <= self.min_confidence < 1.0:
            raise ConfigError(f"must be in [0, 1), got {self.min_confidence}", path="self_training.min_confidence")
        if self.epochs is not None and self.epochs < 1:
            raise ConfigError(f"must be >= 1, got {self.epochs}", path="self_training.epochs")
        self.report_thresholds = tuple(float(t) for t in self.report_thresholds)


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


_inference_functions: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def predict_samples(model, samples: Sequence, batch_size: int = 16) -> list[dict]:
    """The teacher's instances on each sample image (inference mode, batches of ``batch_size``).

    Args:
        model: A Mask R-CNN / MaligNet (``images [B, S, S, 1] -> {"boxes", "classes", "scores",
            "masks" uint8 [B, D, S, S], "num_detections"}``).
        samples: :class:`~tfmedseg.data.detection.DetectionSample` s of one image size.

    Returns:
        One ``{"boxes" [N, 4], "classes" [N], "scores" [N], "masks" [N, S, S]}`` (numpy) per sample.
    """
    import tensorflow as tf

    call = _inference_functions.get(model)
    if call is None:  # one traced function per model (called every epoch by the validation metrics)
        call = _inference_functions[model] = tf.function(lambda x: model(x, training=False), reduce_retracing=True)
    out = []
    for start in range(0, len(samples), batch_size):
        x = np.stack([s.image for s in samples[start:start + batch_size]]).astype(np.float32)
        if x.ndim == 3:
            x = x[..., None]
        det = {k: np.asarray(v) for k, v in call(tf.constant(x)).items()}
        for k in range(len(x)):
            n = int(det["num_detections"][k])
            out.append({key: det[key][k, :n] for key in ("boxes", "classes", "scores", "masks")})
    return out


def pseudo_label_table(predictions: Sequence[dict], thresholds: Sequence[float],
                       min_confidence: float = 0.7) -> list[dict]:
    """Table 8's counts: images and lesions kept by each filter level at each threshold.

    Returns:
        ``[{"threshold": None (All) | t, "filter": level, "images": n, "lesions": n}]``: the "All" row
        (every prediction >= ``min_confidence``) and then both levels at each threshold.
    """
    _, counts = filter_pseudo_labels(predictions, None, "lesion", min_confidence)
    rows = [{"threshold": None, "filter": "all", **counts}]
    for t in thresholds:
        for level in FILTER_LEVELS:
            rows.append({"threshold": float(t), "filter": level,
                         **filter_pseudo_labels(predictions, t, level, min_confidence)[1]})
    return rows


def self_training_rounds(teacher, unlabeled: Sequence, labeled: Sequence, config: SelfTrainingConfig, train, score=None,
                         teacher_name: str = "teacher"):
    """Table 8's self-training: ``config.rounds`` times pseudo-label the unlabeled samples with the
    teacher, filter them (``config.threshold`` / ``config.filter``) and train a student on the labeled
    plus pseudo-labeled samples; each student is the next round's teacher.

    Args:
        teacher: The trained model (Mask R-CNN / MaligNet).
        unlabeled: Unlabeled :class:`~tfmedseg.data.detection.DetectionSample` s (chest crops).
        labeled: The labeled training samples.
        config: :class:`SelfTrainingConfig`.
        train: ``(samples, round) -> result`` training a student (``result.model``; round from 1).
        score: Optional ``model -> {"lesion_f1": ...}`` on validation data, reported per round.
        teacher_name: The teacher's name in the report.

    Returns:
        ``(last student's result, report)``: ``report`` = ``{"teacher", "min_confidence", "unlabeled_images",
        "table"`` (:func:`pseudo_label_table` of the first teacher's predictions), ``"rounds"``: per round
        the threshold, filter, images / lesions added and the student's ``f1``}.
    """
    import logging

    log = logging.getLogger(__name__)
    preds = predict_samples(teacher, unlabeled)
    report = {"teacher": teacher_name, "min_confidence": config.min_confidence, "unlabeled_images": len(unlabeled),
              "table": pseudo_label_table(preds, config.report_thresholds, config.min_confidence), "rounds": []}
    result = None
    for k in range(1, config.rounds + 1):
        kept, counts = filter_pseudo_labels(preds, config.threshold, config.filter, config.min_confidence)
        log.info("self-training round %d/%d: %s-level > %s keeps %d of %d unlabeled images, %d lesions", k, config.rounds,
                 config.filter, config.threshold, counts["images"], len(unlabeled), counts["lesions"])
        result = train(list(labeled) + pseudo_label_samples(kept, unlabeled), k)
        f1 = float(score(result.model)["lesion_f1"]) if score is not None else float("nan")
        report["rounds"].append({"round": k, "threshold": config.threshold, "filter": config.filter, **counts, "f1": f1})
        if k < config.rounds:
            preds = predict_samples(result.model, unlabeled)
    return result, report
