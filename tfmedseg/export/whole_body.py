"""SavedModel of seed 001's servable two-stage model (whole-body view in, lesion instances out).

Layout ``<root>/<model_name>/<version>/`` (TF Serving) with ``metadata.json``. One signature,
``serving_default``: ``views`` float32 ``[B, H, W]`` raw counts -> ``boxes [B, D, 4]`` (view
pixels), ``classes``, ``scores``, ``num_detections``, ``masks uint8 [B, D, H, W]``, ``chest_box``,
``chest_score`` (see :class:`~tfmedseg.models.detection.two_stage.WholeBodyLesionModel`). The
SSD chest crop, NMS and ROIAlign all run in the graph, so TF Serving needs no tfmedseg code.

Example:
    >>> export_whole_body_savedmodel(model, "saved_models/bone_malignet/1", class_names=LESION_CLASSES)  # doctest: +SKIP
    >>> tf.saved_model.load("saved_models/bone_malignet/1").signatures["serving_default"](views=v)  # doctest: +SKIP
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

from tfmedseg.export.savedmodel import _write_export

__all__ = ["WHOLE_BODY_SIGNATURES", "WholeBodyServingModule", "export_whole_body_savedmodel", "served_matches_keras"]

_log = logging.getLogger(__name__)

WHOLE_BODY_SIGNATURES = ("serving_default",)


class WholeBodyServingModule(tf.Module):
    """Tracks a :class:`WholeBodyLesionModel` and exposes its ``serving_default`` function."""

    def __init__(self, model):
        super().__init__()
        self.model = model
        h, w = model.view_size
        spec = tf.TensorSpec([None, h, w], tf.float32, name="views")
        self.serving_default = tf.function(lambda views: model(views, training=False), input_signature=[spec])


def export_whole_body_savedmodel(model, export_dir: str | os.PathLike, *, class_names: Sequence[str] = (),
                                 metadata: dict[str, Any] | None = None, overwrite: bool = False) -> Path:
    """Write ``model`` (a :class:`WholeBodyLesionModel`) as a SavedModel version directory.

    Args:
        model: The built two-stage model.
        export_dir: ``<root>/<model_name>/<version>`` (integer version).
        class_names: Names of classes ``1..C`` (recorded in ``metadata.json``).
        metadata: Extra metadata (seed, config hash, evaluation figures...).
        overwrite: Replace an existing version written by tfmedseg.

    Returns:
        The version directory.

    Raises:
        ExportError: Bad directory, a foreign directory in the way, or tracing/writing failed.
    """
    module = WholeBodyServingModule(model)
    h, w = model.view_size
    info = {
        "model_name": model.name,
        "task": "whole-body bone-scan view -> lesion instances (SSD chest crop + Mask R-CNN/MaligNet)",
        "inputs": {"views": {"dtype": "float32", "shape": [None, h, w], "units": "raw counts"}},
        "outputs": ["boxes", "classes", "scores", "num_detections", "masks", "chest_box", "chest_score"],
        "class_names": list(class_names),
        "box_format": "y0, x0, y1, x1 in view pixels (exclusive ends)",
        "intensity_percentile": model.intensity_percentile,
        **(metadata or {}),
    }
    path = Path(export_dir)
    return _write_export(module, {"serving_default": module.serving_default}, path, info, overwrite, model.name)


def served_matches_keras(path: str | os.PathLike, model, views, *, box_tolerance: float = 1.0) -> dict[str, Any]:
    """Reload the SavedModel at ``path`` with ``tf.saved_model.load`` and compare its ``serving_default``
    instances with the Keras ``model`` (a :class:`WholeBodyLesionModel`) on the same ``views``.

    Args:
        path: A version directory written by :func:`export_whole_body_savedmodel`.
        model: The Keras two-stage model that was exported.
        views: ``float32 [B, H, W]`` views (counts; the in-graph normalisation is scale-invariant).
        box_tolerance: Largest allowed box corner difference (view pixels).

    Returns:
        ``views`` (B), ``instances`` (Keras detections in all views), ``same_counts`` and
        ``same_classes`` (per view, per instance), ``max_box_diff_px``, ``max_score_diff`` and
        ``match`` (same counts and classes, every box corner within ``box_tolerance``).
    """
    views = tf.constant(np.asarray(views, np.float32))
    keras_out = {k: np.asarray(v) for k, v in model(views, training=False).items()}
    served = {k: v.numpy() for k, v in tf.saved_model.load(str(path)).signatures["serving_default"](views=views).items()}
    n_keras, n_served = keras_out["num_detections"].astype(int), served["num_detections"].astype(int)
    same_counts = bool(np.array_equal(n_keras, n_served))
    box_diff, score_diff, same_classes = 0.0, 0.0, same_counts
    if same_counts:
        for i, n in enumerate(n_keras):
            if n:
                box_diff = max(box_diff, float(np.abs(served["boxes"][i, :n] - keras_out["boxes"][i, :n]).max()))
                score_diff = max(score_diff, float(np.abs(served["scores"][i, :n] - keras_out["scores"][i, :n]).max()))
                same_classes &= bool(np.array_equal(served["classes"][i, :n], keras_out["classes"][i, :n]))
    result = {"views": int(views.shape[0]), "instances": int(n_keras.sum()), "same_counts": same_counts,
              "same_classes": same_classes, "max_box_diff_px": box_diff if same_counts else float("inf"),
              "max_score_diff": score_diff if same_counts else float("inf")}
    result["match"] = same_counts and same_classes and result["max_box_diff_px"] <= box_tolerance
    return result


def _export_and_check(whole, path, class_names, metadata, check_views) -> Path:
    """Export ``whole``; with ``check_views``, reload it and record :func:`served_matches_keras` in
    ``metadata.json`` (key ``served_vs_keras``)."""
    path = export_whole_body_savedmodel(whole, path, class_names=class_names, metadata=metadata)
    if check_views is not None and len(check_views):
        check = served_matches_keras(path, whole, check_views)
        _log.info("%s reloaded with tf.saved_model.load: %d instances on %d views, same counts %s, same classes %s, "
                  "boxes within %.3g px of Keras", path, check["instances"], check["views"], check["same_counts"],
                  check["same_classes"], check["max_box_diff_px"])
        meta_path = Path(path) / "metadata.json"
        meta = json.loads(meta_path.read_text())
        meta["served_vs_keras"] = check
        meta_path.write_text(json.dumps(meta, indent=2))
    return path


def seed001_exports(ssd, lesion_model, view_shape, *, percentile: float, crop_margin: float, class_names: Sequence[str],
                    metadata: dict[str, Any], check_views=None) -> list[tuple]:
    """Seed 001's three exports as ``(name, models, write(version_dir) -> path)``: the chest detector
    (``bone_malignet_ssd``), the lesion model (``bone_malignet_maskrcnn``) and the servable whole-body
    two-stage model (``bone_malignet``, :class:`~tfmedseg.models.detection.two_stage.WholeBodyLesionModel`
    with ``metadata``), for :func:`tfmedseg.experiments.runner.export_once`. With ``check_views``
    (``[B, H, W]``, e.g. the validation views) the whole-body export is reloaded and compared with the
    Keras model on them (:func:`served_matches_keras`, stored under ``served_vs_keras`` in its
    ``metadata.json``)."""
    from tfmedseg.export.savedmodel import export_detector
    from tfmedseg.models.detection.two_stage import WholeBodyLesionModel

    whole = WholeBodyLesionModel(ssd, lesion_model, tuple(view_shape), percentile, crop_margin, name="bone_malignet")
    return [("bone_malignet_ssd", [ssd], lambda p: export_detector(ssd, p, model_name="bone_malignet_ssd")),
            ("bone_malignet_maskrcnn", [lesion_model],
             lambda p: export_detector(lesion_model, p, model_name="bone_malignet_maskrcnn")),
            ("bone_malignet", [ssd, lesion_model],
             lambda p: _export_and_check(whole, p, class_names, metadata, check_views))]
