"""Volumes whose voxels are read on demand: :class:`LazyVolume`, :func:`read_nifti_lazy` and
:func:`read_dicom_series_lazy`; :class:`LazyMapping` for other per-case arrays read on demand.

A dataset of 131 LiTS CTs is tens of GB; a loader that reads every voxel up front cannot hold it.
A :class:`LazyVolume` knows its geometry (shape, spacing, affine, header metadata) from the file
header alone and reads the voxels the first time ``array`` is asked for; :meth:`LazyVolume.release`
drops them again, so a loop over cases holds one case's voxels at a time.

A :class:`LazyVolume` *is* a :class:`~tfmedseg.io.volume.Volume` (every method works; the ones that
need voxels read them), so code written for eager volumes runs unchanged.

Example:
    >>> ct = read_nifti_lazy("volume-0.nii", "CT")  # doctest: +SKIP
    >>> ct.shape, ct.loaded                           # header only  # doctest: +SKIP
    ((75, 512, 512), False)
    >>> hu = ct.array; ct.release()                   # read, then drop  # doctest: +SKIP
"""

from __future__ import annotations

import abc
import os
import zlib
from pathlib import Path
from collections.abc import Mapping
from typing import Any, Callable

import numpy as np

from tfmedseg.errors import InvalidInputError
from tfmedseg.io.volume import Volume, canonical_geometry, spacing_from_affine

__all__ = ["LazyVolume", "LazyMapping", "read_nifti_lazy", "read_dicom_series_lazy", "release_volumes"]


class _ReadOnDemand(abc.ABC):
    """What :class:`LazyVolume` and :class:`LazyMapping` share: a value produced by ``self._load()``
    on first use and held (``loaded``) until :meth:`release`."""

    _held: Any = None

    @abc.abstractmethod
    def _load(self) -> Any:
        """Read the value (the subclass's I/O)."""

    def _value(self) -> Any:
        if self._held is None:
            self._held = self._load()
        return self._held

    @property
    def loaded(self) -> bool:
        """True while the value is held in memory."""
        return self._held is not None

    def release(self) -> None:
        """Drop the value (the next access reads it again)."""
        self._held = None


class LazyVolume(_ReadOnDemand, Volume):
    """A :class:`Volume` whose ``array`` is produced by ``read()`` on first access.

    Args:
        shape: The array shape ``read()`` returns (from the header; checked on read).
        spacing, affine, modality, meta: As :class:`Volume`.
        read: Zero-argument function returning the voxel array.

    Attributes:
        loaded: True while the voxels are held in memory.
    """

    def __init__(self, shape: tuple[int, ...], spacing, affine, modality: str, meta: dict[str, Any],
                 read: Callable[[], np.ndarray]):
        self._shape = tuple(int(n) for n in shape)
        self._read = read
        self.spacing = tuple(float(s) for s in spacing)
        self.affine = np.asarray(affine, dtype=np.float64)
        self.modality = modality
        self.meta = dict(meta)
        path = self.meta.get("path")
        if len(self._shape) not in (2, 3) or len(self.spacing) != len(self._shape):
            raise InvalidInputError(f"shape {self._shape} and spacing {self.spacing} do not describe a 2-D/3-D image", path=path)
        if not all(np.isfinite(s) and s > 0 for s in self.spacing):
            raise InvalidInputError(f"spacing must be positive and finite, got {self.spacing}", path=path)

    def _load(self) -> np.ndarray:
        array = np.asarray(self._read())
        if tuple(array.shape) != self._shape:
            raise InvalidInputError(f"voxel array {tuple(array.shape)} differs from the header's shape {self._shape}",
                                    path=self.meta.get("path"))
        return array

    @property
    def array(self) -> np.ndarray:  # type: ignore[override]
        """The voxels (read now if not held); the shape is checked against the header's."""
        return self._value()

    @array.setter
    def array(self, value: np.ndarray) -> None:
        value = np.asarray(value)
        if tuple(value.shape) != self._shape:
            raise InvalidInputError(f"array {value.shape} does not fit the grid {self._shape}", path=self.meta.get("path"))
        self._held = value

    @property
    def shape(self) -> tuple[int, ...]:
        return self._shape

    @property
    def ndim(self) -> int:
        return len(self._shape)

    def __repr__(self) -> str:
        return (f"LazyVolume(shape={self._shape}, spacing={self.spacing}, modality={self.modality!r}, "
                f"path={self.meta.get('path')!r}, loaded={self.loaded})")


class LazyMapping(_ReadOnDemand, Mapping):
    """A read-only mapping of fixed ``keys`` whose values come from ``read()`` on first access.

    For what a loader attaches to a case besides its volumes (the seed-000 display images in
    ``meta["display"]``): listing and naming checks happen at load time, the (large) arrays are read
    when a value is first asked for and dropped again by :meth:`release`.

    Args:
        keys: The keys ``read()`` returns (known before reading).
        read: Zero-argument function returning a dict with exactly ``keys``.
        path: What is read, for ``repr``.
    """

    def __init__(self, keys, read: Callable[[], dict], path: str | os.PathLike | None = None):
        self._keys = tuple(keys)
        self._read = read
        self.path = path

    def _load(self) -> dict:
        data = dict(self._read())
        if set(data) != set(self._keys):
            raise ValueError(f"read() returned keys {sorted(data)}, expected {sorted(self._keys)}")
        return data

    def __getitem__(self, key):
        if key not in self._keys:
            raise KeyError(key)
        return self._value()[key]

    def __contains__(self, key) -> bool:  # Mapping's would read the values
        return key in self._keys

    def __iter__(self):
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)

    def __repr__(self) -> str:
        return f"LazyMapping(keys={self._keys}, path={str(self.path) if self.path else None!r}, loaded={self.loaded})"


def release_volumes(*objects) -> None:
    """Release every :class:`LazyVolume` and :class:`LazyMapping` among ``objects`` (anything else,
    eager volumes and None included, is skipped)."""
    for obj in objects:
        if isinstance(obj, (LazyVolume, LazyMapping)):
            obj.release()


def read_nifti_lazy(path: str | os.PathLike, modality: str = "OT", *,
                    transform: Callable[[Volume], np.ndarray] | None = None) -> LazyVolume:
    """Read a 3D NIfTI file's header now and its voxels on demand.

    Header checks happen here, before any voxel is read (:func:`tfmedseg.io.nifti.check_header`:
    declared size against the file size and the voxel limit, voxel type, pixdim; a 3-D shape; a
    finite, non-singular affine). The canonical shape, spacing and affine are those
    :func:`tfmedseg.io.nifti.read_nifti` gives; the voxels come from ``read_nifti`` on first use.

    Args:
        path: ``.nii`` / ``.nii.gz`` file.
        modality: As :func:`~tfmedseg.io.nifti.read_nifti`.
        transform: Optional ``Volume -> array`` applied to the freshly read volume (e.g. label-value
            checks and a cast to uint8); must keep the shape.

    Raises:
        InvalidInputError: Missing, not NIfTI, not 3-D, a bad header or affine (naming the file).
    """
    import nibabel as nib

    from tfmedseg.io import nifti

    path = Path(path)
    try:
        image = nifti.open_nifti_header(path)
    except InvalidInputError:  # the header checks' own message (file named, cause said) as it is
        raise
    except (EOFError, OSError, ValueError, TypeError, zlib.error, nib.filebasedimages.ImageFileError) as exc:
        raise InvalidInputError(f"cannot read the NIfTI header ({type(exc).__name__}: {exc})", path=path) from exc
    source_shape = tuple(int(n) for n in image.shape)[:3]
    affine = nifti.checked_affine(image, path)
    shape, canonical_aff, source_ornt = canonical_geometry(affine, source_shape)
    meta = {"path": str(path), "header": image.header.copy(), "source_affine": affine, "source_shape": source_shape,
            "source_ornt": source_ornt, "format": "nifti", "lazy": True}

    def read() -> np.ndarray:
        volume = nifti.read_nifti(path, modality)
        return volume.array if transform is None else transform(volume)

    return LazyVolume(shape, spacing_from_affine(canonical_aff), canonical_aff, modality, meta, read)


def read_dicom_series_lazy(directory: str | os.PathLike, *, series_uid: str | None = None, modality: str | None = None,
                           recursive: bool = False, labels: bool = False,
                           transform: Callable[[Volume], np.ndarray] | None = None) -> LazyVolume:
    """Read a DICOM series' headers now and its pixel data on demand.

    The headers are parsed and checked here (:func:`tfmedseg.io.dicom.read_series_header`: one
    series, consistent orientation / size / spacing, no duplicate slices or gaps, pixel data of the
    declared size); shape, spacing, affine and ``meta`` are those :func:`~tfmedseg.io.dicom.read_dicom_series`
    gives (``meta["lazy"]`` added). On first use the series is read with ``read_dicom_series`` (the
    same series UID); its geometry must still be the one found here (the files did not change).

    Args:
        directory, series_uid, modality, recursive, labels: As :func:`~tfmedseg.io.dicom.read_dicom_series`.
        transform: Optional ``Volume -> array`` applied to the freshly read volume (must keep the shape).

    Raises:
        InvalidInputError: Header problems now; pixel-data problems (undecodable, non-finite values,
            non-integer labels) when the voxels are read. Each names the directory or file.
    """
    from tfmedseg.io.dicom import read_dicom_series, read_series_header

    directory = Path(directory)
    header = read_series_header(directory, series_uid=series_uid, modality=modality, recursive=recursive)
    shape, affine, source_ornt = canonical_geometry(header.source_affine, header.source_shape)
    meta = {**header.meta, "source_ornt": source_ornt, "lazy": True}
    uid = meta["series_uid"]
    del header  # the parsed datasets are not kept: the read parses the headers again

    def read() -> np.ndarray:
        volume = read_dicom_series(directory, series_uid=uid, recursive=recursive, labels=labels)
        if volume.shape != shape or not np.allclose(volume.affine, affine, atol=1e-6):
            raise InvalidInputError(f"the series changed since it was listed: shape {volume.shape} / affine differ from "
                                    f"{shape}", path=directory)
        return volume.array if transform is None else transform(volume)

    return LazyVolume(shape, spacing_from_affine(affine), affine, "SEG" if labels else meta["modality"], meta, read)
