"""Validation helpers shared by the dataset loaders (private).

Every check raises a :mod:`tfmedseg.errors` exception whose message names the offending file, so a
loader never skips a broken case silently.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

import numpy as np

from tfmedseg.errors import DatasetLayoutError, InvalidInputError
from tfmedseg.io.volume import Volume

__all__: list[str] = []

#: Largest allowed distance (mm) between the world positions of matching voxels of two grids
#: that must coincide (image and label map).
AFFINE_TOLERANCE_MM = 1e-2


def require_dir(path: str | os.PathLike, what: str) -> Path:
    """Return ``path`` as a Path; raise if it is not an existing directory."""
    path = Path(path)
    if not path.is_dir():
        raise DatasetLayoutError(f"{what} is not a directory (missing or a file)", path=path)
    return path


def require_file(path: Path, what: str) -> Path:
    """Return ``path``; raise DatasetLayoutError when it does not exist."""
    if not path.is_file():
        raise DatasetLayoutError(f"missing {what}", path=path)
    return path


def require_nonempty(paths: list, root: Path, what: str) -> list:
    """Raise DatasetLayoutError naming ``root`` when ``paths`` is empty."""
    if not paths:
        raise DatasetLayoutError(f"no {what} found (empty or wrong directory)", path=root)
    return paths


def check_same_grid(image: Volume, other: Volume, other_path: str | os.PathLike, what: str = "label map") -> None:
    """Raise InvalidInputError unless ``other`` lies on exactly the voxel grid of ``image``.

    Args:
        image: Reference image volume.
        other: Label map / mask volume to compare.
        other_path: File named in the error.
        what: Description of ``other`` for the message.
    """
    if other.shape != image.shape:
        raise InvalidInputError(
            f"{what} shape {other.shape} does not match the image shape {image.shape} "
            f"({image.meta.get('path', 'image')})",
            path=other_path,
        )
    corners = np.array([[0, 0, 0, 1], [n - 1 for n in image.shape] + [1]], dtype=np.float64).T
    diff = np.abs((image.affine @ corners) - (other.affine @ corners))[:3].max()
    if diff > AFFINE_TOLERANCE_MM:
        raise InvalidInputError(
            f"{what} affine does not match the image affine ({image.meta.get('path', 'image')}): "
            f"voxel positions differ by up to {diff:.3g} mm",
            path=other_path,
        )


def check_label_values(volume: Volume, allowed: Iterable[int], path: str | os.PathLike) -> np.ndarray:
    """Return the label array as uint8; raise if it holds values outside ``allowed``.

    Floating-point label files are accepted when every value is an integer.
    """
    allowed = tuple(int(a) for a in allowed)
    array = np.asarray(volume.array)
    if np.issubdtype(array.dtype, np.floating):
        if not np.isfinite(array).all():
            raise InvalidInputError("label map contains NaN or infinite values", path=path)
        rounded = np.rint(array)
        if not np.array_equal(rounded, array):
            raise InvalidInputError("label map contains non-integer values", path=path)
        array = rounded
    values = np.unique(array)
    bad = [v for v in values.tolist() if int(v) not in allowed]
    if bad:
        raise InvalidInputError(
            f"label values {sorted(bad)[:10]} are outside the allowed set {list(allowed)}", path=path
        )
    return array.astype(np.uint8)


def binary_mask(volume: Volume, path: str | os.PathLike) -> np.ndarray:
    """A 0/1 or 0/255 mask volume -> bool array; other values raise InvalidInputError."""
    array = np.asarray(volume.array)
    values = set(np.unique(array).tolist())
    if not values <= {0, 1} and not values <= {0, 255}:
        shown = sorted(values)[:10]
        raise InvalidInputError(f"binary mask must hold only 0/1 or 0/255, found values {shown}", path=path)
    return array > 0


def lazy_label_volume(image: Volume, label_path: str | os.PathLike, allowed: Iterable[int]) -> Volume:
    """The label map file ``label_path`` as a lazily read ``SEG`` volume on the grid of ``image``.

    The header is read now: its grid must be ``image``'s (:func:`check_same_grid`, no voxel read).
    The voxels are read on first use of ``array``, checked against ``allowed``
    (:func:`check_label_values`, the error names the file) and held as uint8.
    """
    from tfmedseg.io.lazy import LazyVolume, read_nifti_lazy

    seg = read_nifti_lazy(label_path, "SEG")
    check_same_grid(image, seg, label_path)

    def read() -> np.ndarray:
        try:
            return check_label_values(seg, allowed, label_path)
        finally:
            seg.release()

    meta = {"path": str(label_path), **{k: seg.meta[k] for k in ("header", "source_affine", "source_shape", "source_ornt")}}
    return LazyVolume(image.shape, image.spacing, image.affine.copy(), "SEG", meta, read)


def lazy_mask_label(image: Volume, masks: list[tuple[Volume, str | os.PathLike, int]], path: str | os.PathLike) -> Volume:
    """Binary mask volumes merged into one lazily built ``SEG`` label map on the grid of ``image``.

    Each mask's grid is checked now (:func:`check_same_grid`, headers only). On first use of
    ``array`` every mask is read in turn, checked to be binary (:func:`binary_mask`, the error names
    its file) and written with its value into a uint8 map (later masks win), then released.

    Args:
        image: The image the label map belongs to.
        masks: ``(mask volume, its file or folder, label value)``, in painting order.
        path: Recorded as the label map's ``meta["path"]``.
    """
    from tfmedseg.io.lazy import LazyVolume, release_volumes

    for mask, mask_path, _ in masks:
        check_same_grid(image, mask, mask_path, what=f"mask {Path(mask_path).name}")

    def read() -> np.ndarray:
        label = np.zeros(image.shape, np.uint8)
        for mask, mask_path, value in masks:
            try:
                label[binary_mask(mask, mask_path)] = value
            finally:
                release_volumes(mask)
        return label

    return LazyVolume(image.shape, image.spacing, image.affine.copy(), "SEG", {"path": str(path)}, read)
