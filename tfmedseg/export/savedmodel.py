"""SavedModel export in TF Serving's layout with named signatures and ``metadata.json``.

Layout: ``<root>/<model_name>/<version>/`` (``saved_model.pb``, ``variables/``, ``metadata.json``).

Signatures (all names are a stable serving contract):

``serving_default``  ``image`` float32 model input -> ``probabilities`` float32, ``mask`` uint8
``predict_bytes``    ``image_bytes`` string (raw little-endian float32) + ``shape`` int64 -> same
``segment``          ``scan`` float32 ``[D, H, W]`` raw (HU / counts) -> ``labels`` uint8 ``[D, H, W]``;
                     preprocessing, slicing/windowing, model, argmax and largest-component
                     post-processing all run inside the graph (:mod:`tfmedseg.inference.graph`)
``segment_bytes``    ``scan_bytes`` string + ``shape`` int64 ``[3]`` -> ``labels``

The bytes variants exist because a JSON list of a 512x512x100 volume is far too slow: a client
sends ``volume.astype("<f4").tobytes()`` (base64 in REST's ``{"b64": ...}``) and its shape.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
from pathlib import Path
from typing import Any, Iterator

import tensorflow as tf

import tfmedseg
from tfmedseg.errors import ExportError, InvalidInputError
from tfmedseg.inference.graph import probabilities_to_labels, segment_cascade, segment_volume
from tfmedseg.inference.spec import CascadeConfig, ServingSpec
from tfmedseg.io._atomic import OUTPUT_MARKER, atomic_dir, has_marker, write_marker

__all__ = ["SegmentationServingModule", "CascadeServingModule", "DetectionServingModule", "export_savedmodel",
           "export_cascade_savedmodel", "export_detector", "next_version", "SIGNATURES", "CASCADE_SIGNATURES"]

SIGNATURES = ("serving_default", "predict_bytes", "segment", "segment_bytes")
#: A cascade has no single model input: its default signature is the raw-scan one.
CASCADE_SIGNATURES = ("serving_default", "segment", "segment_bytes")


def _scan_bytes_signature(segment) -> Any:
    """``segment_bytes``: ``scan_bytes`` (raw little-endian float32) + ``shape`` int64 ``[3]`` -> ``segment``."""

    @tf.function(input_signature=[tf.TensorSpec([], tf.string, name="scan_bytes"),
                                  tf.TensorSpec([3], tf.int64, name="shape")])
    def segment_bytes(scan_bytes, shape):
        return segment(tf.ensure_shape(_decode(scan_bytes, shape), [None, None, None]))

    return segment_bytes


def _decode(raw: tf.Tensor, shape: tf.Tensor) -> tf.Tensor:
    values = tf.io.decode_raw(raw, tf.float32, little_endian=True)
    expected = tf.reduce_prod(shape)
    check = tf.debugging.assert_equal(
        tf.cast(tf.size(values), tf.int64), expected,
        message="scan_bytes: the byte payload does not hold prod(shape) little-endian float32 values (check 'shape')",
    )
    with tf.control_dependencies([check]):
        return tf.reshape(tf.identity(values), shape)


class SegmentationServingModule(tf.Module):
    """A ``tf.Module`` holding a Keras segmentation model and its serving functions.

    Args:
        model: Keras model with one input (``[B, *spatial, C]``) and one probability output
            (softmax over the last axis, or one sigmoid channel).
        spec: How raw scans become model inputs (see :class:`ServingSpec`).
    """

    def __init__(self, model: Any, spec: ServingSpec):
        super().__init__(name="tfmedseg_serving")
        self.model = model
        self.spec = spec
        input_shape = tuple(model.inputs[0].shape)
        self._input_rank = len(input_shape)

        def forward(x: tf.Tensor) -> tf.Tensor:
            return tf.cast(model(x, training=False), tf.float32)

        self._forward = forward

        @tf.function(input_signature=[tf.TensorSpec(input_shape, tf.float32, name="image")])
        def serve(image):
            probs = forward(image)
            return {"probabilities": probs, "mask": probabilities_to_labels(probs, spec.threshold)}

        @tf.function(input_signature=[tf.TensorSpec([], tf.string, name="image_bytes"),
                                      tf.TensorSpec([len(input_shape)], tf.int64, name="shape")])
        def predict_bytes(image_bytes, shape):
            image = tf.ensure_shape(_decode(image_bytes, shape), [None] * len(input_shape))
            return serve(image)

        @tf.function(input_signature=[tf.TensorSpec([None, None, None], tf.float32, name="scan")])
        def segment(scan):
            labels, _ = segment_volume(forward, scan, spec)
            return {"labels": labels}

        self.serve = serve
        self.predict_bytes = predict_bytes
        self.segment = segment
        self.segment_bytes = _scan_bytes_signature(segment)

    def signatures(self) -> dict[str, Any]:
        """The concrete functions keyed by signature name."""
        return {
            "serving_default": self.serve.get_concrete_function(),
            "predict_bytes": self.predict_bytes.get_concrete_function(),
            "segment": self.segment.get_concrete_function(),
            "segment_bytes": self.segment_bytes.get_concrete_function(),
        }


def next_version(model_root: str | os.PathLike) -> int:
    """The next free integer version under ``<root>/<model_name>`` (1 when empty)."""
    from tfmedseg.export.versions import version_dirs

    versions = version_dirs(model_root)
    return int(versions[0].name) + 1 if versions else 1


def _legacy_export(export_dir: Path) -> bool:
    """A version directory of an older tfmedseg (before the output marker): our metadata.json."""
    try:
        info = json.loads((export_dir / "metadata.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(info, dict) and "package_version" in info and (export_dir / "saved_model.pb").is_file()


def check_export_dir(export_dir: Path, overwrite: bool, versioned: bool = True, *, option: str = "overwrite=True") -> None:
    """Refuse a version directory we may not write: not ``<name>/<integer>``, existing without
    ``overwrite``, or holding files tfmedseg did not write (a legacy export of ours gets its marker).
    ``option`` is how the message names the way to replace it (``"--overwrite"`` in a command line).

    Raises:
        ExportError: Naming ``export_dir`` and the cause.
    """
    if versioned and not export_dir.name.isdigit():
        raise ExportError("the export directory must end in an integer version (TF Serving layout: <name>/<version>)", path=export_dir)
    if export_dir.exists() and not overwrite:
        raise ExportError(f"version directory exists already (pass {option} to replace it, or pick a new version)", path=export_dir)
    if export_dir.exists() and not has_marker(export_dir) and _legacy_export(export_dir):
        write_marker(export_dir, "savedmodel")  # written by an older tfmedseg: metadata.json of ours
    if export_dir.exists() and any(export_dir.iterdir()) and not has_marker(export_dir):
        raise ExportError(f"version directory was not written by tfmedseg (no {OUTPUT_MARKER}); refusing to replace it", path=export_dir)


def save_into(module: tf.Module, signatures: dict[str, Any], directory: Path, info: dict[str, Any]) -> None:
    """Write the SavedModel and its ``metadata.json`` into ``directory`` (a staging folder of
    :func:`~tfmedseg.io._atomic.atomic_dir`; nothing is staged here)."""
    tf.saved_model.save(module, str(directory), signatures=signatures)
    info = {"package_version": tfmedseg.__version__, "signatures": sorted(signatures), **info}
    (directory / "metadata.json").write_text(json.dumps(info, indent=2, default=str))


@contextlib.contextmanager
def export_errors(export_dir: Path, name: str) -> Iterator[None]:
    """Turn what fails while writing an export into one :class:`ExportError` naming the folder or model."""
    try:
        yield
    except ExportError:
        raise
    except InvalidInputError as exc:
        raise ExportError(exc.reason, path=exc.path) from exc
    except OSError as exc:
        raise ExportError(f"cannot write the SavedModel: {exc.strerror or exc}", path=export_dir) from exc
    except Exception as exc:  # tracing errors come from deep inside TF: name the model instead
        raise ExportError(f"SavedModel export failed: {type(exc).__name__}: {exc}", path=name) from exc


def _write_export(module: tf.Module, signatures: dict[str, Any], export_dir: Path, info: dict[str, Any],
                  overwrite: bool, name: str, versioned: bool = True) -> Path:
    """Save ``module`` into a staging sibling of ``export_dir`` and rename it into place."""
    check_export_dir(export_dir, overwrite, versioned)
    with export_errors(export_dir, name), atomic_dir(export_dir, overwrite, kind="savedmodel", option="overwrite=True") as staging:
        save_into(module, signatures, staging, info)
    return export_dir


def segmentation_export(model: Any, spec: ServingSpec, model_name: str,
                        metadata: dict[str, Any] | None = None) -> tuple[tf.Module, dict[str, Any], dict[str, Any]]:
    """The serving module, its signatures and the metadata of :func:`export_savedmodel`.

    Raises:
        ExportError: A model with several inputs or outputs, or one that cannot be traced.
    """
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise ExportError(f"expected a model with one input and one output, got {len(model.inputs)} and {len(model.outputs)}", path=model_name)
    try:
        module = SegmentationServingModule(model, spec)
        signatures = module.signatures()
    except Exception as exc:
        raise ExportError(f"cannot trace the serving functions: {type(exc).__name__}: {exc}", path=model_name) from exc
    info = {
        "model_name": model_name,
        "input_shape": list(model.inputs[0].shape),
        "output_shape": list(model.outputs[0].shape),
        "serving_spec": spec.to_dict(),
        **(metadata or {}),
    }
    return module, signatures, info


def export_savedmodel(
    model: Any,
    export_dir: str | os.PathLike,
    *,
    spec: ServingSpec,
    model_name: str,
    metadata: dict[str, Any] | None = None,
    overwrite: bool = False,
) -> Path:
    """Export ``model`` as a SavedModel with the :data:`SIGNATURES` and a ``metadata.json``.

    The export is written into a temporary sibling directory and renamed when complete, so a
    failed export never leaves a half-written version that TF Serving would try to load.

    Args:
        model: Keras segmentation model (see :class:`SegmentationServingModule`).
        export_dir: The version directory, ``saved_models/<name>/<version>`` (its last component must
            be an integer, as TF Serving requires).
        spec: Serving spec stored in ``metadata.json`` and used by the ``segment`` signatures.
        model_name: Name recorded in the metadata.
        metadata: Extra metadata (seed, training-config hash, evaluation metrics, ...).
        overwrite: Replace an existing version directory.

    Returns:
        ``export_dir``.

    Raises:
        ExportError: Bad version directory name, existing export without ``overwrite``, or a
            model that cannot be traced.
    """
    module, signatures, info = segmentation_export(model, spec, model_name, metadata)
    return _write_export(module, signatures, Path(export_dir), info, overwrite, model_name)


class CascadeServingModule(tf.Module):
    """Two segmentation models served as the seed-002 liver-then-tumour cascade.

    Signatures: ``segment`` (= ``serving_default``): ``scan`` float32 ``[D, H, W]`` raw HU ->
    ``labels`` uint8 (0 background, 1 liver, 2 tumour); ``segment_bytes``: ``scan_bytes`` + ``shape``.
    """

    def __init__(self, liver_model: Any, tumour_model: Any, liver_spec: ServingSpec, tumour_spec: ServingSpec,
                 cascade: CascadeConfig = CascadeConfig()):
        super().__init__(name="tfmedseg_cascade")
        self.liver_model = liver_model
        self.tumour_model = tumour_model

        def liver_forward(x):
            return tf.cast(liver_model(x, training=False), tf.float32)

        def tumour_forward(x):
            return tf.cast(tumour_model(x, training=False), tf.float32)

        @tf.function(input_signature=[tf.TensorSpec([None, None, None], tf.float32, name="scan")])
        def segment(scan):
            labels = segment_cascade(liver_forward, tumour_forward, scan, liver_spec, tumour_spec, cascade)
            return {"labels": labels}

        self.segment = segment
        self.segment_bytes = _scan_bytes_signature(segment)

    def signatures(self) -> dict[str, Any]:
        """The concrete functions keyed by signature name."""
        segment = self.segment.get_concrete_function()
        return {"serving_default": segment, "segment": segment, "segment_bytes": self.segment_bytes.get_concrete_function()}


def export_cascade_savedmodel(
    liver_model: Any,
    tumour_model: Any,
    export_dir: str | os.PathLike,
    *,
    liver_spec: ServingSpec,
    tumour_spec: ServingSpec,
    model_name: str,
    cascade: CascadeConfig = CascadeConfig(),
    metadata: dict[str, Any] | None = None,
    overwrite: bool = False,
) -> Path:
    """Export a liver model and a tumour model as one cascade SavedModel (:class:`CascadeServingModule`)
    with the combination and thresholds of ``cascade`` (written to ``metadata.json`` under ``"cascade"``).

    Raises:
        ExportError: As :func:`export_savedmodel`.
    """
    try:
        module = CascadeServingModule(liver_model, tumour_model, liver_spec, tumour_spec, cascade)
        signatures = module.signatures()
    except Exception as exc:
        raise ExportError(f"cannot trace the cascade: {type(exc).__name__}: {exc}", path=model_name) from exc
    info = {
        "model_name": model_name,
        "cascade": {k: v for k, v in cascade.to_dict().items() if k != "min_tumour_voxels"},
        "labels": ["background", "liver", "tumour"],
        # what predict reads: the cascade's output labels (0 background, 1 liver, 2 tumour)
        "serving_spec": dataclasses.replace(liver_spec, labels=("background", "liver", "tumour")).to_dict(),
        "tumour_serving_spec": tumour_spec.to_dict(),
        **(metadata or {}),
    }
    return _write_export(module, signatures, Path(export_dir), info, overwrite, model_name)


class DetectionServingModule(tf.Module):
    """A detector's inference path as one ``serve`` function (= ``serving_default``).

    ``serve``: ``images`` float32 ``[B, H, W, C]`` -> the detector's output dict (padded, fixed-size
    tensors: ``boxes``, ``scores``, ``classes``, ``num_detections``, and ``masks`` for Mask R-CNN).

    Args:
        model: A built detector exposing ``input_spec_shape`` (``(H, W, C)``), e.g.
            :class:`~tfmedseg.models.detection.ssd.SSD` or :class:`~tfmedseg.models.detection.mask_rcnn.MaskRCNN`.
    """

    def __init__(self, model: Any):
        super().__init__(name="tfmedseg_detector")
        self.model = model

        @tf.function(input_signature=[tf.TensorSpec([None, *model.input_spec_shape], tf.float32, name="images")])
        def serve(images):
            return model(images, training=False)

        self.serve = serve

    def signatures(self) -> dict[str, Any]:
        """The concrete functions keyed by signature name."""
        serve = self.serve.get_concrete_function()
        return {"serving_default": serve, "serve": serve}


def export_detector(model: Any, path: str | os.PathLike, *, model_name: str | None = None,
                    metadata: dict[str, Any] | None = None) -> str:
    """Export a detector's inference path (:class:`DetectionServingModule`) with a ``metadata.json``.

    It loads with ``tf.saved_model.load(path).serve(images)`` and runs in TF Serving without any
    tfmedseg code. The export is staged and renamed into place like :func:`export_savedmodel`; an
    existing SavedModel at ``path`` is replaced.

    Args:
        model: A built detector exposing ``input_spec_shape`` (``(H, W, C)``).
        path: Output directory (``<root>/<name>/<version>`` for TF Serving; any name is accepted).
        model_name: Name recorded in the metadata (default: the model's name).
        metadata: Extra metadata.

    Returns:
        The output path as a string.

    Raises:
        ExportError: The model has no fixed input shape, or tracing/writing fails.
    """
    shape = getattr(model, "input_spec_shape", None)
    if shape is None:
        raise ExportError("model has no input_spec_shape (H, W, C); build it with a fixed image size", path=os.fspath(path))
    name = model_name or getattr(model, "name", "detector")
    try:
        module = DetectionServingModule(model)
        signatures = module.signatures()
    except Exception as exc:
        raise ExportError(f"cannot trace the detector: {type(exc).__name__}: {exc}", path=name) from exc
    info = {"model_name": name, "input_shape": [None, *shape], **(metadata or {})}
    return os.fspath(_write_export(module, signatures, Path(path), info, True, name, versioned=False))
