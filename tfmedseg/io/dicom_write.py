"""Writing DICOM series: one file per slice (:func:`write_dicom_series`) or one multi-frame NM SPECT file
(:func:`write_nm_spect`), both atomic (a temporary directory / name renamed when complete).

Geometry: a volume read from DICOM (or written with ``reference=`` such a volume) is written back on
its source planes (same ImageOrientationPatient and slice positions); any other canonical volume as
axial slices of its canonical grid, with ImagePositionPatient / ImageOrientationPatient /
PixelSpacing / SliceThickness derived from its affine (RAS -> LPS). :func:`tfmedseg.io.dicom.read_dicom_series`
reads both forms back to the same array, spacing and affine. The tfmedseg MAA SPECT layout stores the
SPECT with :func:`write_nm_spect` (one multi-frame ``NM`` RECON TOMO file) in the CT's frame of
reference; per-slice ``NM`` series written by :func:`write_dicom_series` are read the same way.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import numpy as np

from tfmedseg.errors import InvalidInputError
from tfmedseg.io._atomic import atomic_dir, atomic_file
from tfmedseg.io.volume import CANONICAL_AXCODES, Volume

__all__ = ["write_dicom_series", "write_nm_spect", "SeriesIdentity", "SOP_CLASS_UIDS", "WRITE_MODALITIES"]

#: Storage SOP classes used when writing, by modality.
SOP_CLASS_UIDS = {
    "CT": "1.2.840.10008.5.1.4.1.1.2",  # CT Image Storage
    "PT": "1.2.840.10008.5.1.4.1.1.128",  # Positron Emission Tomography Image Storage
    "NM": "1.2.840.10008.5.1.4.1.1.20",  # Nuclear Medicine Image Storage
    "MR": "1.2.840.10008.5.1.4.1.1.4",  # MR Image Storage
    "OT": "1.2.840.10008.5.1.4.1.1.7",  # Secondary Capture Image Storage
}
#: Modalities :func:`write_dicom_series` accepts.
WRITE_MODALITIES = tuple(SOP_CLASS_UIDS)

_CT_INTERCEPT = -1024.0
_LPS = np.array([-1.0, -1.0, 1.0])  # RAS <-> LPS sign flip


def _ds_str(value: float) -> str:
    """A float as a DICOM DS string (at most 16 characters)."""
    from pydicom.valuerep import format_number_as_ds

    return format_number_as_ds(float(value))


def _make_uid(seed: str | None, *parts: Any) -> str:
    from pydicom.uid import generate_uid

    if seed is None:
        return generate_uid()
    return generate_uid(entropy_srcs=[str(seed), *[str(p) for p in parts]])


def _source_geometry(volume: Volume, reference: Volume | None, array: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The array as slices to write and its RAS affine (index ``(k, r, c)`` -> mm).

    A volume read from DICOM (or a ``reference`` read from DICOM) is written back on its source
    planes; anything else as axial slices of the canonical grid.
    """
    import nibabel as nib

    geometry = reference if reference is not None else volume
    ornt = geometry.meta.get("source_ornt") if geometry.meta.get("format") == "dicom" else None
    affine = geometry.affine
    if ornt is None:
        return array, affine
    transform = nib.orientations.ornt_transform(nib.orientations.axcodes2ornt(CANONICAL_AXCODES), np.asarray(ornt))
    source = nib.orientations.apply_orientation(array, transform)
    source_affine = affine @ nib.orientations.inv_ornt_aff(transform, array.shape)
    return np.ascontiguousarray(source), source_affine


def _encode(
    source: np.ndarray, modality: str, mask: bool, out: Path
) -> tuple[np.ndarray, list[float] | None, list[float] | None]:
    """Stored integer slices and per-slice rescale slope/intercept (``None``: no Modality LUT tags)."""
    values = np.asarray(source)
    if values.dtype == bool:
        values = values.astype(np.uint8)
    if np.issubdtype(values.dtype, np.floating) and not np.isfinite(values).all():
        raise InvalidInputError("volume contains NaN or infinite values; cannot write DICOM", path=out)
    n = values.shape[0]
    integral = np.issubdtype(values.dtype, np.integer) or bool(np.array_equal(values, np.round(values)))
    vmin, vmax = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
    if mask:
        if not integral or vmin < 0 or vmax > 65535:
            raise InvalidInputError(
                f"a mask series needs integer values in [0, 65535], got range [{vmin}, {vmax}]", path=out
            )
        dtype = np.uint8 if vmax <= 255 else np.uint16
        return values.astype(dtype), ([1.0] * n if modality == "CT" else None), ([0.0] * n if modality == "CT" else None)
    if modality == "CT":
        stored = np.round(values.astype(np.float64) - _CT_INTERCEPT)
        if stored.min() < -32768 or stored.max() > 32767:
            raise InvalidInputError(
                f"CT values [{vmin}, {vmax}] HU do not fit int16 with RescaleIntercept {_CT_INTERCEPT}", path=out
            )
        return stored.astype(np.int16), [1.0] * n, [_CT_INTERCEPT] * n
    if modality != "PT" and integral and vmin >= 0 and vmax <= 65535:
        return values.astype(np.uint16), [1.0] * n, [0.0] * n
    if modality != "PT" and integral and vmin >= -32768 and vmax <= 32767:
        return values.astype(np.int16), [1.0] * n, [0.0] * n
    # Per-slice linear scaling into int16 (PET convention; also non-integer NM/MR values).
    stored = np.empty(values.shape, np.int16)
    slopes = []
    for k in range(n):
        peak = float(np.abs(values[k]).max())
        slope = float(_ds_str(peak / 32000.0)) if peak > 0 else 1.0
        stored[k] = np.round(values[k].astype(np.float64) / slope).astype(np.int16)
        slopes.append(slope)
    return stored, slopes, [0.0] * n


def _image_type(modality: str, mask: bool) -> list[str]:
    if mask:
        return ["DERIVED", "SECONDARY"]
    return {"NM": ["ORIGINAL", "PRIMARY", "RECON TOMO", "EMISSION"], "PT": ["ORIGINAL", "PRIMARY"]}.get(
        modality, ["ORIGINAL", "PRIMARY", "AXIAL"]
    )


def _base_dataset(
    sop_class: str, sop_uid: str, modality: str, tags: dict[str, Any]
) -> Any:
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, PYDICOM_IMPLEMENTATION_UID

    file_meta = FileMetaDataset()
    file_meta.MediaStorageSOPClassUID = sop_class
    file_meta.MediaStorageSOPInstanceUID = sop_uid
    file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    file_meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds = Dataset()
    ds.file_meta = file_meta
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_uid
    ds.Modality = modality
    for key, value in tags.items():
        if value is not None:
            setattr(ds, key, value)
    return ds


def _set_pixels(ds: Any, plane: np.ndarray) -> None:
    bits = plane.dtype.itemsize * 8
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = int(plane.shape[-2]), int(plane.shape[-1])
    ds.BitsAllocated = bits
    ds.BitsStored = bits
    ds.HighBit = bits - 1
    ds.PixelRepresentation = 1 if np.issubdtype(plane.dtype, np.signedinteger) else 0
    ds.PixelData = np.ascontiguousarray(plane).astype(plane.dtype.newbyteorder("<")).tobytes()


def _reference_volume(reference: Volume | str | os.PathLike | None) -> Volume | None:
    if reference is None or isinstance(reference, Volume):
        return reference
    from tfmedseg.io.dicom import read_dicom_series

    return read_dicom_series(reference)


@dataclasses.dataclass(frozen=True)
class SeriesIdentity:
    """Patient, study and series identity of a written series: the ``**identity`` keyword arguments
    of :func:`write_dicom_series` and :func:`write_nm_spect`.

    Attributes:
        patient_id: PatientID (ignored when the reference has one).
        patient_name: PatientName; default: the patient ID.
        study_uid: StudyInstanceUID; default: the reference's, else a new UID.
        series_uid: SeriesInstanceUID; default: a new UID.
        frame_of_reference_uid: FrameOfReferenceUID; default: the reference's, else a new UID.
        study_date, study_time, series_time: DICOM DA / TM strings (deterministic defaults).
        uid_seed: Makes every generated UID a deterministic function of this string.
    """

    patient_id: str = "ANON"
    patient_name: str | None = None
    study_uid: str | None = None
    series_uid: str | None = None
    frame_of_reference_uid: str | None = None
    study_date: str = "20000101"
    study_time: str = "120000"
    series_time: str = "120000"
    uid_seed: str | None = None

    @classmethod
    def of(cls, writer: str, identity: dict[str, Any]) -> SeriesIdentity:
        """The identity from a writer's ``**identity`` (TypeError naming ``writer`` for an unknown key)."""
        unknown = sorted(set(identity) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise TypeError(f"{writer}() got unexpected keyword argument(s) {unknown}")
        return cls(**identity)


def _study_tags(reference: Volume | None, identity: SeriesIdentity) -> dict[str, Any]:
    tags: dict[str, Any] = {}
    if reference is not None:
        tags.update({k: v for k, v in reference.meta.get("reference_tags", {}).items() if v is not None})
        if not tags.get("StudyInstanceUID") and reference.meta.get("study_uid"):
            tags["StudyInstanceUID"] = reference.meta["study_uid"]
        if not tags.get("FrameOfReferenceUID") and reference.meta.get("frame_of_reference_uid"):
            tags["FrameOfReferenceUID"] = reference.meta["frame_of_reference_uid"]
        if not tags.get("PatientID") and reference.meta.get("patient_id"):
            tags["PatientID"] = reference.meta["patient_id"]
    tags.setdefault("PatientID", identity.patient_id)
    tags.setdefault("PatientName", identity.patient_name if identity.patient_name is not None else tags["PatientID"])
    tags.setdefault("PatientBirthDate", "")
    tags.setdefault("PatientSex", "")
    tags.setdefault("StudyDate", identity.study_date)
    tags.setdefault("StudyTime", identity.study_time)
    tags.setdefault("StudyID", "1")
    tags.setdefault("AccessionNumber", "")
    tags.setdefault("ReferringPhysicianName", "")
    if identity.study_uid is not None:
        tags["StudyInstanceUID"] = identity.study_uid
    tags.setdefault("StudyInstanceUID", _make_uid(identity.uid_seed, "study"))
    if identity.frame_of_reference_uid is not None:
        tags["FrameOfReferenceUID"] = identity.frame_of_reference_uid
    tags.setdefault("FrameOfReferenceUID", _make_uid(identity.uid_seed, "frame_of_reference"))
    tags.pop("PatientWeight", None)
    return tags


def _series_tags(reference: Volume | None, identity: SeriesIdentity, *, modality: str, series_description: str,
                 series_number: int) -> dict[str, Any]:
    """Patient, study (:func:`_study_tags`) and series tags of a new series (a new SeriesInstanceUID
    unless ``identity.series_uid``; dates and times deterministic by default)."""
    tags = _study_tags(reference, identity)
    series_time = identity.series_time
    tags.update(
        SeriesInstanceUID=identity.series_uid or _make_uid(identity.uid_seed, "series", series_number, series_description, modality),
        SeriesNumber=int(series_number),
        SeriesDescription=series_description,
        SeriesDate=tags["StudyDate"],
        SeriesTime=series_time,
        AcquisitionDate=tags["StudyDate"],
        AcquisitionTime=series_time,
        ContentDate=tags["StudyDate"],
        ContentTime=series_time,
        PositionReferenceIndicator="",
        Manufacturer="tfmedseg",
        PatientPosition="HFS",
    )
    return tags


def _array_and_geometry(volume: Volume | np.ndarray, reference: Volume | None, path: Path) -> tuple[np.ndarray, Volume]:
    """``(array [D, H, W], the Volume whose affine places it)``: a Volume itself, or a bare array on
    ``reference``'s grid (InvalidInputError without a reference or when not 3-D)."""
    if isinstance(volume, Volume):
        array, geometry = volume.array, volume
    else:
        if reference is None:
            raise InvalidInputError("writing a bare array needs a reference Volume for its geometry", path=path)
        array, geometry = np.asarray(volume), reference
    if array.ndim != 3:
        raise InvalidInputError(f"expected a 3-D [D, H, W] volume, got shape {array.shape}", path=path)
    return array, geometry


def _plane_vectors(affine: np.ndarray) -> tuple[np.ndarray, np.ndarray, float, float, np.ndarray, np.ndarray]:
    """DICOM in-plane geometry of a canonical affine: ``(row_dir, col_dir, ps_row, ps_col, normal, step)``,
    directions in LPS, ``step`` the LPS vector from one slice to the next."""
    col_vec, row_vec = affine[:3, 1], affine[:3, 2]  # along rows index (H) and columns index (W), RAS
    ps_row, ps_col = float(np.linalg.norm(col_vec)), float(np.linalg.norm(row_vec))
    row_dir, col_dir = _LPS * row_vec / ps_col, _LPS * col_vec / ps_row
    return row_dir, col_dir, ps_row, ps_col, np.cross(row_dir, col_dir), _LPS * affine[:3, 0]


def _pet_tags(
    *,
    units: str,
    patient_weight: float | None,
    radionuclide_total_dose: float | None,
    radionuclide_half_life: float | None,
    radiopharmaceutical_start_time: str | None,
    radiopharmaceutical: str,
    decay_correction: str,
) -> dict[str, Any]:
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence as DicomSequence

    tags: dict[str, Any] = {
        "Units": units,
        "DecayCorrection": decay_correction,
        "CorrectedImage": ["ATTN", "DECY"],
        "CountsSource": "EMISSION",
        "SeriesType": ["STATIC", "IMAGE"],
    }
    if patient_weight is not None:
        tags["PatientWeight"] = _ds_str(patient_weight)
    if any(v is not None for v in (radionuclide_total_dose, radionuclide_half_life, radiopharmaceutical_start_time)):
        item = Dataset()
        item.Radiopharmaceutical = radiopharmaceutical
        if radionuclide_total_dose is not None:
            item.RadionuclideTotalDose = _ds_str(radionuclide_total_dose)
        if radionuclide_half_life is not None:
            item.RadionuclideHalfLife = _ds_str(radionuclide_half_life)
        if radiopharmaceutical_start_time is not None:
            item.RadiopharmaceuticalStartTime = radiopharmaceutical_start_time
        tags["RadiopharmaceuticalInformationSequence"] = DicomSequence([item])
    return tags


def write_dicom_series(
    volume: Volume | np.ndarray,
    out_dir: str | os.PathLike,
    *,
    modality: str = "CT",
    series_description: str = "",
    series_number: int = 1,
    reference: Volume | str | os.PathLike | None = None,
    mask: bool | None = None,
    filename: str = "IM{index:04d}.dcm",
    overwrite: bool = False,
    units: str = "BQML",
    patient_weight: float | None = None,
    radionuclide_total_dose: float | None = None,
    radionuclide_half_life: float | None = None,
    radiopharmaceutical_start_time: str | None = None,
    radiopharmaceutical: str = "Fluorodeoxyglucose",
    decay_correction: str = "START",
    **identity: Any,
) -> list[Path]:
    """Write a canonical volume as a DICOM series, one file per slice, atomically.

    Slices are written on the source planes of a volume read from DICOM (or of ``reference``),
    otherwise as axial slices of the canonical grid, with ImagePositionPatient,
    ImageOrientationPatient, PixelSpacing, SliceThickness and SpacingBetweenSlices taken from the
    affine. Pixel encoding: CT as int16 with ``RescaleIntercept -1024`` (HU rounded to integers);
    PT as int16 with a per-slice ``RescaleSlope`` (relative quantisation < 1/32000 of the slice
    maximum) and ``Units``; masks as uint8 (values <= 255) or uint16; other modalities as
    uint16/int16 when integral, else per-slice scaled int16.

    Args:
        volume: Canonical :class:`Volume` ``[D, H, W]``, or an array on ``reference``'s grid.
        out_dir: Directory to create; the files appear only when all are written.
        modality: DICOM Modality, one of :data:`WRITE_MODALITIES`.
        series_description: SeriesDescription.
        series_number: SeriesNumber.
        reference: A series read with :func:`read_dicom_series` (or its directory) whose patient,
            study and frame of reference are reused, and whose slice planes are written; the
            volume must be on its grid (a prediction written back as a new series of the study).
        mask: Store as an unscaled uint8/uint16 mask; default: ``volume.modality == "SEG"`` or a
            bool or uint8 array.
        filename: File name pattern with ``{index}`` (0-based slice index).
        overwrite: Replace a non-empty ``out_dir``.
        units: PET ``Units`` (``"BQML"`` for Bq/ml).
        patient_weight: PET PatientWeight in kg (for SUVbw).
        radionuclide_total_dose: Injected activity in Bq.
        radionuclide_half_life: Half-life in s (F-18: 6586.2).
        radiopharmaceutical_start_time: Injection time of day, DICOM TM ``HHMMSS``.
        radiopharmaceutical: Radiopharmaceutical name.
        decay_correction: PET DecayCorrection (``"START"`` or ``"ADMIN"``).
        **identity: Patient, study and series identity (``patient_id``, ``patient_name``,
            ``study_uid``, ``series_uid``, ``frame_of_reference_uid``, ``study_date``,
            ``study_time``, ``series_time``, ``uid_seed``): the fields of :class:`SeriesIdentity`.

    Returns:
        The written file paths, in slice order.

    Raises:
        InvalidInputError: Unknown modality, array not 3-D / not on the reference grid, values
            that do not fit the stored type, or a non-empty ``out_dir`` without ``overwrite``.

    Example:
        >>> ct = read_dicom_series("PATIENT_DICOM")                                 # doctest: +SKIP
        >>> write_dicom_series(ct.with_array(pred, "SEG"), "PRED", reference=ct,
        ...                    series_description="liver prediction")               # doctest: +SKIP
    """
    out_dir = Path(out_dir)
    modality = str(modality).upper()
    if modality not in WRITE_MODALITIES:
        raise InvalidInputError(f"modality must be one of {WRITE_MODALITIES}, got {modality!r}", path=out_dir)
    reference = _reference_volume(reference)
    array, geometry_volume = _array_and_geometry(volume, reference, out_dir)
    if reference is not None and array.shape != reference.array.shape:
        raise InvalidInputError(
            f"array shape {array.shape} does not match the reference grid {reference.array.shape}", path=out_dir
        )
    if mask is None:
        mask = array.dtype in (np.bool_, np.uint8) or (isinstance(volume, Volume) and volume.modality == "SEG")
    source, affine = _source_geometry(geometry_volume, reference, array)
    stored, slopes, intercepts = _encode(source, modality, bool(mask), out_dir)

    row_dir, col_dir, ps_row, ps_col, normal, step = _plane_vectors(affine)
    if abs(row_dir @ col_dir) > 1e-4:
        raise InvalidInputError("the in-plane axes of the affine are not orthogonal; cannot write DICOM", path=out_dir)
    thickness = abs(float(step @ normal))

    ident = SeriesIdentity.of("write_dicom_series", identity)
    tags = _series_tags(reference, ident, modality=modality, series_description=series_description, series_number=series_number)
    series_uid = tags["SeriesInstanceUID"]
    tags.update(
        ImageType=_image_type(modality, bool(mask)),
        ImageOrientationPatient=[_ds_str(v) for v in (*row_dir, *col_dir)],
        PixelSpacing=[_ds_str(ps_row), _ds_str(ps_col)],
        SliceThickness=_ds_str(thickness),
        SpacingBetweenSlices=_ds_str(thickness),
    )
    if modality == "PT":
        tags.update(
            _pet_tags(
                units=units,
                patient_weight=patient_weight,
                radionuclide_total_dose=radionuclide_total_dose,
                radionuclide_half_life=radionuclide_half_life,
                radiopharmaceutical_start_time=radiopharmaceutical_start_time,
                radiopharmaceutical=radiopharmaceutical,
                decay_correction=decay_correction,
            )
        )
        tags["ImageIndex"] = None
    elif modality == "NM":
        tags["NumberOfFrames"] = 1
    elif modality == "CT":
        tags["KVP"] = ""

    names = []
    with atomic_dir(out_dir, overwrite, marker=False, option="overwrite=True") as tmp:
        for k in range(stored.shape[0]):
            sop_uid = _make_uid(series_uid, "instance", k)
            ds = _base_dataset(SOP_CLASS_UIDS[modality], sop_uid, modality, tags)
            position = _LPS * (affine @ np.array([k, 0.0, 0.0, 1.0]))[:3]
            ds.InstanceNumber = k + 1
            ds.ImagePositionPatient = [_ds_str(v) for v in position]
            ds.SliceLocation = _ds_str(float(position @ normal))
            if modality == "PT":
                ds.ImageIndex = k + 1
            if slopes is not None:
                ds.RescaleSlope = _ds_str(slopes[k])
                ds.RescaleIntercept = _ds_str(intercepts[k])
                ds.RescaleType = "HU" if modality == "CT" and not mask else "US"
            _set_pixels(ds, stored[k])
            name = filename.format(index=k)
            ds.save_as(tmp / name, enforce_file_format=True)
            names.append(name)
    return [out_dir / name for name in names]


def write_nm_spect(
    volume: Volume | np.ndarray,
    path: str | os.PathLike,
    *,
    series_description: str = "SPECT",
    series_number: int = 2,
    reference: Volume | str | os.PathLike | None = None,
    radiopharmaceutical: str = "Tc-99m MAA",
    **identity: Any,
) -> Path:
    """Write a canonical SPECT volume as one multi-frame NM file (RECON TOMO), atomically.

    Frames are the axial slices of the canonical grid (``array[k]``), frame ``k`` at
    ``ImagePositionPatient + k * SpacingBetweenSlices * normal``; geometry is stored at the top
    level and in the DetectorInformationSequence. Values are counts, stored as uint16 with a
    ``RescaleSlope`` when they are not integers or exceed 65535. The MAA SPECT layout of
    tfmedseg writes the SPECT this way, with ``reference=`` the CT series so that it shares the
    CT's study and frame of reference (its grid may differ: it is written on its own affine).

    Args:
        volume: Canonical :class:`Volume` ``[D, H, W]`` of non-negative counts (or an array on
            ``reference``'s grid).
        path: Output file; parent directories are created.
        series_description, series_number: as in :func:`write_dicom_series`.
        reference: Series (Volume or directory) whose patient, study and frame of reference are
            reused.
        radiopharmaceutical: Radiopharmaceutical name.
        **identity: The fields of :class:`SeriesIdentity`, as in :func:`write_dicom_series`.

    Returns:
        The written path.

    Raises:
        InvalidInputError: Not 3-D, negative or non-finite counts, or an oblique / sheared grid
            that one multi-frame NM file cannot describe.
    """
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence as DicomSequence
    from pydicom.tag import Tag

    path = Path(path)
    reference = _reference_volume(reference)
    array, geometry = _array_and_geometry(volume, reference, path)
    affine = geometry.affine
    values = np.asarray(array, dtype=np.float64)
    if not np.isfinite(values).all() or (values.size and values.min() < 0):
        raise InvalidInputError("SPECT counts must be finite and non-negative", path=path)
    row_dir, col_dir, ps_row, ps_col, normal, step = _plane_vectors(affine)
    spacing = float(step @ normal)
    if abs(row_dir @ col_dir) > 1e-4 or np.linalg.norm(step - spacing * normal) > 1e-3 * abs(spacing):
        raise InvalidInputError("the grid is sheared; a multi-frame NM file needs slices along the normal", path=path)
    peak = float(values.max()) if values.size else 0.0
    integral = bool(np.array_equal(values, np.round(values)))
    slope = 1.0 if integral and peak <= 65535 else float(_ds_str(peak / 65000.0)) if peak > 0 else 1.0
    stored = np.round(values / slope).astype(np.uint16)

    tags = _series_tags(reference, SeriesIdentity.of("write_nm_spect", identity), modality="NM",
                        series_description=series_description, series_number=series_number)
    series_uid = tags["SeriesInstanceUID"]
    sop_uid = _make_uid(series_uid, "instance")
    position = _LPS * affine[:3, 3]
    iop = [_ds_str(v) for v in (*row_dir, *col_dir)]
    ipp = [_ds_str(v) for v in position]
    detector = Dataset()
    detector.ImagePositionPatient = ipp
    detector.ImageOrientationPatient = iop
    radio = Dataset()
    radio.Radiopharmaceutical = radiopharmaceutical
    tags.update(
        ImageType=["ORIGINAL", "PRIMARY", "RECON TOMO", "EMISSION"],
        NumberOfFrames=int(stored.shape[0]),
        FrameIncrementPointer=Tag(0x0054, 0x0080),  # SliceVector
        SliceVector=list(range(1, stored.shape[0] + 1)),
        NumberOfSlices=int(stored.shape[0]),
        ImagePositionPatient=ipp,
        ImageOrientationPatient=iop,
        DetectorInformationSequence=DicomSequence([detector]),
        RadiopharmaceuticalInformationSequence=DicomSequence([radio]),
        PixelSpacing=[_ds_str(ps_row), _ds_str(ps_col)],
        SliceThickness=_ds_str(abs(spacing)),
        SpacingBetweenSlices=_ds_str(spacing),
        RescaleSlope=_ds_str(slope),
        RescaleIntercept="0",
        Units="CNTS",
    )
    ds = _base_dataset(SOP_CLASS_UIDS["NM"], sop_uid, "NM", tags)
    ds.InstanceNumber = 1
    _set_pixels(ds, stored)
    with atomic_file(path, ".dcm") as tmp:
        ds.save_as(tmp, enforce_file_format=True)
    return path

