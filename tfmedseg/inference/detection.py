"""Two-stage detection on one image: detector top box -> crop -> instance model -> back to the image.

Seed 001's inference chain (spec section 5): an SSD finds the chest on a whole-body view resized to
its input, the top box is cropped from the view and resized to the second stage's input, Mask R-CNN
predicts lesion instances on the crop, and their boxes and masks are mapped back to the view
(:class:`tfmedseg.models.detection.crop.CropTransform`).

Example:
    >>> result = predict_crop_cascade(view, ssd_fn, mrcnn_fn, detector_size=300, crop_size=320,
    ...                               class_names=("malignant", "post_trauma"))  # doctest: +SKIP
    >>> result["chest_box"], [p["class_name"] for p in result["lesions"]]  # doctest: +SKIP
"""

from __future__ import annotations

import time
from typing import Any, Callable, Sequence

import numpy as np

__all__ = ["predict_crop_cascade", "crop_cascade_predictor"]


def predict_crop_cascade(
    image: np.ndarray,
    detector: Callable[[np.ndarray], dict],
    instance_model: Callable[[np.ndarray], dict],
    *,
    detector_size: int,
    crop_size: int,
    class_names: Sequence[str],
    crop_margin: float = 0.0,
) -> dict[str, Any]:
    """Detector top box -> crop -> instance model -> instances on the whole image.

    Args:
        image: ``float32 [H, W]`` image (a normalised whole-body view).
        detector: ``[1, S, S, 1] -> {"boxes" [1, K, 4] (detector pixels), "scores", "num_detections"}``.
        instance_model: ``[1, C, C, 1] -> {"boxes", "masks" [1, K, C, C], "classes" (1-based),
            "scores", "num_detections"}``.
        detector_size: Detector input side ``S`` (the image is resized to it, aspect not kept).
        crop_size: Instance-model input side ``C``.
        class_names: Names of the classes ``1..len(class_names)``.
        crop_margin: Relative margin added to the detected box before cropping.

    Returns:
        ``{"chest_box": (y0, x0, y1, x1) or None, "chest_score", "lesions": [dict(class_name, box,
        mask, score)], "seconds"}``; masks are bool ``[H, W]`` on the image, boxes in image pixels.
    """
    from tfmedseg.data.box_crops import crop_box
    from tfmedseg.preprocessing.resample import resize_array

    start = time.perf_counter()
    s = detector_size
    h, w = image.shape
    small = resize_array(image, (s, s), "linear")[None, ..., None].astype(np.float32)
    det = detector(small)
    if int(np.asarray(det["num_detections"])[0]) == 0:
        return {"chest_box": None, "chest_score": 0.0, "lesions": [], "seconds": time.perf_counter() - start}
    box = np.asarray(det["boxes"])[0, 0] * np.array([h / s, w / s] * 2, np.float32)
    crop, transform = crop_box(image, box, crop_size, crop_margin)
    out = instance_model(crop[None, ..., None].astype(np.float32))
    n = int(np.asarray(out["num_detections"])[0])
    boxes = transform.boxes_to_source(np.asarray(out["boxes"])[0, :n])
    masks = transform.mask_to_source(np.asarray(out["masks"])[0, :n].astype(bool)) if n else np.zeros((0, h, w), bool)
    classes, scores = np.asarray(out["classes"])[0, :n], np.asarray(out["scores"])[0, :n]
    lesions = [{"class_name": class_names[int(c) - 1], "box": tuple(float(v) for v in b), "mask": m, "score": float(p)}
               for b, m, c, p in zip(boxes, masks, classes, scores)]
    return {"chest_box": tuple(float(v) for v in box), "chest_score": float(np.asarray(det["scores"])[0, 0]),
            "lesions": lesions, "seconds": time.perf_counter() - start}


def crop_cascade_predictor(detector, instance_model, *, detector_size: int, crop_size: int,
                           class_names: Sequence[str], crop_margin: float = 0.0) -> Callable[[np.ndarray], dict]:
    """``image -> result`` of :func:`predict_crop_cascade` with both Keras models wrapped once in
    ``tf.function`` (inference mode, traced on the first call)."""
    import tensorflow as tf

    det_fn = tf.function(lambda x: detector(x, training=False), reduce_retracing=True)
    inst_fn = tf.function(lambda x: instance_model(x, training=False), reduce_retracing=True)
    return lambda image: predict_crop_cascade(image, det_fn, inst_fn, detector_size=detector_size, crop_size=crop_size,
                                              class_names=class_names, crop_margin=crop_margin)
