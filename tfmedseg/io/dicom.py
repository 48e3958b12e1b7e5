"""DICOM series (CT, PET, MR, NM/SPECT) with pydicom -> canonical :class:`~tfmedseg.io.volume.Volume`.

Reading (:func:`read_dicom_series`)
-----------------------------------
1. Every file of a directory (optionally recursive) is opened. A file with the 128-byte preamble and
   the ``DICM`` magic is DICOM: if pydicom cannot parse it, that is an error. A file without the
   magic is tried with ``force=True`` and skipped when it does not look like an image instance
   (``README``, ``.txt``, thumbnails). DICOM objects without pixel data (``DICOMDIR``, SR,
   RTSTRUCT) are skipped. Skipped files are listed in ``meta["skipped_files"]``.
2. Instances are grouped by SeriesInstanceUID (optionally filtered by ``modality``); several series
   and no ``series_uid`` is an error listing them.
3. Every frame (a single-frame file, or one frame of a multi-frame NM SPECT file whose positions are
   ``ImagePositionPatient + k * SpacingBetweenSlices * normal``) gets a position along the slice
   normal ``row_cosine x column_cosine``; frames are sorted by it. Orientation, rows, columns and
   pixel spacing must agree; duplicate positions and gaps (a step that differs from the median step
   by more than 5 %) are errors naming the directory and the positions.
4. The Modality LUT is applied per frame (``RescaleSlope``/``RescaleIntercept``: HU for CT). PET with
   ``Units = BQML`` is in Bq/ml; when ``PatientWeight`` and the radiopharmaceutical dose, half-life
   and start time are present, ``meta["suv_factor"]`` converts to SUVbw (``suv = bqml * factor``),
   decay-corrected from the injection to ``SeriesTime`` (or the earliest ``AcquisitionTime``) for
   ``DecayCorrection = START``.
5. The stacked array ``[slice (sorted along the normal), row, column]`` and its affine (LPS -> RAS)
   are reoriented to the canonical ``[D, H, W]`` (superior, posterior, left) layout; the source
   geometry stays in ``meta`` so that :func:`write_dicom_series` with ``reference=`` writes slices
   back on exactly the source planes.

Writing
-------
:func:`write_dicom_series` and :func:`write_nm_spect` live in :mod:`tfmedseg.io.dicom_write` and are
re-exported here.

Example:
    >>> import numpy as np
    >>> from tfmedseg.io import Volume, canonical_affine
    >>> vol = Volume(np.zeros((4, 8, 8), np.float32) - 1000, (2.5, 0.8, 0.8), canonical_affine((2.5, 0.8, 0.8)), "CT")
    >>> files = write_dicom_series(vol, "/tmp/ct_series")          # doctest: +SKIP
    >>> read_dicom_series("/tmp/ct_series").spacing                # doctest: +SKIP
    (2.5, 0.8, 0.8)
"""

from __future__ import annotations

import dataclasses
import datetime
import os
from pathlib import Path
from typing import Any

import numpy as np

from tfmedseg.errors import InvalidInputError
from tfmedseg.io.volume import Volume, spacing_from_affine, to_canonical

__all__ = ["read_dicom_series", "list_dicom_series", "read_series_header", "SeriesHeader"]  # the writers: tfmedseg.io.dicom_write

#: How a caller chooses one of several series (the keyword arguments); a command line names its options instead
#: (``tfmedseg.predict_cli``: ``--series-uid`` / ``--modality``).
CHOOSE_SERIES = "pass series_uid= (or modality=)"

_PREAMBLE_MAGIC_OFFSET = 128
_DICOMDIR_SOP_CLASS = "1.2.840.10008.1.3.10"
_GAP_TOLERANCE = 0.05  # relative deviation of one slice step from the median step
_DUPLICATE_TOLERANCE_MM = 1e-3
_GEOMETRY_TOLERANCE = 1e-4
_PLUGIN_HINTS = {
    "JPEG 2000": "pip install pylibjpeg pylibjpeg-openjpeg (or python-gdcm)",
    "JPEG-LS": "pip install pylibjpeg pylibjpeg-libjpeg (or pyjpegls, or python-gdcm)",
    "JPEG": "pip install pylibjpeg pylibjpeg-libjpeg (or python-gdcm)",
    "RLE": "pip install pylibjpeg pylibjpeg-rle",
    "Deflate": "no plugin needed; the file is probably corrupt",
}


# --------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass
class _Frame:
    """One 2-D image plane of a series: a single-frame file or one frame of a multi-frame file."""

    path: Path
    ds: Any
    frame_index: int | None
    position: np.ndarray  # ImagePositionPatient (LPS mm) of the first transmitted pixel
    orientation: np.ndarray  # 6 direction cosines: row (along columns), column (along rows)
    pixel_spacing: np.ndarray  # (between rows, between columns) mm
    rows: int
    cols: int
    slope: float
    intercept: float


def _has_dicom_magic(path: Path) -> bool:
    try:
        with open(path, "rb") as handle:
            head = handle.read(_PREAMBLE_MAGIC_OFFSET + 4)
    except OSError as exc:
        raise InvalidInputError(f"cannot open file ({exc})", path=path) from exc
    return len(head) == _PREAMBLE_MAGIC_OFFSET + 4 and head[_PREAMBLE_MAGIC_OFFSET:] == b"DICM"


_DEFER_BYTES = 64 * 1024


def _looks_like_raw_dicom(path: Path) -> bool:
    """A headerless (ACR-NEMA style) DICOM file starts with an element of group 0x0002 or 0x0008."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(8)
    except OSError:
        return False
    return len(head) == 8 and head[:2] in (b"\x02\x00", b"\x08\x00", b"\x00\x02", b"\x00\x08")


def _int_tag(ds: Any, name: str, path: Path, default: int | None = None, low: int = 1, high: int = 2**31 - 1) -> int:
    """An integer attribute, checked for presence, type and range (InvalidInputError naming it)."""
    value = ds.get(name, None)
    if value is None or value == "":
        if default is None:
            raise InvalidInputError(f"missing {name}", path=path)
        return default
    try:
        number = int(value)
        if number != float(value):
            raise ValueError
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"{name} is not an integer: {value!r}", path=path) from exc
    if not low <= number <= high:
        raise InvalidInputError(f"{name} {number} is outside [{low}, {high}]", path=path)
    return number


def _float_tag(ds: Any, name: str, path: Path, default: float) -> float:
    value = ds.get(name, None)
    if value is None or value == "":
        return default
    try:
        number = float(value)
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"{name} is not a number: {value!r}", path=path) from exc
    if not np.isfinite(number):
        raise InvalidInputError(f"{name} is not finite: {value!r}", path=path)
    return number


#: Most voxels one series may declare (frames x rows x columns); ``TFMEDSEG_MAX_VOXELS`` raises it.
def _max_voxels() -> int:
    from tfmedseg.io.nifti import max_voxels

    return max_voxels()


def _read_instance(path: Path) -> tuple[Any | None, str | None]:
    """Parse one file. Returns ``(dataset, None)`` or ``(None, reason_skipped)``.

    Raises:
        InvalidInputError: If a file with the DICOM magic cannot be parsed or lacks the UIDs.
    """
    import pydicom

    if _has_dicom_magic(path):
        try:
            ds = pydicom.dcmread(str(path), defer_size=_DEFER_BYTES)  # pixel data stays on disk until decoded
            ds.get("SOPClassUID")  # force parsing of the first elements
        except Exception as exc:  # pydicom raises many types for corrupt input
            raise InvalidInputError(
                f"has a DICOM preamble but cannot be parsed ({type(exc).__name__}: {exc}); the header is corrupt or truncated",
                path=path,
            ) from exc
        if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
            meta = getattr(ds, "file_meta", None)
            sop_class = ds.get("SOPClassUID") or (meta.get("MediaStorageSOPClassUID") if meta is not None else None)
            if "DirectoryRecordSequence" in ds or str(sop_class) == _DICOMDIR_SOP_CLASS:
                return None, "DICOMDIR (media directory, no image)"
            if sop_class is None or "SeriesInstanceUID" not in ds:
                raise InvalidInputError(
                    "has a DICOM preamble but no SOPClassUID/SeriesInstanceUID and no pixel data; "
                    "the header is corrupt or truncated",
                    path=path,
                )
            return None, f"DICOM object without pixel data ({getattr(sop_class, 'name', sop_class)})"
        return ds, None
    # No preamble: old ACR-NEMA style files are still DICOM (they start with a group 0x0002 or
    # 0x0008 element), text files and other binaries are not: skip those without parsing them.
    if not _looks_like_raw_dicom(path):
        return None, "not a DICOM file (no DICM preamble, does not start with a DICOM element)"
    try:
        ds = pydicom.dcmread(str(path), force=True, defer_size=_DEFER_BYTES)
        ok = "PixelData" in ds and "SOPInstanceUID" in ds and "SeriesInstanceUID" in ds
    except Exception:  # noqa: BLE001 - anything unreadable without a preamble is "not DICOM"
        ok = False
    if not ok:
        return None, "not a DICOM image file (no DICM preamble and no image attributes)"
    return ds, None


def _ignored(path: Path, root: Path) -> bool:
    """Hidden files/folders (ours: markers, old staging) and tfmedseg staging are never instances."""
    from tfmedseg.io._atomic import STAGING_TAG

    parts = path.relative_to(root).parts
    return any(part.startswith(".") or STAGING_TAG in part for part in parts)


def _list_files(directory: Path, recursive: bool) -> list[Path]:
    iterator = directory.rglob("*") if recursive else directory.iterdir()
    return sorted(p for p in iterator if p.is_file() and not _ignored(p, directory))


def _scan_directory(directory: Path, recursive: bool) -> tuple[dict[str, list[tuple[Path, Any]]], list[str]]:
    if not directory.exists():
        raise InvalidInputError("directory does not exist", path=directory)
    if not directory.is_dir():
        raise InvalidInputError("expected a directory of DICOM files, got a file", path=directory)
    files = _list_files(directory, recursive)
    if not files and not recursive:
        subfolders = sorted(p.name for p in directory.iterdir() if p.is_dir() and not _ignored(p, directory))
        if subfolders:  # PACS exports put each series in its own folder: search them
            files = _list_files(directory, True)
    if not files:
        raise InvalidInputError("directory is empty (no DICOM files, also in its subfolders)", path=directory)
    series: dict[str, list[tuple[Path, Any]]] = {}
    skipped: list[str] = []
    for path in files:
        ds, reason = _read_instance(path)
        if ds is None:
            skipped.append(f"{path.name}: {reason}")
            continue
        uid = ds.get("SeriesInstanceUID")
        if not uid:
            raise InvalidInputError("DICOM image without SeriesInstanceUID", path=path)
        series.setdefault(str(uid), []).append((path, ds))
    if not series:
        raise InvalidInputError(
            f"contains no DICOM image files ({len(files)} files skipped: {'; '.join(skipped[:5])})", path=directory
        )
    return series, skipped


def _describe_series(uid: str, items: list[tuple[Path, Any]]) -> str:
    ds = items[0][1]
    return (
        f"{uid} (modality {ds.get('Modality', '?')}, series {ds.get('SeriesNumber', '?')} "
        f"'{ds.get('SeriesDescription', '')}', {len(items)} files, e.g. {items[0][0].name})"
    )


def list_dicom_series(directory: str | os.PathLike, *, recursive: bool = False) -> dict[str, dict[str, Any]]:
    """The image series in a directory, without decoding pixels.

    Args:
        directory: Directory of DICOM files.
        recursive: Also look in sub-directories.

    Returns:
        ``{series_uid: {"modality", "series_number", "series_description", "files"}}``.

    Raises:
        InvalidInputError: Missing/empty directory or a corrupt DICOM file.
    """
    series, _ = _scan_directory(Path(directory), recursive)
    return {
        uid: {
            "modality": str(items[0][1].get("Modality", "")),
            "series_number": items[0][1].get("SeriesNumber"),
            "series_description": str(items[0][1].get("SeriesDescription", "")),
            "files": [p for p, _ in items],
        }
        for uid, items in series.items()
    }


def _floats(value: Any, n: int, name: str, path: Path) -> np.ndarray:
    try:
        out = np.asarray([float(v) for v in value], dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"{name} is not numeric: {value!r}", path=path) from exc
    if out.shape != (n,) or not np.isfinite(out).all():
        raise InvalidInputError(f"{name} must have {n} finite values, got {value!r}", path=path)
    return out


def _geometry_source(ds: Any) -> tuple[Any, Any]:
    """ImagePositionPatient / ImageOrientationPatient, top level or in DetectorInformationSequence (NM)."""
    ipp, iop = ds.get("ImagePositionPatient"), ds.get("ImageOrientationPatient")
    detectors = ds.get("DetectorInformationSequence")
    if (ipp is None or iop is None) and detectors:
        ipp = ipp if ipp is not None else detectors[0].get("ImagePositionPatient")
        iop = iop if iop is not None else detectors[0].get("ImageOrientationPatient")
    return ipp, iop


def _frames_of(path: Path, ds: Any) -> list[_Frame]:
    """Split an instance into frames with their patient-space geometry."""
    ipp, iop = _geometry_source(ds)
    if ipp is None or iop is None:
        raise InvalidInputError(
            "missing ImagePositionPatient/ImageOrientationPatient: not a tomographic slice (a planar NM "
            "whole-body scan is read with read_nm_wholebody; enhanced multi-frame CT/MR with per-frame "
            "functional groups is not supported)",
            path=path,
        )
    if "PixelSpacing" not in ds:
        raise InvalidInputError("missing PixelSpacing", path=path)
    position = _floats(ipp, 3, "ImagePositionPatient", path)
    orientation = _floats(iop, 6, "ImageOrientationPatient", path)
    spacing = _floats(ds.PixelSpacing, 2, "PixelSpacing", path)
    if (spacing <= 0).any():
        raise InvalidInputError(f"PixelSpacing must be positive, got {list(spacing)}", path=path)
    slope = _float_tag(ds, "RescaleSlope", path, 1.0)
    if slope == 0.0:
        raise InvalidInputError("RescaleSlope is 0 (every voxel would map to the intercept)", path=path)
    intercept = _float_tag(ds, "RescaleIntercept", path, 0.0)
    rows, cols = _int_tag(ds, "Rows", path, high=65535), _int_tag(ds, "Columns", path, high=65535)
    n_frames = _int_tag(ds, "NumberOfFrames", path, default=1)
    bits = _int_tag(ds, "BitsAllocated", path, default=16, high=64)
    samples = _int_tag(ds, "SamplesPerPixel", path, default=1, high=4)
    if n_frames * rows * cols > _max_voxels():
        raise InvalidInputError(f"declares {n_frames} frames of {rows}x{cols}, more than the limit of {_max_voxels()} voxels", path=path)
    element = ds.get_item("PixelData") if "PixelData" in ds else None  # raw: the deferred value is not read
    declared = n_frames * rows * cols * samples * bits // 8
    stored = getattr(element, "length", None) if element is not None else None
    if stored is not None and stored not in (0, 0xFFFFFFFF) and not _is_compressed(ds, path) and stored + 1 < declared:
        raise InvalidInputError(f"pixel data holds {stored} bytes but NumberOfFrames/Rows/Columns/BitsAllocated declare "
                                f"{declared}", path=path)
    if n_frames == 1:
        return [_Frame(path, ds, None, position, orientation, spacing, rows, cols, slope, intercept)]
    step_mm = ds.get("SpacingBetweenSlices", ds.get("SliceThickness"))
    if step_mm is None or float(step_mm) == 0.0:
        raise InvalidInputError(
            f"multi-frame image with {n_frames} frames needs SpacingBetweenSlices (or SliceThickness)", path=path
        )
    normal = np.cross(orientation[:3], orientation[3:])
    return [
        _Frame(path, ds, k, position + k * float(step_mm) * normal, orientation, spacing, rows, cols, slope, intercept)
        for k in range(n_frames)
    ]


def _check_consistent(frames: list[_Frame], directory: Path) -> None:
    first = frames[0]
    for name, getter in (
        ("ImageOrientationPatient", lambda f: f.orientation),
        ("PixelSpacing", lambda f: f.pixel_spacing),
        ("Rows/Columns", lambda f: np.array([f.rows, f.cols], dtype=float)),
    ):
        ref = getter(first)
        for frame in frames[1:]:
            if not np.allclose(getter(frame), ref, atol=_GEOMETRY_TOLERANCE, rtol=0):
                raise InvalidInputError(
                    f"inconsistent {name} across the series: {frame.path.name} has {list(getter(frame))}, "
                    f"{first.path.name} has {list(ref)}",
                    path=directory,
                )
    row, col = first.orientation[:3], first.orientation[3:]
    if abs(np.linalg.norm(row) - 1) > 1e-3 or abs(np.linalg.norm(col) - 1) > 1e-3 or abs(row @ col) > 1e-3:
        raise InvalidInputError(
            f"ImageOrientationPatient {list(first.orientation)} is not two orthonormal direction cosines",
            path=first.path,
        )


def _sort_and_check(frames: list[_Frame], directory: Path) -> tuple[list[_Frame], np.ndarray]:
    """Sort along the normal; reject duplicates and gaps. Returns frames and the mean step vector (LPS mm)."""
    orientation = frames[0].orientation
    normal = np.cross(orientation[:3], orientation[3:])
    normal /= np.linalg.norm(normal)
    frames = sorted(frames, key=lambda f: float(f.position @ normal))
    pos = np.array([f.position @ normal for f in frames])
    if len(frames) == 1:
        ds = frames[0].ds
        thickness = ds.get("SpacingBetweenSlices") or ds.get("SliceThickness") or 1.0
        return frames, normal * abs(float(thickness))
    steps = np.diff(pos)
    dup = np.flatnonzero(steps < _DUPLICATE_TOLERANCE_MM)
    if dup.size:
        pairs = ", ".join(
            f"{pos[i]:.3f} mm ({_frame_name(frames[i])} and {_frame_name(frames[i + 1])})" for i in dup[:5]
        )
        raise InvalidInputError(f"duplicate slice positions along the slice normal: {pairs}", path=directory)
    median = float(np.median(steps))
    bad = np.flatnonzero(np.abs(steps - median) > _GAP_TOLERANCE * median)
    if bad.size:
        gaps = ", ".join(f"{pos[i]:.3f} -> {pos[i + 1]:.3f} mm (step {steps[i]:.3f})" for i in bad[:5])
        raise InvalidInputError(
            f"gap or uneven slice spacing (median step {median:.3f} mm) between slice positions {gaps}; "
            "a slice is missing or the series mixes acquisitions",
            path=directory,
        )
    positions = np.array([f.position for f in frames])
    step_vec = (positions[-1] - positions[0]) / (len(frames) - 1)
    deviation = np.abs(positions - (positions[0] + np.arange(len(frames))[:, None] * step_vec)).max()
    if deviation > max(_GAP_TOLERANCE * median, 0.01):
        raise InvalidInputError(
            f"slice positions are not on one straight line (deviation {deviation:.3f} mm); "
            "the series mixes acquisitions or has varying gantry tilt",
            path=directory,
        )
    return frames, step_vec


def _frame_name(frame: _Frame) -> str:
    return frame.path.name if frame.frame_index is None else f"{frame.path.name}[frame {frame.frame_index}]"


def _transfer_syntax(ds: Any) -> Any:
    meta = getattr(ds, "file_meta", None)
    return None if meta is None else meta.get("TransferSyntaxUID")


def _is_compressed(ds: Any, path: Path) -> bool:
    """Whether the transfer syntax is compressed; an unknown (private) transfer syntax is an error."""
    tsuid = _transfer_syntax(ds)
    if tsuid is None:
        return False
    try:
        return bool(tsuid.is_compressed)
    except (ValueError, AttributeError) as exc:
        raise InvalidInputError(f"unknown transfer syntax {tsuid} (private or invalid); cannot decode its pixel data", path=path) from exc


def _check_decoder(path: Path, ds: Any) -> None:
    """Raise a clear error when a compressed transfer syntax has no installed decoder plugin."""
    from pydicom.pixels import get_decoder

    tsuid = _transfer_syntax(ds)
    if tsuid is None or not _is_compressed(ds, path):
        return
    try:
        decoder = get_decoder(tsuid)
    except NotImplementedError as exc:
        raise InvalidInputError(
            f"transfer syntax {tsuid.name} ({tsuid}) has no pixel data decoder in pydicom", path=path
        ) from exc
    if not decoder.is_available:
        hint = next((h for key, h in _PLUGIN_HINTS.items() if key in tsuid.name), "install python-gdcm")
        missing = "; ".join(decoder.missing_dependencies)
        raise InvalidInputError(
            f"compressed transfer syntax {tsuid.name} ({tsuid}) cannot be decoded: no decoder plugin is "
            f"installed ({missing}). Fix: {hint}",
            path=path,
        )


def _pixels(path: Path, ds: Any) -> np.ndarray:
    _check_decoder(path, ds)
    try:
        array = ds.pixel_array
    except Exception as exc:  # noqa: BLE001 - pydicom raises many types for bad pixel data
        tsuid = _transfer_syntax(ds)
        syntax = f" (transfer syntax {tsuid.name})" if tsuid is not None else ""
        raise InvalidInputError(f"cannot decode pixel data{syntax}: {type(exc).__name__}: {exc}", path=path) from exc
    if array.ndim == 3 and int(ds.get("SamplesPerPixel", 1)) > 1 or array.ndim == 4:
        raise InvalidInputError(
            f"colour images (SamplesPerPixel {ds.get('SamplesPerPixel')}) are not supported for volumes", path=path
        )
    return array


def _parse_time(value: Any) -> float | None:
    """DICOM TM (``HHMMSS.FFFFFF``, ``HHMM``, ...) -> seconds after midnight."""
    if value is None:
        return None
    text = str(value).strip()
    if not text:
        return None
    try:
        hours = int(text[0:2])
        minutes = int(text[2:4]) if len(text) >= 4 else 0
        seconds = float(text[4:]) if len(text) > 4 else 0.0
    except ValueError:
        return None
    return hours * 3600.0 + minutes * 60.0 + seconds


def _parse_datetime(date: Any, time: Any) -> datetime.datetime | None:
    seconds = _parse_time(time)
    if seconds is None or not date or len(str(date).strip()) < 8:
        return None
    try:
        day = datetime.datetime.strptime(str(date).strip()[:8], "%Y%m%d")
    except ValueError:
        return None
    return day + datetime.timedelta(seconds=seconds)


def _suv_factor(ds: Any, frames: list[_Frame]) -> tuple[float | None, str]:
    """SUVbw factor (g/ml per Bq/ml... i.e. ``weight_g / decayed_dose_bq``) and a note on why/why not."""
    units = str(ds.get("Units", "")).upper()
    if units == "GML":
        return 1.0, "pixels are already SUVbw (Units GML)"
    if units != "BQML":
        return None, f"Units {units or 'missing'} (SUV needs BQML)"
    weight = ds.get("PatientWeight")
    info = ds.get("RadiopharmaceuticalInformationSequence")
    if not weight or float(weight) <= 0 or not info:
        return None, "PatientWeight or RadiopharmaceuticalInformationSequence missing"
    item = info[0]
    dose, half_life = item.get("RadionuclideTotalDose"), item.get("RadionuclideHalfLife")
    if not dose or not half_life or float(dose) <= 0 or float(half_life) <= 0:
        return None, "RadionuclideTotalDose or RadionuclideHalfLife missing"
    decay = str(ds.get("DecayCorrection", "START")).upper()
    if decay == "ADMIN":
        elapsed = 0.0
    else:
        start = None
        start_dt = item.get("RadiopharmaceuticalStartDateTime")
        if start_dt and len(str(start_dt)) >= 14:
            start = _parse_datetime(str(start_dt)[:8], str(start_dt)[8:])
        if start is None:
            start = _parse_datetime(ds.get("SeriesDate") or ds.get("AcquisitionDate"), item.get("RadiopharmaceuticalStartTime"))
        scan = _parse_datetime(ds.get("SeriesDate"), ds.get("SeriesTime"))
        if scan is None:
            acq = [
                _parse_datetime(f.ds.get("AcquisitionDate") or ds.get("SeriesDate"), f.ds.get("AcquisitionTime"))
                for f in frames
            ]
            acq = [a for a in acq if a is not None]
            scan = min(acq) if acq else None
        if start is not None and scan is not None:
            elapsed = (scan - start).total_seconds()
        else:  # no dates: times of day only
            t_start = _parse_time(item.get("RadiopharmaceuticalStartTime"))
            t_scan = _parse_time(ds.get("SeriesTime"))
            if t_scan is None:
                times = [_parse_time(f.ds.get("AcquisitionTime")) for f in frames]
                times = [t for t in times if t is not None]
                t_scan = min(times) if times else None
            if t_start is None or t_scan is None:
                return None, "RadiopharmaceuticalStartTime or SeriesTime/AcquisitionTime missing"
            elapsed = t_scan - t_start
            if elapsed < 0:
                elapsed += 86400.0  # injection before midnight, scan after
    decayed = float(dose) * 2.0 ** (-elapsed / float(half_life))
    return float(weight) * 1000.0 / decayed, f"decay-corrected over {elapsed:.0f} s ({decay})"


_REFERENCE_TAGS = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "PatientAge",
    "PatientWeight",
    "StudyInstanceUID",
    "StudyDate",
    "StudyTime",
    "StudyID",
    "AccessionNumber",
    "StudyDescription",
    "ReferringPhysicianName",
    "FrameOfReferenceUID",
)


def read_dicom_series(
    directory: str | os.PathLike,
    *,
    series_uid: str | None = None,
    modality: str | None = None,
    recursive: bool = False,
    labels: bool = False,
) -> Volume:
    """Read one DICOM image series into a canonical :class:`Volume`.

    Args:
        directory: Directory holding the series' files (other series may be there too when
            ``series_uid`` or ``modality`` selects one).
        series_uid: SeriesInstanceUID to read; required when the directory holds several series
            (after the ``modality`` filter).
        modality: Only consider series of this DICOM Modality (``"CT"``, ``"PT"``, ``"NM"``, ...).
        recursive: Also read files in sub-directories.
        labels: Return the stored values as an integer label map (``modality`` ``"SEG"``, dtype
            uint8/uint16/int32) instead of float32; used for mask series (3DIRCADb ``MASKS_DICOM``).

    Returns:
        Volume with ``array`` float32 ``[D, H, W]`` (canonical: superior, posterior, left) in
        modality units after the Modality LUT (HU for CT, Bq/ml for PET with Units BQML, counts
        for NM), ``spacing`` (mm, along D, H, W), ``affine`` (index -> RAS+ mm), ``modality`` the
        DICOM Modality. ``meta``: ``path``, ``format`` (``"dicom"``), ``series_uid``,
        ``study_uid``, ``frame_of_reference_uid``, ``modality``, ``patient_id``, ``files``
        (sorted along the slice normal; a multi-frame file once), ``sop_instance_uids``,
        ``image_positions`` (LPS mm per sorted slice), ``image_orientation``, ``pixel_spacing``,
        ``source_affine`` (RAS, for the sorted ``[slice, row, col]`` stack), ``source_shape``,
        ``source_ornt``, ``reference_tags`` (patient/study attributes reused when writing a new
        series of the same study), ``units``, ``suv_factor`` (PET; ``None`` when tags are
        missing) and ``suv_note``, ``skipped_files``.

    Raises:
        InvalidInputError: Missing or empty directory; a corrupt DICOM file; several series and no
            ``series_uid``; an unknown ``series_uid``; inconsistent orientation, size or pixel
            spacing; duplicate slice positions or gaps; an undecodable compressed transfer syntax
            (naming the plugin to install). Every message names the directory or file.

    Example:
        >>> from tfmedseg.io.dicom import read_dicom_series
        >>> ct = read_dicom_series("3Dircadb1.1/PATIENT_DICOM")  # doctest: +SKIP
        >>> ct.array.shape, ct.spacing                             # doctest: +SKIP
        ((129, 512, 512), (1.6, 0.57, 0.57))
    """
    directory = Path(directory)
    header = read_series_header(directory, series_uid=series_uid, modality=modality, recursive=recursive)
    stack = _decode_stack(header.frames, directory, labels)
    canonical, affine, source_ornt = to_canonical(stack, header.source_affine)
    meta = {**header.meta, "source_ornt": source_ornt}
    return Volume(canonical, spacing_from_affine(affine), affine, "SEG" if labels else header.modality, meta)


@dataclasses.dataclass
class SeriesHeader:
    """What the headers of one DICOM series give, before any pixel is decoded.

    Attributes:
        frames: The image planes sorted along the slice normal (checked: consistent geometry, no
            duplicates or gaps).
        source_affine: 4x4 RAS affine of the sorted ``[slice, row, col]`` stack.
        source_shape: ``(slices, rows, cols)``.
        modality: The DICOM Modality (upper case).
        meta: :func:`read_dicom_series`'s ``meta`` without ``source_ornt``.
    """

    frames: list[_Frame]
    source_affine: np.ndarray
    source_shape: tuple[int, int, int]
    modality: str
    meta: dict[str, Any]


def read_series_header(directory: str | os.PathLike, *, series_uid: str | None = None, modality: str | None = None,
                       recursive: bool = False) -> SeriesHeader:
    """Steps 1-3 of :func:`read_dicom_series` (and the PET SUV factor): the series' files, geometry
    and metadata from the headers alone; pixel data is not read (only its declared size checked).

    Raises:
        InvalidInputError: As :func:`read_dicom_series`, except pixel-data decoding and value errors.
    """
    directory = Path(directory)
    series, skipped = _scan_directory(directory, recursive)
    if modality is not None:
        wanted = modality.upper()
        series = {uid: items for uid, items in series.items() if str(items[0][1].get("Modality", "")).upper() == wanted}
        if not series:
            raise InvalidInputError(f"no series with Modality {wanted}", path=directory)
    if series_uid is not None:
        if series_uid not in series:
            listing = "; ".join(_describe_series(u, it) for u, it in series.items())
            raise InvalidInputError(f"no series with SeriesInstanceUID {series_uid}; found: {listing}", path=directory)
        items = series[series_uid]
    elif len(series) > 1:
        listing = "; ".join(_describe_series(u, it) for u, it in series.items())
        raise InvalidInputError(
            f"contains {len(series)} series, {CHOOSE_SERIES} to choose one: {listing}", path=directory
        )
    else:
        items = next(iter(series.values()))
    uid = str(items[0][1].SeriesInstanceUID)

    frames = [frame for path, ds in items for frame in _frames_of(path, ds)]
    _check_consistent(frames, directory)
    frames, step_vec = _sort_and_check(frames, directory)

    first = frames[0]
    row_dir, col_dir = first.orientation[:3], first.orientation[3:]
    src_lps = np.eye(4)
    src_lps[:3, 0] = step_vec
    src_lps[:3, 1] = col_dir * first.pixel_spacing[0]
    src_lps[:3, 2] = row_dir * first.pixel_spacing[1]
    src_lps[:3, 3] = first.position
    lps_to_ras = np.diag([-1.0, -1.0, 1.0, 1.0])
    source_affine = lps_to_ras @ src_lps
    source_shape = (len(frames), first.rows, first.cols)
    ds0 = first.ds
    dicom_modality = str(ds0.get("Modality", "OT")).upper()
    meta: dict[str, Any] = {
        "path": str(directory),
        "format": "dicom",
        "series_uid": uid,
        "study_uid": str(ds0.get("StudyInstanceUID", "")),
        "frame_of_reference_uid": str(ds0.get("FrameOfReferenceUID", "")),
        "modality": dicom_modality,
        "patient_id": str(ds0.get("PatientID", "")),
        "series_description": str(ds0.get("SeriesDescription", "")),
        "series_number": ds0.get("SeriesNumber"),
        "files": list(dict.fromkeys(f.path for f in frames)),
        "sop_instance_uids": list(dict.fromkeys(str(f.ds.get("SOPInstanceUID", "")) for f in frames)),
        "image_positions": np.array([f.position for f in frames]),
        "image_orientation": first.orientation.copy(),
        "pixel_spacing": tuple(float(v) for v in first.pixel_spacing),
        "slice_step": step_vec.copy(),
        "source_affine": source_affine,
        "source_shape": source_shape,
        "units": str(ds0.get("Units", "HU" if dicom_modality == "CT" else "")),
        "transfer_syntax": str(_transfer_syntax(ds0) or ""),
        "reference_tags": {tag: ds0.get(tag) for tag in _REFERENCE_TAGS if tag in ds0},
        "skipped_files": skipped,
    }
    if dicom_modality == "PT":
        meta["suv_factor"], meta["suv_note"] = _suv_factor(ds0, frames)
    return SeriesHeader(frames, source_affine, source_shape, dicom_modality, meta)


def _decode_stack(frames: list[_Frame], directory: Path, labels: bool) -> np.ndarray:
    """Step 4: decode every frame, apply the Modality LUT and stack ``[slice, row, col]``."""
    decoded: dict[Path, np.ndarray] = {}
    slices = []
    for frame in frames:
        if frame.path not in decoded:
            decoded[frame.path] = _pixels(frame.path, frame.ds)
        pixels = decoded[frame.path]
        plane = pixels if frame.frame_index is None else pixels[frame.frame_index]
        if plane.shape != (frame.rows, frame.cols):
            raise InvalidInputError(
                f"pixel data shape {plane.shape} does not match Rows/Columns {(frame.rows, frame.cols)}",
                path=frame.path,
            )
        if labels:
            slices.append(plane.astype(np.float64) * frame.slope + frame.intercept)
        else:
            slices.append(plane.astype(np.float32) * np.float32(frame.slope) + np.float32(frame.intercept))
    stack = np.stack(slices)
    if labels:
        if not np.array_equal(stack, np.round(stack)) or stack.min() < 0:
            raise InvalidInputError(
                "labels=True but the series holds non-integer or negative values", path=directory
            )
        top = stack.max()
        dtype = np.uint8 if top <= 255 else np.uint16 if top <= 65535 else np.int32
        stack = stack.astype(dtype)
    elif not np.isfinite(stack).all():
        raise InvalidInputError("pixel values are not finite after the Modality LUT", path=directory)
    return stack

