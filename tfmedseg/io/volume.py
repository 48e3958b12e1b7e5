"""The in-memory image record every reader returns: :class:`Volume`.

Canonical orientation and axis order (3D)
-----------------------------------------
Every 3D reader reorients its voxels to one layout, so that everything after ``tfmedseg.io`` can
ignore where the data came from:

* ``array`` axes are ``[D, H, W]`` = ``[z, y, x]`` (slices first, so a model tensor is
  ``[B, D, H, W, C]`` without transposes);
* along ``D`` the patient coordinate goes towards **superior**, along ``H`` towards **posterior**,
  along ``W`` towards the patient's **left** (DICOM LPS, axes reversed). ``array[k]`` is an axial
  slice in radiological display convention: anterior at the top, the patient's right on the left
  of the image, exactly as a DICOM viewer shows it.
* ``spacing`` is the voxel size in mm along ``(D, H, W)``.
* ``affine`` maps the index ``(d, h, w, 1)`` of ``array`` to RAS+ world coordinates in mm (the
  NIfTI / nibabel world convention). For axis-aligned scans its rotation part is
  ``[[0, 0, -sx], [0, -sy, 0], [sz, 0, 0]]``; oblique scans keep their obliquity in ``affine``
  and are reoriented to the closest canonical axes.

The reorientation is a pure permutation/flip of the voxel grid (no interpolation), so it is
lossless: :meth:`Volume.to_source_array` returns an array in the exact voxel order of the source
file, and the NIfTI writer uses it with the source affine and header so that a written label map
overlays its image in ITK-SNAP or 3D Slicer.

2D planar images (NM whole-body views) are ``Volume`` objects with a 2D ``array`` ``[H, W]``, a
two-element ``spacing`` (row, column) in mm, and an identity-based affine.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from tfmedseg.errors import InvalidInputError

__all__ = [
    "Volume",
    "CANONICAL_AXCODES",
    "canonical_affine",
    "to_canonical",
    "canonical_geometry",
    "from_canonical",
    "spacing_from_affine",
]

#: nibabel axis codes of the canonical array axes (D, H, W): superior, posterior, left.
CANONICAL_AXCODES = ("S", "P", "L")


@dataclasses.dataclass
class Volume:
    """A voxel array with its geometry and provenance.

    Attributes:
        array: ``[D, H, W]`` (3D, canonical orientation, see the module docstring) or ``[H, W]``
            (2D planar). Units depend on ``modality``: HU for CT, Bq/ml for PET (``meta["suv_factor"]``
            converts to SUVbw when known), counts for NM/SPECT, integer labels for label maps.
        spacing: Voxel size in mm per array axis, same length as ``array.ndim``.
        affine: 4x4 float matrix mapping array indices ``(d, h, w, 1)`` to RAS+ world mm.
        modality: ``"CT"``, ``"PT"``, ``"NM"``, ``"MR"``, ``"SEG"`` (label map) or ``"OT"``.
        meta: Source metadata: ``path``, ``source_affine``, ``source_shape``,
            ``source_ornt`` (nibabel orientation of the canonical array relative to the source
            array), NIfTI ``header`` or DICOM UIDs, ``series_uid``, ``frame_of_reference_uid``, ...
    """

    array: np.ndarray
    spacing: tuple[float, ...]
    affine: np.ndarray = dataclasses.field(default_factory=lambda: np.eye(4))
    modality: str = "OT"
    meta: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        self.array = np.asarray(self.array)
        self.spacing = tuple(float(s) for s in self.spacing)
        self.affine = np.asarray(self.affine, dtype=np.float64)
        path = self.meta.get("path")
        if self.array.ndim not in (2, 3):
            raise InvalidInputError(
                f"expected a 2-D or 3-D image, got an array of shape {self.array.shape}", path=path
            )
        if len(self.spacing) != self.array.ndim:
            raise InvalidInputError(
                f"spacing {self.spacing} has {len(self.spacing)} values for a {self.array.ndim}-D array",
                path=path,
            )
        if not all(np.isfinite(s) and s > 0 for s in self.spacing):
            raise InvalidInputError(f"spacing must be positive and finite, got {self.spacing}", path=path)
        if self.affine.shape != (4, 4):
            raise InvalidInputError(f"affine must be 4x4, got {self.affine.shape}", path=path)

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape of ``array``."""
        return tuple(self.array.shape)

    @property
    def ndim(self) -> int:
        """2 for planar images, 3 for volumes."""
        return self.array.ndim

    def with_array(self, array: np.ndarray, modality: str | None = None, **meta: Any) -> "Volume":
        """A copy on the same voxel grid with another array (a prediction, a mask).

        Args:
            array: Same shape as ``self.array``.
            modality: Modality of the new array; defaults to this volume's.
            **meta: Extra metadata merged into a copy of ``self.meta``.

        Raises:
            InvalidInputError: If the shape differs.
        """
        array = np.asarray(array)
        if array.shape != self.array.shape:
            raise InvalidInputError(
                f"array of shape {array.shape} does not fit the grid {self.array.shape}",
                path=self.meta.get("path"),
            )
        return Volume(array, self.spacing, self.affine.copy(), modality or self.modality, {**self.meta, **meta})

    def to_source_array(self, array: np.ndarray | None = None) -> np.ndarray:
        """Undo the canonical reorientation: ``array`` (default: ``self.array``) in source voxel order.

        Args:
            array: ``[D, H, W]`` array on this volume's canonical grid.

        Returns:
            The array with the axis order and flips of the source file, shape
            ``meta["source_shape"]``; unchanged for volumes without ``meta["source_ornt"]``.
        """
        array = self.array if array is None else np.asarray(array)
        ornt = self.meta.get("source_ornt")
        if ornt is None or array.ndim != 3:
            return array
        return from_canonical(array, np.asarray(ornt))


def to_canonical(array: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Reorient a 3D source array to the canonical ``[D, H, W]`` (S, P, L) layout without interpolation.

    Args:
        array: Source voxel array, 3D, in the file's own axis order.
        affine: 4x4 source affine (voxel index -> RAS+ mm).

    Returns:
        ``(canonical_array, canonical_affine, source_ornt)``; ``source_ornt`` is the nibabel
        orientation of the source axes, which :func:`from_canonical` needs to go back.
    """
    import nibabel as nib

    _, canonical_aff, source_ornt = canonical_geometry(affine, array.shape)
    transform = nib.orientations.ornt_transform(source_ornt, nib.orientations.axcodes2ornt(CANONICAL_AXCODES))
    canonical = nib.orientations.apply_orientation(array, transform)
    return np.ascontiguousarray(canonical), canonical_aff, source_ornt


def canonical_geometry(affine: np.ndarray, source_shape: tuple[int, ...]) -> tuple[tuple[int, ...], np.ndarray, np.ndarray]:
    """What :func:`to_canonical` gives for the geometry, without the voxels (e.g. from a file header alone).

    Returns:
        ``(canonical_shape, canonical_affine, source_ornt)`` for a 3D source of ``source_shape``.
    """
    import nibabel as nib

    source_ornt = nib.orientations.io_orientation(affine)
    transform = nib.orientations.ornt_transform(source_ornt, nib.orientations.axcodes2ornt(CANONICAL_AXCODES))
    canonical_aff = affine @ nib.orientations.inv_ornt_aff(transform, tuple(source_shape))
    canonical_shape = tuple(int(source_shape[int(axis)]) for axis in np.argsort(transform[:, 0]))
    return canonical_shape, canonical_aff, source_ornt


def from_canonical(array: np.ndarray, source_ornt: np.ndarray) -> np.ndarray:
    """Inverse of :func:`to_canonical` for the voxel array (exact, a permutation and flips)."""
    import nibabel as nib

    transform = nib.orientations.ornt_transform(nib.orientations.axcodes2ornt(CANONICAL_AXCODES), source_ornt)
    return np.ascontiguousarray(nib.orientations.apply_orientation(array, transform))


def spacing_from_affine(affine: np.ndarray) -> tuple[float, ...]:
    """Voxel size in mm along each array axis: the column norms of the affine's 3x3 part."""
    return tuple(float(v) for v in np.linalg.norm(np.asarray(affine)[:3, :3], axis=0))


def canonical_affine(spacing: tuple[float, float, float], origin_lps: tuple[float, float, float] = (0.0, 0.0, 0.0)) -> np.ndarray:
    """The RAS+ affine of an axis-aligned canonical ``[D, H, W]`` grid.

    Args:
        spacing: ``(sz, sy, sx)`` voxel size in mm along ``(D, H, W)``.
        origin_lps: DICOM patient coordinate (LPS, mm) of voxel ``(0, 0, 0)``.

    Returns:
        4x4 float64 matrix: index ``(d, h, w, 1)`` -> RAS+ mm.
    """
    sz, sy, sx = (float(s) for s in spacing)
    affine = np.zeros((4, 4))
    affine[0, 2] = -sx  # w -> +L  = -R
    affine[1, 1] = -sy  # h -> +P  = -A
    affine[2, 0] = sz  # d -> +S
    affine[:3, 3] = [-origin_lps[0], -origin_lps[1], origin_lps[2]]
    affine[3, 3] = 1.0
    return affine
