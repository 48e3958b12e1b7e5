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

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import tensorflow as tf

from tfmedseg.export.savedmodel import _write_export

__all__ = ["WHOLE_BODY_SIGNATURES", "WholeBodyServingModule", "export_whole_body_savedmodel"]

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


def seed001_exports(ssd, lesion_model, view_shape, *, percentile: float, crop_margin: float, class_names: Sequence[str],
                    metadata: dict[str, Any]) -> list[tuple]:
    """Seed 001's three exports as ``(name, models, write(version_dir) -> path)``: the chest detector
    (``bone_malignet_ssd``), the lesion model (``bone_malignet_maskrcnn``) and the servable whole-body
    two-stage model (``bone_malignet``, :class:`~tfmedseg.models.detection.two_stage.WholeBodyLesionModel`
    with ``metadata``), for :func:`tfmedseg.experiments.runner.export_once`."""
    from tfmedseg.export.savedmodel import export_detector
    from tfmedseg.models.detection.two_stage import WholeBodyLesionModel

    whole = WholeBodyLesionModel(ssd, lesion_model, tuple(view_shape), percentile, crop_margin, name="bone_malignet")
    return [("bone_malignet_ssd", [ssd], lambda p: export_detector(ssd, p, model_name="bone_malignet_ssd")),
            ("bone_malignet_maskrcnn", [lesion_model],
             lambda p: export_detector(lesion_model, p, model_name="bone_malignet_maskrcnn")),
            ("bone_malignet", [ssd, lesion_model],
             lambda p: export_whole_body_savedmodel(whole, p, class_names=class_names, metadata=metadata))]
