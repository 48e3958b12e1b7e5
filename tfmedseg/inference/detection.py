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

__all__ = ["predict_crop_cascade", "crop_cascade_predictor", "chest_epoch_metrics", "instance_epoch_metrics",
           "instance_model_predictor", "interleaved_seconds_per_item", "sample_instances", "time_rows"]


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


def sample_instances(sample, class_names: Sequence[str]) -> list[dict]:
    """A labeled :class:`~tfmedseg.data.detection.DetectionSample`'s lesions as instance dicts
    (``class_name``, ``box``, bool ``mask``) for :mod:`tfmedseg.metrics.instances`."""
    return [{"class_name": class_names[int(c) - 1], "box": tuple(float(v) for v in b), "mask": np.asarray(m, bool)}
            for b, c, m in zip(sample.boxes, sample.classes, sample.masks)]


def instance_epoch_metrics(samples: Sequence, class_names: Sequence[str], rule, batch_size: int = 16) -> Callable:
    """``model -> {"lesion_f1", "lesion_precision", "lesion_sensitivity", "localization_f1"}`` on
    labeled crops: the per-epoch validation scores of an instance model (seed 001: class-weighted,
    ``rule`` = mask IoU >= 0.5 at score >= 0.7), for :class:`~tfmedseg.training.epoch_metrics.EpochMetrics`
    (TensorBoard ``logs/validation``, ``epoch_lesion_f1``).

    Args:
        samples: Labeled validation crops (``DetectionSample``).
        class_names: Names of the classes ``1..K``.
        rule: A :class:`~tfmedseg.metrics.instances.MatchRule`.
        batch_size: Crops per model call.
    """
    from tfmedseg.metrics.instances import compute_instance_metrics
    from tfmedseg.training.self_training import predict_samples

    refs = [sample_instances(s, class_names) for s in samples]

    def fn(model) -> dict[str, float]:
        preds = [[{"class_name": class_names[int(c) - 1], "box": tuple(b), "mask": m.astype(bool), "score": float(p)}
                  for b, c, m, p in zip(o["boxes"], o["classes"], o["masks"], o["scores"])]
                 for o in predict_samples(model, samples, batch_size)]
        met = compute_instance_metrics(preds, refs, class_names, **rule.kwargs())
        return {"lesion_f1": met["weighted"]["f1"], "lesion_precision": met["weighted"]["precision"],
                "lesion_sensitivity": met["weighted"]["sensitivity"], "localization_f1": met["localization"]["f1"]}

    return fn


def chest_epoch_metrics(views: Sequence, detector_size: int) -> Callable:
    """``detector -> {"chest_jaccard_mean", "chest_jaccard_min"}``: the SSD's top box against each
    view's reference chest box (whole views, seed 001's chest Jaccard), for
    :class:`~tfmedseg.training.epoch_metrics.EpochMetrics`."""
    from tfmedseg.inference.bone_scan import predicted_chest_boxes
    from tfmedseg.metrics.instances import compute_box_jaccard

    import tensorflow as tf

    images, refs, traced = [v.image for v in views], [v.chest_box for v in views], {}

    def fn(model) -> dict[str, float]:
        if traced.get("model") is not model:
            traced.update(model=model, call=tf.function(lambda x: model(x, training=False), reduce_retracing=True))
        call = traced["call"]
        j = compute_box_jaccard(predicted_chest_boxes(lambda x, training=False: call(x), images, detector_size, 32), refs)
        return {"chest_jaccard_mean": j["mean"], "chest_jaccard_min": j["min"]}

    return fn


def interleaved_seconds_per_item(predictors: dict[str, Callable], items: Sequence, repeats: int = 5) -> dict[str, dict]:
    """Warm inference time per item of several predictors on the same items, interleaved.

    Every predictor runs once on each item first (tracing, warm-up, not timed); then ``repeats``
    rounds each time every predictor over all items in turn (so a load change of the shared machine
    hits all of them alike). ``fn(item)`` must return host values (numpy), so the time includes the
    device work.

    Returns:
        ``{name: {"median": s, "min": s, "rounds": [s per item of each round]}}``.
    """
    for fn in predictors.values():
        for item in items:
            fn(item)
    rounds: dict[str, list[float]] = {name: [] for name in predictors}
    for _ in range(max(1, repeats)):
        for name, fn in predictors.items():
            start = time.perf_counter()
            for item in items:
                fn(item)
            rounds[name].append((time.perf_counter() - start) / max(1, len(items)))
    return {name: {"median": float(np.median(r)), "min": float(np.min(r)), "rounds": r} for name, r in rounds.items()}


def instance_model_predictor(model) -> Callable[[np.ndarray], dict]:
    """``image [S, S, 1] -> numpy outputs`` of an instance model alone (inference mode, batch 1, one ``tf.function``)."""
    import tensorflow as tf

    call = tf.function(lambda x: model(x, training=False), reduce_retracing=True)
    return lambda image: {k: np.asarray(v) for k, v in call(tf.constant(image[None].astype(np.float32))).items()}


def time_rows(detector, models: dict, views: Sequence, crops: Sequence, repeats: int = 5, **cascade_kwargs) -> dict:
    """Inference seconds per view of several instance models on the same views, interleaved
    (:func:`interleaved_seconds_per_item`): the whole cascade (``detector`` + crop + model + mapping back,
    :func:`crop_cascade_predictor` with ``cascade_kwargs``) on the whole views and the model alone on the
    chest crops (``[S, S, 1]``).

    Returns:
        ``{name: {"cascade": {"median", "min", "rounds"}, "model": {...}}}`` (seconds per view).
    """
    cascade = {n: crop_cascade_predictor(detector, m, **cascade_kwargs) for n, m in models.items()}
    alone = {n: instance_model_predictor(m) for n, m in models.items()}
    timed = interleaved_seconds_per_item(cascade, list(views), repeats)
    timed_alone = interleaved_seconds_per_item(alone, list(crops), repeats)
    return {n: {"cascade": timed[n], "model": timed_alone[n]} for n in models}
