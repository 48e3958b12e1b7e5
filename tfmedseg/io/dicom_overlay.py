"""Colour overlays of a label map on its DICOM series: the seed-003 "DICOM in -> DICOM out" output.

The seed-003 clinical application (``../shared/specs/seed-003-liver-lesions.md`` section 8) does not
show its result in a GUI: it writes a new DICOM series that any hospital viewer opens next to the
original. Each source slice is copied with all its metadata, its grey values are replicated to RGB and
the segmentation is blended in at 30 % opacity (liver green, lesion red), and the result is stored as
8-bit RGB (``PhotometricInterpretation = RGB``, ``SamplesPerPixel = 3``, ``PlanarConfiguration = 0``)
under a new SeriesInstanceUID / SOPInstanceUIDs and a new series number, in the same study and frame
of reference, on exactly the same slice planes.

Pixel arithmetic, per pixel and channel (all in 0..255):

* grey ``g``: the source values (HU for CT) through a linear window
  ``clip((x - (level - width / 2)) / width, 0, 1) * 255`` rounded to integers;
* labelled pixel of colour ``c``: ``round((1 - opacity) * g + opacity * c)``;
* background (label 0): ``g`` in all three channels.

Choices beyond the seed (which copies the CT SOP class and only changes the pixel tags):

* The Modality LUT, VOI LUT / window and pixel-padding tags are removed (they describe the CT's
  stored values, not 8-bit RGB); ``ImageType`` becomes ``DERIVED\\SECONDARY``; every slice references
  its source slice in ``SourceImageSequence``.
* By default the SOP class becomes Secondary Capture Image Storage, because the CT Image IOD only
  allows MONOCHROME pixels; the geometry tags (ImagePositionPatient, ImageOrientationPatient,
  PixelSpacing, FrameOfReferenceUID) are kept, so viewers still align the overlay with the CT.
  ``sop_class="source"`` keeps the source SOP class as the seed's tool did.

:func:`write_segmentation_dicom_seg` additionally writes a DICOM-SEG object (a labelled,
coded segmentation PACS systems index) when the optional package ``highdicom`` is installed.

Example:
    >>> from tfmedseg.io.dicom import read_dicom_series
    >>> ct = read_dicom_series("PATIENT_DICOM")                                   # doctest: +SKIP
    >>> write_overlay_series(ct, labels, "OVERLAY", label_names=("background", "liver", "tumour"),
    ...                      series_description="liver_2d3d overlay")             # doctest: +SKIP
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from tfmedseg.errors import InvalidInputError
from tfmedseg.io._atomic import atomic_dir, atomic_file
from tfmedseg.io.volume import Volume

__all__ = [
    "DEFAULT_OPACITY",
    "DEFAULT_CT_WINDOW",
    "SOP_CLASSES",
    "label_colors",
    "window_to_uint8",
    "blend_overlay",
    "write_overlay_series",
    "write_segmentation_dicom_seg",
    "highdicom_available",
]

#: Opacity of the colour over the grey image (seed 003: alpha = 0.3).
DEFAULT_OPACITY = 0.3
#: Abdominal soft-tissue window ``(level, width)`` in HU used for CT grey values.
DEFAULT_CT_WINDOW = (40.0, 400.0)
#: ``"sc"``: Secondary Capture Image Storage (RGB allowed); ``"source"``: keep the source SOP class.
SOP_CLASSES = ("sc", "source")

_SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
_NAMED_COLORS = {"liver": (0, 255, 0), "tumour": (255, 0, 0), "tumor": (255, 0, 0), "lesion": (255, 0, 0)}
#: Colours of labels 1, 2, 3, ... whose name is not in ``_NAMED_COLORS`` (cycled).
_PALETTE = ((0, 255, 0), (255, 0, 0), (0, 0, 255), (255, 255, 0), (0, 255, 255), (255, 0, 255), (255, 128, 0), (128, 0, 255))
_DROP_TAGS = (
    "RescaleSlope", "RescaleIntercept", "RescaleType", "ModalityLUTSequence",
    "WindowCenter", "WindowWidth", "WindowCenterWidthExplanation", "VOILUTFunction", "VOILUTSequence",
    "PixelPaddingValue", "PixelPaddingRangeLimit", "SmallestImagePixelValue", "LargestImagePixelValue",
    "RedPaletteColorLookupTableDescriptor", "GreenPaletteColorLookupTableDescriptor",
    "BluePaletteColorLookupTableDescriptor", "RedPaletteColorLookupTableData",
    "GreenPaletteColorLookupTableData", "BluePaletteColorLookupTableData", "IconImageSequence",
    "FloatPixelData", "DoubleFloatPixelData", "ExtendedOffsetTable", "ExtendedOffsetTableLengths",
)
_UNCOMPRESSED = ("1.2.840.10008.1.2", "1.2.840.10008.1.2.1")


def highdicom_available() -> bool:
    """True when the optional ``highdicom`` package (DICOM-SEG writing) can be imported."""
    try:
        import highdicom  # noqa: F401
    except ImportError:
        return False
    return True


def label_colors(label_names: Sequence[str] | None, n_labels: int) -> dict[int, tuple[int, int, int]]:
    """RGB colour (0..255) of each foreground label ``1 .. n_labels - 1``.

    A label named ``liver`` is green and one named ``tumour``/``tumor``/``lesion`` red (so a
    tumour-only model paints its label 1 red); other labels take the palette colour of their index:
    1 green, 2 red, 3 blue, 4 yellow, 5 cyan, 6 magenta, 7 orange, 8 violet, then repeating.

    Args:
        label_names: Class names by label value (``("background", "liver", "tumour")``), or ``None``.
        n_labels: Number of label values including the background 0.

    Returns:
        ``{label: (r, g, b)}`` for every label ``>= 1``.
    """
    names = list(label_names or ())
    colors = {}
    for label in range(1, max(int(n_labels), 1)):
        name = names[label].lower() if label < len(names) else ""
        colors[label] = _NAMED_COLORS.get(name, _PALETTE[(label - 1) % len(_PALETTE)])
    return colors


def window_to_uint8(values: np.ndarray, window: tuple[float, float] | None = DEFAULT_CT_WINDOW) -> np.ndarray:
    """Linear grey-value window to 8 bits.

    Args:
        values: Array in modality units (HU for CT), any shape.
        window: ``(level, width)``; ``None`` uses the 0.5th-99.5th percentile range of ``values``
            (for MR / NM without a standard window).

    Returns:
        uint8 array of the same shape: ``round(clip((x - (level - width / 2)) / width, 0, 1) * 255)``.

    Raises:
        InvalidInputError: If the width is not positive.
    """
    values = np.asarray(values, dtype=np.float64)
    if window is None:
        level, width = _percentile_window(values)
    else:
        level, width = float(window[0]), float(window[1])
        if not (np.isfinite(width) and width > 0 and np.isfinite(level)):
            raise InvalidInputError(f"window width must be positive and finite, got (level, width) = {tuple(window)}", path="window")
    scaled = np.clip((values - (level - width / 2.0)) / width, 0.0, 1.0) * 255.0
    return np.rint(scaled).astype(np.uint8)


def _percentile_window(values: np.ndarray) -> tuple[float, float]:
    """``(level, width)`` spanning the 0.5th-99.5th percentiles of ``values``."""
    low, high = (np.percentile(values, [0.5, 99.5]) if np.size(values) else (0.0, 1.0))
    return (float(low) + float(high)) / 2.0, max(float(high - low), 1e-6)


def blend_overlay(
    grey: np.ndarray,
    labels: np.ndarray,
    colors: dict[int, tuple[int, int, int]],
    opacity: float = DEFAULT_OPACITY,
) -> np.ndarray:
    """Blend label colours into a grey image.

    Args:
        grey: uint8 grey values, any shape ``S``.
        labels: Integer label map of shape ``S`` (0 = background, left grey).
        colors: ``{label: (r, g, b)}``; a label without a colour is left grey.
        opacity: Colour weight in ``[0, 1]`` (0.3 in seed 003).

    Returns:
        uint8 ``[*S, 3]`` RGB: ``round((1 - opacity) * grey + opacity * color)`` where labelled.

    Raises:
        InvalidInputError: If the shapes differ or the opacity is outside ``[0, 1]``.
    """
    grey = np.asarray(grey)
    labels = np.asarray(labels)
    if grey.shape != labels.shape:
        raise InvalidInputError(f"label map of shape {labels.shape} does not fit the image {grey.shape}", path="labels")
    if not 0.0 <= float(opacity) <= 1.0:
        raise InvalidInputError(f"opacity must lie in [0, 1], got {opacity}", path="opacity")
    rgb = np.repeat(grey.astype(np.float64)[..., None], 3, axis=-1)
    out = rgb.copy()
    for label, color in colors.items():
        where = labels == label
        if where.any():
            out[where] = (1.0 - opacity) * rgb[where] + opacity * np.asarray(color, dtype=np.float64)
    return np.rint(out).astype(np.uint8)


def _make_uid(seed: str | None, *parts: Any) -> str:
    from pydicom.uid import generate_uid

    if seed is None:
        return generate_uid()
    return generate_uid(entropy_srcs=[str(seed), *[str(p) for p in parts]])


def _source_slices(source: Volume, labels: np.ndarray, where: Path) -> tuple[list[Path], np.ndarray, np.ndarray]:
    """Source files (sorted along the slice normal) and the image and labels as ``[slice, row, col]``."""
    if source.meta.get("format") != "dicom" or not source.meta.get("files"):
        raise InvalidInputError("the source volume was not read from a DICOM series (read_dicom_series)", path=source.meta.get("path"))
    labels = np.asarray(labels)
    if labels.shape != source.shape:
        raise InvalidInputError(f"label map of shape {labels.shape} does not fit the series grid {source.shape}", path=where)
    files = [Path(f) for f in source.meta["files"]]
    image = source.to_source_array(source.array)
    label_stack = source.to_source_array(labels)
    if len(files) != image.shape[0]:
        raise InvalidInputError(
            f"overlays need one file per slice; the series has {len(files)} files for {image.shape[0]} slices "
            "(multi-frame images are not supported)",
            path=source.meta.get("path"),
        )
    return files, image, label_stack


def _read_dataset(path: Path) -> Any:
    import pydicom

    try:
        return pydicom.dcmread(str(path))
    except Exception as exc:  # noqa: BLE001 - pydicom raises many types for unreadable files
        raise InvalidInputError(f"cannot re-read the source slice ({type(exc).__name__}: {exc})", path=path) from exc


def write_overlay_series(
    source: Volume,
    labels: np.ndarray,
    out_dir: str | os.PathLike,
    *,
    label_names: Sequence[str] | None = None,
    colors: dict[int, tuple[int, int, int]] | None = None,
    opacity: float = DEFAULT_OPACITY,
    window: tuple[float, float] | None | str = "auto",
    series_number: int | None = None,
    series_description: str = "tfmedseg overlay",
    sop_class: str = "sc",
    uid_seed: str | None = None,
    overwrite: bool = False,
    filename: str = "IM{index:04d}.dcm",
) -> list[Path]:
    """Write the colour overlay of ``labels`` on ``source`` as a new DICOM series, atomically.

    Args:
        source: The series as read by :func:`tfmedseg.io.dicom.read_dicom_series` (one file per
            slice); its files are re-read and copied with all their metadata.
        labels: Integer label map ``[D, H, W]`` on ``source``'s canonical grid.
        out_dir: Directory to create; the files appear only when all are written.
        label_names: Class names by label value, for the colours (see :func:`label_colors`).
        colors: ``{label: (r, g, b)}`` overriding :func:`label_colors`.
        opacity: Colour weight, default 0.3.
        window: ``(level, width)`` for the grey values; ``"auto"``: :data:`DEFAULT_CT_WINDOW` for CT,
            percentiles otherwise; ``None``: percentiles.
        series_number: SeriesNumber; default: the source's + 1000.
        series_description: SeriesDescription (at most 64 characters are kept).
        sop_class: One of :data:`SOP_CLASSES`.
        uid_seed: Makes the new UIDs a deterministic function of this string (default: random).
        overwrite: Replace a non-empty ``out_dir``.
        filename: File name pattern with ``{index}`` (0-based slice index along the normal).

    Returns:
        The written paths in slice order (along the slice normal).

    Raises:
        InvalidInputError: ``source`` not read from single-frame DICOM files, a label map of another
            shape, a bad option, or a non-empty ``out_dir`` without ``overwrite``.
    """
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.sequence import Sequence as DicomSequence
    from pydicom.uid import ExplicitVRLittleEndian, PYDICOM_IMPLEMENTATION_UID

    out_dir = Path(out_dir)
    if sop_class not in SOP_CLASSES:
        raise InvalidInputError(f"sop_class must be one of {SOP_CLASSES}, got {sop_class!r}", path="sop_class")
    files, image, label_stack = _source_slices(source, labels, out_dir)
    if window == "auto":
        window = DEFAULT_CT_WINDOW if str(source.meta.get("modality", source.modality)).upper() == "CT" else None
    if colors is None:
        top = int(label_stack.max()) if label_stack.size else 0
        colors = label_colors(label_names, max(top + 1, len(label_names or ())))
    if window is None:  # one window for the whole series, so that slices stay comparable
        window = _percentile_window(image)
    if not 0.0 <= float(opacity) <= 1.0:
        raise InvalidInputError(f"opacity must lie in [0, 1], got {opacity}", path="opacity")
    if series_number is None:
        try:
            series_number = int(source.meta.get("series_number") or 0) + 1000
        except (TypeError, ValueError):
            series_number = 1000
        if series_number > 2**31 - 1:  # a source SeriesNumber near the top of the IS range
            series_number = 1000
    if not -(2**31) <= int(series_number) <= 2**31 - 1:
        raise InvalidInputError(f"SeriesNumber {series_number} is outside the DICOM IS range", path="series_number")
    series_uid = _make_uid(uid_seed, "overlay-series", source.meta.get("series_uid"))

    written = []
    with atomic_dir(out_dir, overwrite, marker=False, option="overwrite=True") as tmp:
        for k, path in enumerate(files):
            ds = _read_dataset(path)
            if (int(ds.Rows), int(ds.Columns)) != image.shape[1:3]:
                raise InvalidInputError(f"Rows/Columns {(ds.Rows, ds.Columns)} do not match the series grid {image.shape[1:3]}", path=path)
            rgb = blend_overlay(window_to_uint8(image[k], window), label_stack[k], colors, opacity)  # one slice at a time
            source_class, source_uid = str(ds.SOPClassUID), str(ds.SOPInstanceUID)
            for keyword in _DROP_TAGS:
                if keyword in ds:
                    delattr(ds, keyword)
            new_class = _SECONDARY_CAPTURE if sop_class == "sc" else source_class
            sop_uid = _make_uid(series_uid, "instance", k)
            ds.SOPClassUID = new_class
            ds.SOPInstanceUID = sop_uid
            ds.SeriesInstanceUID = series_uid
            ds.SeriesNumber = int(series_number)
            ds.SeriesDescription = series_description[:64]
            ds.ImageType = ["DERIVED", "SECONDARY"]
            ds.DerivationDescription = f"colour overlay of the segmentation at {round(100 * opacity)} % opacity"[:1024]
            if new_class == _SECONDARY_CAPTURE:
                ds.ConversionType = "WSD"
            reference = Dataset()
            reference.ReferencedSOPClassUID = source_class
            reference.ReferencedSOPInstanceUID = source_uid
            ds.SourceImageSequence = DicomSequence([reference])
            ds.SamplesPerPixel = 3
            ds.PhotometricInterpretation = "RGB"
            ds.PlanarConfiguration = 0
            ds.BitsAllocated = 8
            ds.BitsStored = 8
            ds.HighBit = 7
            ds.PixelRepresentation = 0
            ds.PixelData = np.ascontiguousarray(rgb).tobytes()
            if "NumberOfFrames" in ds:
                del ds.NumberOfFrames
            old_meta = getattr(ds, "file_meta", None)
            syntax = str(old_meta.get("TransferSyntaxUID", "")) if old_meta is not None else ""
            meta = FileMetaDataset()
            meta.MediaStorageSOPClassUID = new_class
            meta.MediaStorageSOPInstanceUID = sop_uid
            meta.TransferSyntaxUID = syntax if syntax in _UNCOMPRESSED else ExplicitVRLittleEndian
            meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
            ds.file_meta = meta
            name = filename.format(index=k)
            ds.save_as(tmp / name, enforce_file_format=True)
            written.append(name)
    return [out_dir / name for name in written]



def _segment_codes(name: str) -> tuple[Any, Any]:
    """(SegmentedPropertyCategory, SegmentedPropertyType) SNOMED CT codes for a class name."""
    from pydicom.sr.coding import Code

    lowered = name.lower()
    if lowered == "liver":
        return Code("91723000", "SCT", "Anatomical Structure"), Code("10200004", "SCT", "Liver")
    if lowered in ("tumour", "tumor", "lesion", "lesions", "metastasis"):
        return Code("49755003", "SCT", "Morphologically Altered Structure"), Code("108369006", "SCT", "Neoplasm")
    return Code("85756007", "SCT", "Tissue"), Code("85756007", "SCT", "Tissue")


def write_segmentation_dicom_seg(
    source: Volume,
    labels: np.ndarray,
    path: str | os.PathLike,
    *,
    label_names: Sequence[str] | None = None,
    algorithm_name: str = "tfmedseg",
    algorithm_version: str = "",
    series_number: int | None = None,
    series_description: str = "tfmedseg segmentation",
    uid_seed: str | None = None,
) -> Path | None:
    """Write ``labels`` as a binary DICOM-SEG object referencing ``source``'s slices (needs highdicom).

    Every label ``1 .. n - 1`` becomes one segment (``label_names[k]`` as its label, SNOMED CT codes
    for liver and tumour/lesion, "Tissue" otherwise), algorithm type AUTOMATIC; empty frames are
    omitted. The file is written atomically.

    Args:
        source: The series as read by :func:`tfmedseg.io.dicom.read_dicom_series`.
        labels: Integer label map ``[D, H, W]`` on ``source``'s canonical grid.
        path: Output ``.dcm`` file.
        label_names: Class names by label value.
        algorithm_name, algorithm_version: AlgorithmIdentificationSequence (the model).
        series_number: SeriesNumber; default: the source's + 2000.
        series_description: SeriesDescription.
        uid_seed: Deterministic UIDs from this string (default: random).

    Returns:
        The written path, or ``None`` (nothing written) when the label map is empty, since a
        DICOM-SEG must hold at least one segmented frame.

    Raises:
        InvalidInputError: As :func:`write_overlay_series`, or when highdicom rejects the source
            series (missing attributes it requires).
        ImportError: If highdicom is not installed (check :func:`highdicom_available` first).
    """
    import highdicom as hd

    import tfmedseg

    path = Path(path)
    files, _, label_stack = _source_slices(source, labels, path)
    top = int(label_stack.max()) if label_stack.size else 0
    if top == 0:
        return None
    names = list(label_names or ())
    algorithm = hd.AlgorithmIdentificationSequence(
        name=algorithm_name[:64], version=(algorithm_version or tfmedseg.__version__)[:64],
        family=hd.sr.CodedConcept("123110", "DCM", "Artificial Intelligence"),
    )
    descriptions = []
    for label in range(1, top + 1):
        name = names[label] if label < len(names) else f"label {label}"
        category, kind = _segment_codes(name)
        descriptions.append(hd.seg.SegmentDescription(
            segment_number=label, segment_label=name[:64], segmented_property_category=category,
            segmented_property_type=kind, algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algorithm,
        ))
    datasets = [_read_dataset(f) for f in files]
    if series_number is None:
        series_number = int(source.meta.get("series_number") or 0) + 2000
    series_uid = _make_uid(uid_seed, "seg-series", source.meta.get("series_uid"))
    try:
        with warnings.catch_warnings():  # highdicom warns about single-component names such as "ANON"
            warnings.filterwarnings("ignore", message=".*person name", category=UserWarning)
            seg = hd.seg.Segmentation(
                source_images=datasets,
                pixel_array=np.ascontiguousarray(label_stack.astype(np.uint8 if top < 256 else np.uint16)),
                segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
                segment_descriptions=descriptions,
                series_instance_uid=series_uid,
                series_number=int(series_number),
                sop_instance_uid=_make_uid(series_uid, "seg-instance"),
                instance_number=1,
                manufacturer="tfmedseg",
                manufacturer_model_name=algorithm_name[:64],
                software_versions=tfmedseg.__version__,
                device_serial_number="0",
                series_description=series_description[:64],
            )
    except (ValueError, TypeError, AttributeError, KeyError) as exc:  # highdicom's checks of the source images
        raise InvalidInputError(f"cannot build a DICOM-SEG from this series: {type(exc).__name__}: {str(exc)[:300]}",
                                path=source.meta.get("path")) from exc
    with atomic_file(path, ".dcm") as tmp:
        seg.save_as(tmp)
    return path
