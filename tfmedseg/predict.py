"""``python -m tfmedseg.predict``: segment your own scan (NIfTI file or DICOM folder) in one command.

Examples:
    python -m tfmedseg.predict --model saved_models/liver_ct_2d3d/1 --input case.nii.gz --output case_label.nii.gz
    python -m tfmedseg.predict --model saved_models/liver_ct_2d3d --input PATIENT_DICOM/ --output RESULT/

Models (``--model``):

* a SavedModel version directory written by ``python -m tfmedseg.export`` (holds ``saved_model.pb``
  and ``metadata.json``): its ``segment`` signature (raw scan ``[D, H, W]`` -> uint8 labels) runs
  the whole pipeline; a model root ``saved_models/<name>`` picks its highest version;
* a training run directory (``model.keras`` + ``serving_spec.json``) or a ``.keras`` file (with a
  ``serving_spec.json`` beside it, or a 2D/2.5D model whose context is read from its input
  channels): the same in-graph pipeline (:func:`tfmedseg.inference.graph.segment_volume`) around the
  Keras model.

When the serving spec names a voxel spacing (``spacing_mm``), the scan is resampled to it (linear),
segmented, and the labels are mapped back to the source grid (nearest neighbour).

Outputs (``--output``):

* NIfTI input: a uint8 NIfTI label map (``.nii`` / ``.nii.gz``) with the source affine and header;
* DICOM input: a folder with ``overlay/`` (the seed-003 colour overlay: a new RGB DICOM series in
  the same study and frame of reference, see :mod:`tfmedseg.io.dicom_overlay`), ``label.nii.gz``
  (the label map for research use) and, when ``highdicom`` is installed, ``seg.dcm`` (DICOM-SEG).
  An ``--output`` ending in ``.nii``/``.nii.gz`` writes only the label map.

Every output appears only when complete. Bad input (missing, corrupt, 4D or NaN files, a DICOM
folder with several series and no ``--series-uid``, a model without its ``segment`` signature or
metadata, an output that cannot be created) prints one ``error: <file>: <cause>`` line and exits 2.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any, Callable

import numpy as np

import tfmedseg  # noqa: F401  (sets TF_ENABLE_ONEDNN_OPTS before TensorFlow loads)
from tfmedseg.errors import ExportError, InvalidInputError, ServingError
from tfmedseg.export.versions import savedmodel_versions
from tfmedseg.inference.spec import ServingSpec
from tfmedseg.io._atomic import OUTPUT_MARKER, atomic_dir, check_output_not_input
from tfmedseg.io.provenance import job_digest
from tfmedseg.io.volume import Volume

_log = logging.getLogger(__name__)

__all__ = ["Segmenter", "load_segmenter", "resolve_model_path", "predict_provenance", "read_input", "segment_scan",
           "label_volumes", "predict_file", "main", "MODEL_KINDS"]

#: ``"savedmodel"``: exported SavedModel; ``"keras"``: run directory or ``.keras`` file.
MODEL_KINDS = ("savedmodel", "keras")

_NIFTI_SUFFIXES = (".nii", ".nii.gz")
_MAX_SERIES_NUMBER = 2**31 - 1 - 1000


@dataclasses.dataclass(frozen=True, eq=False)  # compared and hashed by identity, like the graph it holds
class Segmenter:
    """A loaded segmentation model: raw scan ``[D, H, W]`` float32 -> labels ``[D, H, W]`` uint8.

    Attributes:
        name: Model name (metadata ``model_name``, else the directory / file name).
        kind: One of :data:`MODEL_KINDS`.
        spec: The model's :class:`~tfmedseg.inference.spec.ServingSpec` (labels, spacing, ...).
        path: Where the model was loaded from.
        function: The loaded graph, a scan tensor -> its labels (call the segmenter instead).
    """

    name: str
    kind: str
    spec: ServingSpec
    path: Path
    function: Callable[[Any], Any] = dataclasses.field(repr=False)

    def __call__(self, scan: np.ndarray) -> np.ndarray:
        """Labels of a raw scan on the canonical grid (HU for CT), same shape, uint8.

        Raises:
            ServingError: If the model cannot run on this input (naming the model).
        """
        import tensorflow as tf

        scan = np.ascontiguousarray(scan, dtype=np.float32)
        if scan.ndim != 3:
            raise InvalidInputError(f"expected a 3-D scan [D, H, W], got shape {scan.shape}", path="scan")
        try:
            labels = np.asarray(self.function(tf.constant(scan)))
        except (tf.errors.OpError, ValueError, TypeError) as exc:
            raise ServingError(f"the model failed on a scan of shape {scan.shape}: {type(exc).__name__}: {_cause_line(exc)}",
                               path=self.path) from exc
        if labels.shape != scan.shape:
            raise ServingError(f"the model returned labels of shape {labels.shape} for a scan of shape {scan.shape}", path=self.path)
        return labels.astype(np.uint8, copy=False)


_NOISE_PREFIXES = ("Graph execution error", "Detected at node", "<stack traces", "Stack trace for op", "File ", "[[", "tf2xla")


def _cause_line(exc: Exception) -> str:
    """The informative line of a TensorFlow error (not its 'Graph execution error' header or stack)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    useful = [line for line in lines if not line.startswith(_NOISE_PREFIXES)]
    return (useful or lines or [type(exc).__name__])[0][:300]


def _load_savedmodel(path: Path) -> Segmenter:
    import tensorflow as tf

    meta_path = path / "metadata.json"
    if not meta_path.is_file():
        raise ExportError("SavedModel has no metadata.json (export it with python -m tfmedseg.export)", path=path)
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ExportError(f"not valid JSON: {exc}", path=meta_path) from exc
    if not isinstance(meta, dict) or "serving_spec" not in meta:
        raise ExportError("metadata.json has no 'serving_spec' (export it with python -m tfmedseg.export)", path=meta_path)
    spec = ServingSpec.from_dict(meta["serving_spec"])
    try:
        loaded = tf.saved_model.load(str(path))
    except Exception as exc:  # noqa: BLE001 - TF raises many types for a broken SavedModel
        raise ExportError(f"cannot load the SavedModel: {type(exc).__name__}: {str(exc)[:300]}", path=path) from exc
    signatures = dict(getattr(loaded, "signatures", {}) or {})
    if "segment" not in signatures:
        raise ExportError(
            f"SavedModel has no 'segment' signature (found: {sorted(signatures) or 'none'}); re-export it with python -m tfmedseg.export",
            path=path,
        )
    segment = signatures["segment"]
    _check_finite_weights(getattr(loaded, "variables", ()), path)

    def run(scan):
        return segment(scan=scan)["labels"].numpy()

    run.loaded = loaded  # keep the trackable objects alive
    name = str(meta.get("model_name") or path.parent.name)
    return Segmenter(name, "savedmodel", spec, path, run)


def _check_finite_weights(variables, path: Path) -> None:
    """A model whose weights hold NaN or infinity segments nothing sensible: refuse it."""
    for var in variables:
        value = np.asarray(var.numpy() if hasattr(var, "numpy") else var)
        if value.dtype.kind == "f" and not np.isfinite(value).all():
            name = getattr(var, "path", None) or getattr(var, "name", "?")
            raise ExportError(f"weight {name} holds NaN or infinite values; the model is broken (retrain or re-export it)", path=path)


def _warn_if_not_ct(volume: Volume, segmenter: Segmenter) -> None:
    """A CT model (an intensity window in HU) given an MRI / PET / non-HU scan: say so (it still runs)."""
    intensity = segmenter.spec.intensity
    if intensity.kind != "clip_scale" or intensity.low >= 0:
        return
    modality = str(volume.modality or "").upper()
    lowest = float(np.min(volume.array)) if volume.array.size else 0.0
    if modality not in ("CT", "OT", ""):
        _log.warning("the scan's modality is %s but %s expects CT in HU; the result is likely meaningless", modality, segmenter.name)
    elif lowest > -500.0:
        _log.warning("no voxel below -500 HU (minimum %.0f); %s expects CT in HU (air is -1000 HU): is this an MRI "
                     "or a scan without its RescaleSlope/Intercept?", lowest, segmenter.name)


def _infer_spec(model: Any, path: Path) -> ServingSpec:
    """Spec of a bare ``.keras`` file: a ``serving_spec.json`` beside it, else read off a 2D/2.5D input."""
    beside = path.with_name("serving_spec.json")
    if beside.is_file():
        try:
            return ServingSpec.from_dict(json.loads(beside.read_text()))
        except json.JSONDecodeError as exc:
            raise ExportError(f"not valid JSON: {exc}", path=beside) from exc
    shape = tuple(model.inputs[0].shape)
    out_channels = model.outputs[0].shape[-1]
    if len(shape) != 4 or shape[-1] is None:
        raise ExportError(
            f"cannot tell how to feed a model with input shape {shape}: put a serving_spec.json beside the .keras file",
            path=path,
        )
    labels = ("background", "foreground") if out_channels in (1, 2) else tuple(["background"] + [f"label {k}" for k in range(1, out_channels)])
    _log.warning("%s has no serving_spec.json beside it; assuming a %d-slice 2.5D model with the default "
                 "intensity window [-200, 200] HU", path.name, shape[-1])
    return ServingSpec(mode="2.5d" if shape[-1] > 1 else "2d", context_slices=int(shape[-1]), labels=labels)


def _load_keras(path: Path) -> Segmenter:
    import tensorflow as tf

    from tfmedseg.inference.graph import segment_volume
    from tfmedseg.export.run_dir import load_for_export

    bundle = load_for_export(path)
    model = bundle.model
    _check_finite_weights(model.weights, path)
    spec = bundle.spec if path.is_dir() else _infer_spec(model, path)
    input_shape = tuple(model.inputs[0].shape)
    if spec.mode in ("2d", "2.5d") and len(input_shape) == 4 and input_shape[-1] not in (None, spec.context_slices):
        raise ExportError(
            f"the serving spec feeds {spec.context_slices} slices but the model takes {input_shape[-1]} input channels",
            path=path,
        )

    def forward(x):
        return tf.cast(model(x, training=False), tf.float32)

    # The largest-component step runs on the host (scipy, 26-connected as in the graph): the in-graph
    # label propagation needs one 3x3x3 max-pool pass over the volume per voxel of component diameter.
    graph_spec = dataclasses.replace(spec, largest_component_labels=())

    @tf.function(input_signature=[tf.TensorSpec([None, None, None], tf.float32, name="scan")])
    def segment(scan):
        labels, _ = segment_volume(forward, scan, graph_spec)
        return labels

    def run(scan):
        return _keep_largest_components(segment(scan).numpy(), spec.largest_component_labels)

    name = str(bundle.info.get("model_name") or (path.name if path.is_dir() else path.stem))
    return Segmenter(name, "keras", spec, path, run)


def _keep_largest_components(labels: np.ndarray, which: tuple[int, ...]) -> np.ndarray:
    """Voxels of each label in ``which`` outside its largest 26-connected component become background."""
    from tfmedseg.inference.postprocess import largest_connected_component

    for label in which:
        mask = labels == label
        if mask.any():
            labels[mask & ~largest_connected_component(mask, connectivity=3)] = 0
    return labels


def resolve_model_path(path: str | os.PathLike) -> Path:
    """The model directory or file ``path`` names: a model root ``saved_models/<name>`` gives its highest version
    holding a ``saved_model.pb`` (a newer TFLite-only version folder is passed over, unlike TF Serving's ``latest``
    policy, which loads it and fails).

    Raises:
        ExportError: Missing path, or a folder that is neither a model nor a model root.
    """
    path = Path(path)
    if not path.exists():
        raise ExportError("model path does not exist", path=path)
    if path.is_dir() and not (path / "saved_model.pb").is_file() and not (path / "model.keras").is_file():
        versions = savedmodel_versions(path)  # a model root: its highest version holding a SavedModel
        if not versions:
            raise ExportError(
                "not a model: expected a SavedModel directory (saved_model.pb + metadata.json), a run directory "
                "(model.keras + serving_spec.json) or a .keras file",
                path=path,
            )
        path = versions[0]
    return path


def load_segmenter(path: str | os.PathLike) -> Segmenter:
    """Load a SavedModel version dir (or model root), a run directory or a ``.keras`` file.

    Raises:
        ExportError: Missing path, unknown layout, no ``segment`` signature, no or malformed
            metadata, an unloadable model; the message names the path.
    """
    given, path = Path(path), resolve_model_path(path)
    if path != given:
        _log.info("using the highest version %s of %s", path.name, given)
    if path.is_dir() and (path / "saved_model.pb").is_file():
        return _load_savedmodel(path)
    if path.is_dir() or path.suffix == ".keras":
        return _load_keras(path)
    raise ExportError("not a model: expected a SavedModel directory, a run directory or a .keras file", path=path)


def read_input(path: str | os.PathLike, *, modality: str | None = None, series_uid: str | None = None) -> Volume:
    """Read a NIfTI file or a DICOM series folder into a canonical Volume.

    Args:
        path: ``.nii`` / ``.nii.gz`` file or a folder of DICOM files.
        modality: NIfTI: the modality recorded (default ``"CT"``); DICOM: only consider series of
            this Modality.
        series_uid: DICOM: the SeriesInstanceUID to read when the folder holds several.

    Raises:
        InvalidInputError: Missing, corrupt, non-3D or non-finite input; several series and no
            ``series_uid``; a single DICOM file instead of its folder.
    """
    from tfmedseg.io.dicom import read_dicom_series
    from tfmedseg.io.nifti import read_nifti

    path = Path(path)
    if not path.exists():
        raise InvalidInputError("input does not exist", path=path)
    if path.is_dir():
        return read_dicom_series(path, series_uid=series_uid, modality=modality)
    if str(path).lower().endswith(_NIFTI_SUFFIXES):
        return read_nifti(path, (modality or "CT").upper())
    raise InvalidInputError("expected a NIfTI file (.nii, .nii.gz) or a folder of DICOM files (for one DICOM file, pass its folder)", path=path)


def segment_scan(segmenter: Segmenter, volume: Volume) -> np.ndarray:
    """Labels ``[D, H, W]`` uint8 of ``volume`` on its own canonical grid.

    When ``segmenter.spec.spacing_mm`` is set and differs from the volume's spacing, the scan is
    resampled to it (linear), segmented, and the labels are resized back (nearest neighbour).

    Raises:
        ServingError: If the model fails on the scan.
    """
    from tfmedseg.preprocessing.resample import resample_to_spacing, restore_array

    spacing = segmenter.spec.spacing_mm
    if spacing is not None and len(spacing) == 2:
        spacing = (None, *spacing)
    if spacing is None or np.allclose([s if s is not None else v for s, v in zip(spacing, volume.spacing)],
                                      volume.spacing, rtol=1e-3, atol=0):
        return segmenter(volume.array)
    resampled = resample_to_spacing(volume, spacing, "linear")
    _log.info("resampled %s at %s mm to %s at %s mm", volume.shape, _mm(volume.spacing), resampled.shape, _mm(resampled.spacing))
    labels = segmenter(resampled.array)
    return restore_array(labels, resampled, "nearest").astype(np.uint8)


def label_volumes(labels: np.ndarray, spacing, names) -> tuple[dict[int, int], dict[str, tuple[int, float]]]:
    """Voxel counts of every label value and the voxels and millilitres of each non-background label.

    Args:
        labels: Integer label map ``[D, H, W]``.
        spacing: Voxel size in mm per axis.
        names: Label names by value (a value past the end is called ``"label <v>"``).

    Returns:
        ``({value: voxels}, {name: (voxels, ml)})``, the second without label 0.
    """
    voxel_ml = float(np.prod(spacing)) / 1000.0
    values, counts = np.unique(labels, return_counts=True)
    count_map = {int(v): int(c) for v, c in zip(values, counts)}
    volumes_ml = {(names[v] if v < len(names) else f"label {v}"): (c, c * voxel_ml) for v, c in count_map.items() if v}
    return count_map, volumes_ml


def _mm(values) -> str:
    return " x ".join(f"{v:.3g}" for v in values)


def _check_output(path: Path, overwrite: bool, nifti_out: bool) -> None:
    """Fail before any work when ``path`` exists and may not be replaced, or cannot be created.

    ``overwrite`` replaces only an output of ours: a label map written by tfmedseg (NIfTI
    ``descrip``) or a folder carrying :data:`~tfmedseg.io._atomic.OUTPUT_MARKER`.
    """
    from tfmedseg.io._atomic import OUTPUT_MARKER, has_marker
    from tfmedseg.io.nifti import written_by_tfmedseg

    if os.path.lexists(path):
        if nifti_out:
            if path.is_dir() or path.is_symlink():
                raise InvalidInputError("output exists and is not a regular file; choose another --output", path=path)
            if not overwrite:
                raise InvalidInputError("output exists already (pass --overwrite to replace a label map written by tfmedseg)", path=path)
            if not written_by_tfmedseg(path):
                raise InvalidInputError("output exists and is not a label map written by tfmedseg; refusing to replace it "
                                        "(remove it yourself or choose another --output)", path=path)
        else:
            if path.is_symlink() or not path.is_dir():
                raise InvalidInputError("output exists and is not a directory; choose another --output", path=path)
            if any(path.iterdir()):
                if not overwrite:
                    raise InvalidInputError("output exists already (pass --overwrite to replace an output of tfmedseg)", path=path)
                if not has_marker(path):
                    raise InvalidInputError(f"output folder holds files tfmedseg did not write (no {OUTPUT_MARKER}); refusing to "
                                            "replace it (remove it yourself or choose another --output)", path=path)
    ancestor = path.parent
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise InvalidInputError(f"cannot create the output's parent directory: {ancestor} is a file", path=path)
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise InvalidInputError(f"cannot create the output: {ancestor} is not writable", path=path)


def predict_provenance(model: str | os.PathLike, input_path: str | os.PathLike, output: str | os.PathLike,
                       **options: Any) -> dict[str, Any]:
    """What makes a :func:`predict_file` output: the model (resolved path and
    :func:`~tfmedseg.io.provenance.model_fingerprint`), the input
    (:func:`~tfmedseg.io.provenance.input_fingerprint`), the kind of output and the ``options`` that
    change it; JSON-ready (recorded in the output marker, or as a digest in a NIfTI label map)."""
    from tfmedseg.io.provenance import job_record

    return job_record("predict", resolve_model_path(model), input_path,
                      "nifti" if str(output).lower().endswith(_NIFTI_SUFFIXES) else "folder", options)


def _holds_job(output: Path, nifti_out: bool, provenance: dict[str, Any]) -> bool:
    """True when ``output`` is an output of ours that records this very ``provenance``."""
    from tfmedseg.io._atomic import holds_provenance
    from tfmedseg.io.nifti import nifti_job

    if nifti_out:
        return not output.is_symlink() and output.is_file() and nifti_job(output) == job_digest(provenance)[:32]
    return holds_provenance(output, provenance)


def predict_file(
    model: str | os.PathLike | Segmenter,
    input_path: str | os.PathLike,
    output: str | os.PathLike,
    *,
    modality: str | None = None,
    series_uid: str | None = None,
    series_number: int | None = None,
    opacity: float = 0.3,
    window: tuple[float, float] | None | str = "auto",
    dicom_seg: bool = True,
    overwrite: bool = False,
    uid_seed: str | None = None,
) -> dict[str, Any]:
    """Segment one scan and write the outputs (what ``python -m tfmedseg.predict`` does).

    Args:
        model: A :class:`Segmenter` or a path for :func:`load_segmenter`.
        input_path: NIfTI file or DICOM folder (:func:`read_input`).
        output: NIfTI input: a ``.nii``/``.nii.gz`` file; DICOM input: a folder (overlay series,
            ``label.nii.gz``, ``seg.dcm``), or a ``.nii``/``.nii.gz`` file for the label map only.
        modality, series_uid: See :func:`read_input`.
        series_number: SeriesNumber of the overlay series (default: source + 1000; the DICOM-SEG
            gets this + 1000).
        opacity: Overlay colour opacity (0.3 in seed 003).
        window: Grey window ``(level, width)``; ``"auto"``: 40/400 HU for CT, percentiles otherwise.
        dicom_seg: Also write a DICOM-SEG when highdicom is installed.
        overwrite: Replace an existing output of ours (even one of the same job).
        uid_seed: Deterministic UIDs (tests); default: random new UIDs.

    Returns:
        ``{"labels": array, "volume": Volume, "written": [paths], "counts": {label: voxels},
        "volumes_ml": {label name: (voxels, ml)}, "output": Path}`` (:func:`tfmedseg.predict_cli.print_result` prints it).
        When ``output`` holds the result of the same job already (:func:`predict_provenance`, recorded
        by the run that wrote it) and not ``overwrite``: nothing is read or written and the result is
        ``{"up_to_date": True, "output": Path, "written": [], "counts": {}, "volumes_ml": {}}``.

    Raises:
        TfMedSegError: Any user error, naming the file.
    """
    from tfmedseg.inference.bone_scan import is_whole_body_model, predict_bone_scan
    from tfmedseg.io.nifti import write_nifti
    from tfmedseg.io.segmentation_outputs import write_dicom_outputs

    if not isinstance(model, Segmenter) and is_whole_body_model(model):  # seed 001: NM DICOM -> lesion instances
        return {**predict_bone_scan(model, input_path, output, overwrite=overwrite), "output": output}
    input_path, output = Path(input_path), Path(output)
    nifti_out = str(output).lower().endswith(_NIFTI_SUFFIXES)
    if not input_path.exists():
        raise InvalidInputError("input does not exist", path=input_path)
    if input_path.is_file() and not nifti_out:
        raise InvalidInputError("for a NIfTI input, --output must be a .nii or .nii.gz file", path=output)
    if not 0.0 <= opacity <= 1.0:
        raise InvalidInputError(f"opacity must lie in [0, 1], got {opacity}", path="--opacity")
    if series_number is not None and not 0 <= series_number <= _MAX_SERIES_NUMBER:
        raise InvalidInputError(f"must lie in [0, {_MAX_SERIES_NUMBER}] (DICOM IS range, leaving room for the DICOM-SEG's +1000), "
                                f"got {series_number}", path="--series-number")
    check_output_not_input(output, [input_path], key=str(output))
    provenance = predict_provenance(model.path if isinstance(model, Segmenter) else model, input_path, output, modality=modality,
                                    series_uid=series_uid, series_number=series_number, opacity=opacity, window=window,
                                    dicom_seg=dicom_seg, uid_seed=uid_seed)
    if not overwrite and _holds_job(output, nifti_out, provenance):
        _log.debug("%s holds the result of this model, input and options already; not written again", output)
        return {"written": [], "counts": {}, "volumes_ml": {}, "output": output, "up_to_date": True}
    _check_output(output, overwrite, nifti_out)
    volume = read_input(input_path, modality=modality, series_uid=series_uid)
    _log.info("input: %s (%s, %s), shape %s, spacing %s mm", input_path, volume.meta.get("format"), volume.modality,
              volume.shape, _mm(volume.spacing))
    segmenter = model if isinstance(model, Segmenter) else load_segmenter(model)
    _log.info("model: %s (%s), labels %s", segmenter.name, segmenter.kind, list(segmenter.spec.labels))
    _warn_if_not_ct(volume, segmenter)
    labels = segment_scan(segmenter, volume)
    names = segmenter.spec.labels
    count_map, volumes_ml = label_volumes(labels, volume.spacing, names)

    written: list[Path] = []
    if nifti_out:
        _check_output(output, overwrite, nifti_out)
        written.append(write_nifti(labels, output, reference=volume, dtype=np.uint8, job=job_digest(provenance)))
    else:
        with atomic_dir(output, overwrite, kind="predict", provenance=provenance, option="--overwrite") as staging:
            notes = write_dicom_outputs(volume, labels, staging, label_names=names, name=segmenter.name, opacity=opacity,
                                        window=window, series_number=series_number, uid_seed=uid_seed, dicom_seg=dicom_seg)
        for note in notes:
            _log.warning("%s", note)
        written.extend(sorted(p for p in output.rglob("*") if p.is_file() and p.name != OUTPUT_MARKER))
    return {"labels": labels, "volume": volume, "written": written, "counts": count_map, "volumes_ml": volumes_ml,
            "output": output}


def main(argv: list[str] | None = None) -> int:
    """``python -m tfmedseg.predict`` (:func:`tfmedseg.predict_cli.main`); returns the exit status."""
    from tfmedseg.predict_cli import main as cli_main

    return cli_main(argv)


if __name__ == "__main__":
    sys.exit(main())
