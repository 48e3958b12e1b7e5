"""SavedModel export of a detector's inference path (one ``serve`` / ``serving_default`` endpoint).

The exported function takes ``float32 [B, H, W, C]`` images and returns the detector's output
dict (padded, fixed-size tensors), so it loads with ``tf.saved_model.load(path).serve(images)``
and runs in TF Serving without any tfmedseg code.

Example:
    >>> export_detector(model, "saved_models/ssd512")  # doctest: +SKIP
    >>> tf.saved_model.load("saved_models/ssd512").serve(images)["boxes"]  # doctest: +SKIP
"""

from __future__ import annotations

import os

import keras
import tensorflow as tf

from tfmedseg.errors import ExportError

__all__ = ["export_detector"]


def export_detector(model: keras.Model, path: str | os.PathLike) -> str:
    """Write ``model(images, training=False)`` as a SavedModel endpoint named ``serve``.

    Args:
        model: A built detector exposing ``input_spec_shape`` (``(H, W, C)``), e.g. :class:`SSD` or
            :class:`MaskRCNN`.
        path: Output directory (created; an existing SavedModel there is replaced).

    Returns:
        The output path as a string.

    Raises:
        ExportError: The model has no fixed input shape, or tracing/writing fails.
    """
    shape = getattr(model, "input_spec_shape", None)
    if shape is None:
        raise ExportError("model has no input_spec_shape (H, W, C); build it with a fixed image size", path=os.fspath(path))
    archive = keras.export.ExportArchive()
    archive.track(model)
    spec = tf.TensorSpec([None, *shape], tf.float32, name="images")
    try:
        archive.add_endpoint(name="serve", fn=lambda images: model(images, training=False), input_signature=[spec])
        archive.write_out(os.fspath(path), verbose=False)
    except (ValueError, TypeError, tf.errors.OpError) as exc:
        raise ExportError(f"SavedModel export failed: {exc}", path=os.fspath(path)) from exc
    return os.fspath(path)
