"""NM planar whole-body bone scans: one multi-frame NM DICOM with an anterior and a posterior view.

File layout (what :func:`write_nm_wholebody` writes and :func:`read_nm_wholebody` expects)
------------------------------------------------------------------------------------------
* NM Image Storage, ``ImageType`` ``ORIGINAL\\PRIMARY\\WHOLE BODY\\EMISSION``, 16-bit unsigned
  counts, ``PixelSpacing`` (row, column) in mm, ``NumberOfFrames`` = 2 (one per view; more when
  there are several energy windows).
* ``FrameIncrementPointer`` = (EnergyWindowVector, DetectorVector): frame ``i`` comes from detector
  ``DetectorVector[i]``; its item of the ``DetectorInformationSequence`` carries a
  ``ViewCodeSequence`` with SNOMED CT ``399321004`` "Anterior projection" or ``399001007``
  "Posterior projection" (DICOM CID 26). The reader identifies a view by that code or, failing
  it, by a CodeMeaning containing "anterior" / "posterior".

Posterior left/right convention
-------------------------------
A dual-head camera stores the posterior view as its detector sees it, from behind the patient:
the patient's left is on the image's left, mirrored with respect to the anterior view (patient's
right on the image's left). The file stores it like that (as real scanners do).
:func:`read_nm_wholebody` **flips the posterior view left-right** by default, so that both returned
views share one left/right convention (the anterior's: patient's right on the image's left, like a
radiograph) and a lesion has the same column in both; ``meta["flipped_lr"]`` says whether it was
flipped. :func:`write_nm_wholebody` takes the posterior in that same shared convention and mirrors
it when storing, so a write-read round trip returns the arrays unchanged.

Example:
    >>> import numpy as np
    >>> from tfmedseg.io.nm_planar import read_nm_wholebody, write_nm_wholebody
    >>> ant = np.zeros((256, 96), np.uint16); post = ant.copy()
    >>> write_nm_wholebody(ant, post, "/tmp/wb.dcm", pixel_spacing=(2.4, 2.4))   # doctest: +SKIP
    >>> views = read_nm_wholebody("/tmp/wb.dcm")                                 # doctest: +SKIP
    >>> views["anterior"].array.shape, views["posterior"].spacing                 # doctest: +SKIP
    ((256, 96), (2.4, 2.4))
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from tfmedseg.errors import InvalidInputError
from tfmedseg.io._atomic import atomic_file
from tfmedseg.io.dicom import _pixels
from tfmedseg.io.dicom_write import SOP_CLASS_UIDS, _base_dataset, _ds_str, _make_uid, _set_pixels
from tfmedseg.io.volume import Volume

__all__ = ["read_nm_wholebody", "write_nm_wholebody", "VIEWS", "VIEW_CODES"]

#: The views of a whole-body scan, in frame order of the written file.
VIEWS = ("anterior", "posterior")
#: SNOMED CT codes (DICOM CID 26 "Nuclear Medicine Projection") of the views.
VIEW_CODES = {
    "anterior": ("399321004", "SCT", "Anterior projection"),
    "posterior": ("399001007", "SCT", "Posterior projection"),
}


def _view_of(item: Any) -> str | None:
    """'anterior', 'posterior' or None from a DetectorInformationSequence item's ViewCodeSequence."""
    codes = item.get("ViewCodeSequence") or []
    for code in codes:
        value = str(code.get("CodeValue", ""))
        for view, (code_value, _, _) in VIEW_CODES.items():
            if value == code_value:
                return view
        meaning = str(code.get("CodeMeaning", "")).lower()
        # "posterior" first: "postero-anterior" projections are posterior views.
        if meaning.startswith("post") or ("posterior" in meaning and "anterior" not in meaning):
            return "posterior"
        if "anterior" in meaning:
            return "anterior"
    return None


def _frame_views(ds: Any, path: Path, n_frames: int) -> list[str | None]:
    detectors = ds.get("DetectorInformationSequence") or []
    if not detectors:
        raise InvalidInputError(
            "no DetectorInformationSequence: cannot tell the anterior from the posterior view", path=path
        )
    vector = ds.get("DetectorVector")
    if vector is None:
        if len(detectors) != n_frames:
            raise InvalidInputError(
                f"no DetectorVector and {len(detectors)} detector items for {n_frames} frames", path=path
            )
        vector = list(range(1, n_frames + 1))
    vector = [int(v) for v in (vector if hasattr(vector, "__len__") else [vector])]
    if len(vector) != n_frames:
        raise InvalidInputError(f"DetectorVector has {len(vector)} values for {n_frames} frames", path=path)
    views = []
    for det in vector:
        if not 1 <= det <= len(detectors):
            raise InvalidInputError(f"DetectorVector value {det} has no DetectorInformationSequence item", path=path)
        views.append(_view_of(detectors[det - 1]))
    return views


def read_nm_wholebody(
    path: str | os.PathLike, *, flip_posterior: bool = True, energy_window: int = 1
) -> dict[str, Volume]:
    """Read a whole-body NM bone scan into its anterior and posterior views.

    Args:
        path: Multi-frame NM DICOM file (see the module docstring for the layout).
        flip_posterior: Flip the posterior view left-right so both views share the anterior's
            left/right convention (default). ``False`` returns it as stored (seen from behind).
        energy_window: With several energy windows (``EnergyWindowVector``), the 1-based window
            to read.

    Returns:
        ``{"anterior": Volume, "posterior": Volume}``: 2D float32 ``[H, W]`` arrays of counts
        (after any RescaleSlope/Intercept), ``spacing`` (row, column) mm from PixelSpacing,
        ``modality`` ``"NM"``, affine ``diag(row_mm, col_mm, 1, 1)``; ``meta``: ``path``, ``view``,
        ``frame_index``, ``flipped_lr``, ``stored_mirrored`` (True: the file stores the posterior
        seen from behind), ``patient_id``, ``study_uid``, ``series_uid``, ``sop_instance_uid``,
        ``energy_window``.

    Raises:
        InvalidInputError: Missing or unparsable file, not NM, no pixel spacing, a missing view
            (the message names it), or a view present twice.
    """
    import pydicom

    path = Path(path)
    if not path.is_file():
        raise InvalidInputError("file does not exist", path=path)
    try:
        ds = pydicom.dcmread(str(path))
        modality = str(ds.get("Modality", ""))
    except Exception as exc:  # noqa: BLE001 - pydicom raises many types for corrupt input
        raise InvalidInputError(f"cannot parse DICOM ({type(exc).__name__}: {exc})", path=path) from exc
    if modality != "NM":
        raise InvalidInputError(f"expected an NM whole-body scan, got Modality {modality or 'missing'}", path=path)
    if "PixelData" not in ds:
        raise InvalidInputError("no pixel data", path=path)
    if "PixelSpacing" not in ds:
        raise InvalidInputError("missing PixelSpacing", path=path)
    spacing = tuple(float(v) for v in ds.PixelSpacing)
    if len(spacing) != 2 or not all(np.isfinite(s) and s > 0 for s in spacing):
        raise InvalidInputError(f"PixelSpacing must be two positive values, got {spacing}", path=path)
    n_frames = int(ds.get("NumberOfFrames", 1) or 1)
    views = _frame_views(ds, path, n_frames)
    windows = ds.get("EnergyWindowVector")
    if windows is not None:
        windows = [int(w) for w in (windows if hasattr(windows, "__len__") else [windows])]
        if len(windows) != n_frames:
            raise InvalidInputError(f"EnergyWindowVector has {len(windows)} values for {n_frames} frames", path=path)
    pixels = _pixels(path, ds)
    if n_frames == 1:
        pixels = pixels[None]
    slope = float(ds.get("RescaleSlope", 1.0) or 1.0)
    intercept = float(ds.get("RescaleIntercept", 0.0) or 0.0)
    found: dict[str, int] = {}
    for index, view in enumerate(views):
        if view is None or (windows is not None and windows[index] != energy_window):
            continue
        if view in found:
            raise InvalidInputError(
                f"the {view} view occurs in frames {found[view]} and {index} (energy window {energy_window})", path=path
            )
        found[view] = index
    missing = [v for v in VIEWS if v not in found]
    if missing:
        raise InvalidInputError(
            f"missing the {' and '.join(missing)} view (frames have views {views}); a whole-body scan needs "
            "anterior and posterior",
            path=path,
        )
    out = {}
    for view in VIEWS:
        image = pixels[found[view]].astype(np.float32) * np.float32(slope) + np.float32(intercept)
        flipped = view == "posterior" and flip_posterior
        if flipped:
            image = image[:, ::-1]
        meta = {
            "path": str(path),
            "format": "dicom",
            "view": view,
            "frame_index": found[view],
            "flipped_lr": flipped,
            "stored_mirrored": view == "posterior",
            "energy_window": energy_window,
            "patient_id": str(ds.get("PatientID", "")),
            "study_uid": str(ds.get("StudyInstanceUID", "")),
            "series_uid": str(ds.get("SeriesInstanceUID", "")),
            "sop_instance_uid": str(ds.get("SOPInstanceUID", "")),
        }
        affine = np.diag([spacing[0], spacing[1], 1.0, 1.0])
        out[view] = Volume(np.ascontiguousarray(image), spacing, affine, "NM", meta)
    return out


def _counts(image: Volume | np.ndarray, name: str, path: Path) -> tuple[np.ndarray, tuple[float, float] | None]:
    spacing = None
    if isinstance(image, Volume):
        spacing = tuple(image.spacing)
        image = image.array
    array = np.asarray(image)
    if array.ndim != 2:
        raise InvalidInputError(f"the {name} view must be a 2-D [H, W] image, got shape {array.shape}", path=path)
    values = array.astype(np.float64)
    if not np.isfinite(values).all() or values.min() < 0 or values.max() > 65535:
        raise InvalidInputError(
            f"the {name} view must hold finite counts in [0, 65535], got range [{values.min()}, {values.max()}]",
            path=path,
        )
    return np.round(values).astype(np.uint16), spacing


def write_nm_wholebody(
    anterior: Volume | np.ndarray,
    posterior: Volume | np.ndarray,
    path: str | os.PathLike,
    *,
    pixel_spacing: tuple[float, float] | None = None,
    patient_id: str = "ANON",
    patient_name: str | None = None,
    study_uid: str | None = None,
    series_uid: str | None = None,
    series_description: str = "WB BONE",
    series_number: int = 1,
    study_date: str = "20000101",
    study_time: str = "120000",
    radiopharmaceutical: str = "Tc-99m MDP",
    uid_seed: str | None = None,
) -> Path:
    """Write a whole-body bone scan as one two-frame NM DICOM file, atomically.

    Args:
        anterior: ``[H, W]`` counts (rounded to integers, 0..65535), patient's right on the left.
        posterior: ``[H, W]`` counts in the same left/right convention as ``anterior`` (as
            :func:`read_nm_wholebody` returns it); stored mirrored, as seen from behind.
        path: Output file; parent directories are created.
        pixel_spacing: (row, column) mm; default: the Volumes' spacing, else (2.4, 2.4).
        patient_id: PatientID.
        patient_name: PatientName; default: the patient ID.
        study_uid: StudyInstanceUID; default: a new UID (deterministic with ``uid_seed``).
        series_uid: SeriesInstanceUID; default: a new UID.
        series_description: SeriesDescription.
        series_number: SeriesNumber.
        study_date: StudyDate (DICOM DA).
        study_time: StudyTime (DICOM TM).
        radiopharmaceutical: Radiopharmaceutical name.
        uid_seed: Makes the generated UIDs a deterministic function of this string.

    Returns:
        The written path.

    Raises:
        InvalidInputError: Views that are not 2-D, differ in shape or spacing, or hold values
            outside uint16.
    """
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence as DicomSequence
    from pydicom.tag import Tag

    path = Path(path)
    ant, ant_spacing = _counts(anterior, "anterior", path)
    post, post_spacing = _counts(posterior, "posterior", path)
    if ant.shape != post.shape:
        raise InvalidInputError(f"anterior {ant.shape} and posterior {post.shape} views differ in shape", path=path)
    if pixel_spacing is None:
        pixel_spacing = ant_spacing or post_spacing or (2.4, 2.4)
        if ant_spacing and post_spacing and not np.allclose(ant_spacing, post_spacing):
            raise InvalidInputError(f"views differ in spacing: {ant_spacing} vs {post_spacing}", path=path)
    if len(pixel_spacing) != 2 or not all(float(s) > 0 for s in pixel_spacing):
        raise InvalidInputError(f"pixel_spacing must be two positive mm values, got {pixel_spacing}", path=path)

    detectors = []
    for view in VIEWS:
        code_value, scheme, meaning = VIEW_CODES[view]
        code = Dataset()
        code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning = code_value, scheme, meaning
        item = Dataset()
        item.ViewCodeSequence = DicomSequence([code])
        detectors.append(item)
    window = Dataset()
    window.EnergyWindowName = "Tc99m"
    radio = Dataset()
    radio.Radiopharmaceutical = radiopharmaceutical
    series_uid = series_uid or _make_uid(uid_seed, "wb-series")
    tags: dict[str, Any] = {
        "PatientID": patient_id,
        "PatientName": patient_name if patient_name is not None else patient_id,
        "PatientBirthDate": "",
        "PatientSex": "",
        "StudyInstanceUID": study_uid or _make_uid(uid_seed, "wb-study"),
        "StudyDate": study_date,
        "StudyTime": study_time,
        "StudyID": "1",
        "AccessionNumber": "",
        "ReferringPhysicianName": "",
        "SeriesInstanceUID": series_uid,
        "SeriesNumber": int(series_number),
        "SeriesDescription": series_description,
        "Manufacturer": "tfmedseg",
        "ImageType": ["ORIGINAL", "PRIMARY", "WHOLE BODY", "EMISSION"],
        "NumberOfFrames": 2,
        "FrameIncrementPointer": [Tag(0x0054, 0x0010), Tag(0x0054, 0x0020)],
        "EnergyWindowVector": [1, 1],
        "NumberOfEnergyWindows": 1,
        "EnergyWindowInformationSequence": DicomSequence([window]),
        "DetectorVector": [1, 2],
        "NumberOfDetectors": 2,
        "DetectorInformationSequence": DicomSequence(detectors),
        "RadiopharmaceuticalInformationSequence": DicomSequence([radio]),
        "PixelSpacing": [_ds_str(pixel_spacing[0]), _ds_str(pixel_spacing[1])],
        "PatientOrientation": "",  # differs per frame (posterior is mirrored); see the module docstring
    }
    ds = _base_dataset(SOP_CLASS_UIDS["NM"], _make_uid(uid_seed, "wb-instance", series_uid), "NM", tags)
    ds.InstanceNumber = 1
    _set_pixels(ds, np.stack([ant, post[:, ::-1]]))  # posterior stored as seen from behind
    with atomic_file(path, ".dcm") as tmp:
        ds.save_as(tmp, enforce_file_format=True)
    return path
