"""NIfTI-1/2 reading and writing (``.nii``, ``.nii.gz``) with nibabel.

:func:`read_nifti` returns a :class:`~tfmedseg.io.volume.Volume` in the canonical orientation
(``[D, H, W]``, superior/posterior/left; see :mod:`tfmedseg.io.volume`) and keeps the source
affine, header and orientation in ``meta``. :func:`write_nifti` writes an array on that canonical
grid back in the source voxel order with the source affine and header (only the data type and
scaling are changed), so a label map overlays its image exactly in ITK-SNAP or 3D Slicer.
"""

from __future__ import annotations

import os
import zlib
from pathlib import Path

import numpy as np

from tfmedseg.command import one_line
from tfmedseg.errors import InvalidInputError
from tfmedseg.io._atomic import atomic_file
from tfmedseg.io.volume import Volume, spacing_from_affine, to_canonical

__all__ = ["read_nifti", "write_nifti", "is_nifti_path", "written_by_tfmedseg", "nifti_job", "DESCRIP_MARKER", "MAX_VOXELS", "check_header",
           "open_nifti_header", "checked_affine"]

#: ``descrip`` of every NIfTI file tfmedseg writes (how ``--overwrite`` recognises its own outputs).
DESCRIP_MARKER = b"written by tfmedseg"

_SUFFIXES = (".nii", ".nii.gz")
_GEOMETRY_FIELDS = (
    "qform_code", "sform_code", "quatern_b", "quatern_c", "quatern_d",
    "qoffset_x", "qoffset_y", "qoffset_z", "srow_x", "srow_y", "srow_z", "pixdim", "xyzt_units",
)


def is_nifti_path(path: str | os.PathLike) -> bool:
    """True when ``path`` ends in ``.nii`` or ``.nii.gz``."""
    return str(path).lower().endswith(_SUFFIXES)


def nifti_job(path: str | os.PathLike) -> str | None:
    """The job digest (32 hex digits) a label map of ours records in ``descrip``, else None."""
    import nibabel as nib

    try:
        descrip = bytes(np.asarray(nib.load(str(path)).header["descrip"]).tobytes()).rstrip(b"\0")
    except Exception:  # noqa: BLE001 - anything unreadable records no job
        return None
    prefix = DESCRIP_MARKER + b" job "
    return descrip[len(prefix):].decode("ascii", "replace") if descrip.startswith(prefix) else None


def written_by_tfmedseg(path: str | os.PathLike) -> bool:
    """True when ``path`` is a NIfTI file whose header ``descrip`` says tfmedseg wrote it."""
    import nibabel as nib

    try:
        header = nib.load(str(path)).header
        return bytes(np.asarray(header["descrip"]).tobytes()).rstrip(b"\0").startswith(DESCRIP_MARKER)
    except Exception:  # noqa: BLE001 - anything unreadable is not ours
        return False


#: Most voxels :func:`read_nifti` allocates (2**29, a 2 GiB float32 array; 1024 x 1024 x 512);
#: raise it with the environment variable ``TFMEDSEG_MAX_VOXELS``.
MAX_VOXELS = 2**29
#: gzip cannot compress better than about 1032:1, so a .nii.gz declaring more data is corrupt.
_GZIP_MAX_RATIO = 1100


def max_voxels() -> int:
    """The voxel limit in force (:data:`MAX_VOXELS` or ``$TFMEDSEG_MAX_VOXELS``)."""
    try:
        return int(os.environ.get("TFMEDSEG_MAX_VOXELS", MAX_VOXELS))
    except ValueError:
        return MAX_VOXELS


def _stored_pixdim(path: Path) -> np.ndarray | None:
    """``pixdim[1:4]`` as stored in the file (NIfTI-1 or -2, either byte order), or None."""
    import gzip
    import struct

    try:
        opener = gzip.open if str(path).lower().endswith(".gz") else open
        with opener(path, "rb") as handle:
            head = handle.read(540)
    except (OSError, EOFError, zlib.error):
        return None
    for order in "<>":
        if len(head) >= 348 and struct.unpack(f"{order}i", head[:4])[0] == 348:
            return np.asarray(struct.unpack(f"{order}8f", head[76:108])[1:4], dtype=np.float64)
        if len(head) >= 540 and struct.unpack(f"{order}i", head[:4])[0] == 540:
            return np.asarray(struct.unpack(f"{order}8d", head[104:168])[1:4], dtype=np.float64)
    return None


def check_header(image, path: Path) -> None:
    """Header sanity before any voxel is read: declared size vs file size and the voxel limit,
    voxel type, pixdim.

    Raises:
        InvalidInputError: Naming the file and the field.
    """
    header = image.header
    shape = tuple(int(n) for n in image.shape)
    dtype = header.get_data_dtype()
    if dtype.fields is not None or dtype.kind not in "biuf":
        raise InvalidInputError(f"voxel type {dtype} (RGB or complex) is not supported; expected a scalar image", path=path)
    voxels = int(np.prod(shape, dtype=np.int64)) if shape else 0
    if voxels <= 0:
        raise InvalidInputError(f"header declares an empty image of shape {shape}", path=path)
    if voxels > max_voxels():
        raise InvalidInputError(f"header declares {voxels} voxels {shape}, more than the limit of {max_voxels()} "
                                "(set TFMEDSEG_MAX_VOXELS to raise it)", path=path)
    nbytes = voxels * dtype.itemsize
    size = path.stat().st_size
    offset = int(header.get("vox_offset", 0) or 0) if "vox_offset" in header else 0
    offset = max(offset, int(getattr(getattr(image, "dataobj", None), "offset", 0) or 0))  # 0 means "after the header"
    if str(path).lower().endswith(".gz"):
        if nbytes > size * _GZIP_MAX_RATIO:
            raise InvalidInputError(f"header declares {nbytes} bytes of voxels {shape} but the compressed file has only "
                                    f"{size} bytes; the header or the file is corrupt", path=path)
    elif offset + nbytes > size:
        raise InvalidInputError(f"file is truncated: header declares {nbytes} bytes of voxels {shape} after offset {offset}, "
                                f"the file has {size} bytes", path=path)
    pixdim = _stored_pixdim(path)  # nibabel silently "fixes" zero / negative pixdim on load
    if pixdim is None:
        pixdim = np.asarray(header["pixdim"], dtype=np.float64)[1:4]
    if not np.all(np.isfinite(pixdim)) or np.any(pixdim[: min(3, len(shape))] <= 0):
        raise InvalidInputError(f"pixdim {pixdim.tolist()} must be finite and > 0 (voxel size in mm)", path=path)


def open_nifti_header(path: Path):
    """Open a NIfTI file and check its header, reading no voxel (shared by :func:`read_nifti` and
    :func:`tfmedseg.io.lazy.read_nifti_lazy`).

    Checks: the file exists and has a NIfTI name, nibabel reads it as NIfTI-1/2, the shape is 3-D
    (trailing axes of 1 allowed) and :func:`check_header` passes.

    Returns:
        The nibabel image (voxels not yet read).

    Raises:
        InvalidInputError: Naming ``path`` and what is wrong. Errors of nibabel itself propagate to
            the caller, which words them for its own step.
    """
    import nibabel as nib

    if not path.is_file():
        raise InvalidInputError("file does not exist", path=path)
    if not is_nifti_path(path):
        raise InvalidInputError("not a NIfTI file name (expected .nii or .nii.gz)", path=path)
    image = nib.load(str(path))
    if not isinstance(image, (nib.Nifti1Image, nib.Nifti2Image)):
        raise InvalidInputError(f"not a NIfTI image (nibabel read {type(image).__name__})", path=path)
    shape = tuple(int(n) for n in image.shape)
    if len(shape) < 3 or any(n != 1 for n in shape[3:]):  # reject before decompressing the data
        raise InvalidInputError(f"expected a 3-D volume, got shape {shape}", path=path)
    check_header(image, path)
    return image


def checked_affine(image, path: Path) -> np.ndarray:
    """The image's 4x4 affine as float64, refused (naming ``path``) when singular or not finite."""
    affine = np.asarray(image.affine, dtype=np.float64)
    if not np.isfinite(affine).all() or abs(np.linalg.det(affine[:3, :3])) < 1e-12:
        raise InvalidInputError(f"affine is singular or not finite: {np.array2string(affine, separator=',').replace(chr(10), '')}", path=path)
    return affine


def read_nifti(path: str | os.PathLike, modality: str = "OT", *, allow_nan: bool = False) -> Volume:
    """Read a 3D NIfTI file into a canonical :class:`Volume`.

    A 4D file whose trailing axes are all 1 (``[X, Y, Z, 1]``) is squeezed to 3D.

    Args:
        path: ``.nii`` or ``.nii.gz`` file.
        modality: Modality recorded on the volume (``"CT"``, ``"PT"``, ``"SEG"``, ...).
        allow_nan: Keep NaN/inf voxels instead of raising.

    Returns:
        Volume with ``array`` float32 for images (scaled by the header's slope/intercept), or the
        stored integer dtype for ``modality="SEG"``; ``meta`` holds ``path``, ``header``,
        ``source_affine``, ``source_shape``, ``source_ornt``.

    Raises:
        InvalidInputError: If the file is missing, truncated, not NIfTI, not 3D, has a singular
            affine or non-finite voxels.
    """
    import nibabel as nib

    path = Path(path)
    try:
        image = open_nifti_header(path)
        if modality == "SEG":
            data = np.asanyarray(image.dataobj)
        else:
            data = image.get_fdata(dtype=np.float32)
    except InvalidInputError:
        raise
    except MemoryError as exc:
        raise InvalidInputError(f"not enough memory for the declared image {image.shape}", path=path) from exc
    except (EOFError, OSError, ValueError, TypeError, zlib.error, nib.filebasedimages.ImageFileError) as exc:
        # nibabel's "Expected N bytes, got M bytes from \n - could the file be damaged?": one line for every caller
        raise InvalidInputError(f"cannot read NIfTI data ({type(exc).__name__}: {one_line(str(exc))}); the file is "
                                "truncated or corrupt", path=path) from exc
    if data.ndim == 4 and all(n == 1 for n in data.shape[3:]):
        data = data[..., 0]
    if data.ndim != 3:
        raise InvalidInputError(f"expected a 3-D volume, got shape {tuple(data.shape)}", path=path)
    if np.issubdtype(data.dtype, np.floating) and not allow_nan and not np.isfinite(data).all():
        bad = int(np.size(data) - np.isfinite(data).sum())
        raise InvalidInputError(f"contains {bad} NaN or infinite voxels", path=path)
    affine = checked_affine(image, path)
    canonical, canonical_aff, source_ornt = to_canonical(np.asarray(data), affine)
    meta = {
        "path": str(path),
        "header": image.header.copy(),
        "source_affine": affine,
        "source_shape": tuple(data.shape),
        "source_ornt": source_ornt,
        "format": "nifti",
    }
    return Volume(canonical, spacing_from_affine(canonical_aff), canonical_aff, modality, meta)


def write_nifti(
    volume_or_array: Volume | np.ndarray,
    path: str | os.PathLike,
    *,
    reference: Volume | None = None,
    dtype: np.dtype | str | None = None,
    job: str | None = None,
) -> Path:
    """Write a canonical array to NIfTI in the source geometry of ``reference``.

    The file is written to a temporary name in the target directory and renamed at the end, so an
    interrupted write never leaves a partial file.

    Args:
        volume_or_array: A :class:`Volume`, or an ``[D, H, W]`` array on ``reference``'s grid.
        path: Output ``.nii`` or ``.nii.gz`` path; parent directories are created.
        reference: The volume whose geometry (source affine, header, orientation) to use.
            Defaults to ``volume_or_array`` itself when it is a Volume.
        dtype: Stored data type; default: the array's (``uint8`` for label maps is typical).
        job: A hex digest of what made the file (:func:`tfmedseg.io.provenance.job_digest`),
            recorded after :data:`DESCRIP_MARKER` in ``descrip`` (first 32 digits; :func:`nifti_job`).

    Returns:
        The written path.

    Raises:
        InvalidInputError: If the array does not fit the reference grid or the name is not NIfTI.
    """
    import nibabel as nib

    path = Path(path)
    if not is_nifti_path(path):
        raise InvalidInputError("output name must end in .nii or .nii.gz", path=path)
    if isinstance(volume_or_array, Volume):
        reference = reference or volume_or_array
        array = volume_or_array.array
    else:
        array = np.asarray(volume_or_array)
        if reference is None:
            raise InvalidInputError("writing a bare array needs a reference Volume for its geometry", path=path)
    if array.shape != reference.array.shape:
        raise InvalidInputError(
            f"array shape {array.shape} does not match the reference grid {reference.array.shape}", path=path
        )
    if dtype is not None:
        array = array.astype(dtype)
    if array.dtype == bool:
        array = array.astype(np.uint8)
    source = reference.to_source_array(array)
    if "source_affine" in reference.meta:
        affine = reference.meta["source_affine"]
    else:
        affine = reference.affine
    header = reference.meta.get("header")
    header = header.copy() if isinstance(header, nib.Nifti1Header) else None
    image = nib.Nifti1Image(source, affine, header=header)
    image.set_data_dtype(source.dtype)
    if np.issubdtype(source.dtype, np.integer):
        image.header.set_slope_inter(1.0, 0.0)
    else:
        image.header.set_slope_inter(np.nan, np.nan)
    if header is None:
        image.set_sform(affine, code=1)
        image.set_qform(affine, code=1)
    else:
        # Keep the source's spatial header fields bit for bit (codes included, even 0), so every
        # viewer resolves the label map's geometry exactly as it resolves the image's.
        for field in _GEOMETRY_FIELDS:
            image.header[field] = header[field]
        image.header["cal_min"], image.header["cal_max"] = 0.0, 0.0  # the image's display window does not apply
    image.header["descrip"] = DESCRIP_MARKER + (b" job " + job[:32].encode("ascii") if job else b"")
    suffix = ".nii.gz" if str(path).lower().endswith(".gz") else ".nii"
    with atomic_file(path, suffix) as tmp:
        nib.save(image, tmp)
    return path
