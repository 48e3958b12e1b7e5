"""Post-processing of binary liver / tumour masks (seeds 002 and 003).

All functions take numpy masks (non-zero = foreground) and return new bool arrays; 3D arrays are
``[D, H, W]`` with axial slices along D.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from tfmedseg.errors import ConfigError, InvalidInputError
from tfmedseg.validation import as_array, as_binary, check_finite, check_same_shape

__all__ = [
    "largest_connected_component",
    "remove_small_components",
    "filter_liver_slices",
    "drop_low_confidence_components",
    "restrict_to_mask",
    "fill_holes",
    "combine_labels",
]


def _structure(ndim: int, connectivity: int):
    if not 1 <= connectivity <= ndim:
        raise ConfigError(f"must be in 1..{ndim}, got {connectivity}", path="connectivity")
    return ndimage.generate_binary_structure(ndim, connectivity)


def largest_connected_component(mask, connectivity: int = 1) -> np.ndarray:
    """Keeps the largest connected component (seed 002: the liver after thresholding).

    Args:
        mask: Binary mask, any rank (3D for the liver).
        connectivity: 1 (faces) .. ndim (all neighbours).

    Returns:
        bool mask with only the largest component (empty stays empty; ties keep the lowest label).
    """
    m = as_binary(mask, "mask")
    lab, n = ndimage.label(m, structure=_structure(m.ndim, connectivity))
    if n <= 1:
        return m.copy()
    sizes = np.bincount(lab.ravel())[1:]
    return lab == (int(np.argmax(sizes)) + 1)


def remove_small_components(mask, min_size: int, connectivity: int = 1) -> np.ndarray:
    """Drops connected components with fewer than ``min_size`` voxels (seed 003 lesions: 10 px, 2D)."""
    m = as_binary(mask, "mask")
    if min_size < 0:
        raise ConfigError(f"must be >= 0, got {min_size}", path="min_size")
    lab, n = ndimage.label(m, structure=_structure(m.ndim, connectivity))
    if n == 0:
        return m.copy()
    sizes = np.bincount(lab.ravel())
    keep = sizes >= min_size
    keep[0] = False
    return keep[lab]


def filter_liver_slices(mask, max_distance_px: float = 200.0, min_area_fraction: float = 1 / 8) -> np.ndarray:
    """Seed-003 liver filter, per axial slice: drop regions far from or much smaller than the main one.

    In each 2D slice the connected regions (8-connectivity, like ``skimage.measure.label`` on a
    binary image) are found; the largest is the main liver region. Every other region is removed if
    its centroid is more than ``max_distance_px`` pixels from the main region's centroid **or** its
    area is less than ``min_area_fraction`` (1/8) of the main area. Slices with fewer than two
    regions are unchanged.

    Args:
        mask: ``[H, W]`` or ``[D, H, W]`` binary liver mask.
        max_distance_px: Centroid distance limit in pixels (200 at 512x512 in the seed).
        min_area_fraction: Minimum area relative to the main region (1/8).

    Returns:
        bool mask of the same shape.
    """
    m = as_binary(mask, "mask")
    if m.ndim not in (2, 3):
        raise InvalidInputError(f"must be [H, W] or [D, H, W], got shape {m.shape}", path="mask")
    if max_distance_px < 0 or not 0 <= min_area_fraction <= 1:
        raise ConfigError(
            f"need max_distance_px >= 0 and 0 <= min_area_fraction <= 1, got {max_distance_px}, {min_area_fraction}",
            path="max_distance_px",
        )
    eight = np.ones((3, 3), bool)

    def one(sl):
        lab, n = ndimage.label(sl, structure=eight)
        if n < 2:
            return sl.copy()
        idx = np.arange(1, n + 1)
        areas = np.bincount(lab.ravel())[1:].astype(np.float64)
        cents = np.array(ndimage.center_of_mass(sl, lab, idx))
        main = int(np.argmax(areas))
        dist = np.linalg.norm(cents - cents[main], axis=1)
        keep = (dist <= max_distance_px) & (areas >= areas[main] * min_area_fraction)
        keep[main] = True
        return np.concatenate([[False], keep])[lab]

    if m.ndim == 2:
        return one(m)
    return np.stack([one(s) for s in m])


def drop_low_confidence_components(mask, probability, threshold: float, connectivity: int = 1) -> np.ndarray:
    """Drops components whose maximum voxel probability is below ``threshold`` (seed 002 tumours).

    Args:
        mask: Binary tumour mask (e.g. ``probability >= 0.5``).
        probability: Tumour probability map, same shape, values in [0, 1].
        threshold: A component is kept if ``max(probability[component]) >= threshold``.
        connectivity: 1 (faces) .. ndim.

    Raises:
        InvalidInputError: shapes differ, or ``probability`` holds NaN or leaves [0, 1].
    """
    m = as_binary(mask, "mask")
    prob = check_finite(as_array(probability, "probability").astype(np.float32, copy=False), "probability")
    check_same_shape(m, prob, ("mask", "probability"))
    if prob.size and (prob.min() < 0 or prob.max() > 1):
        raise InvalidInputError(f"must be in [0, 1], got range [{prob.min()}, {prob.max()}]", path="probability")
    lab, n = ndimage.label(m, structure=_structure(m.ndim, connectivity))
    if n == 0:
        return m.copy()
    peak = ndimage.maximum(prob, lab, np.arange(1, n + 1))
    keep = np.concatenate([[False], np.asarray(peak) >= threshold])
    return keep[lab]


def restrict_to_mask(mask, region) -> np.ndarray:
    """Keeps the part of ``mask`` inside ``region`` (tumour restricted to the liver)."""
    m = as_binary(mask, "mask")
    r = as_binary(region, "region")
    check_same_shape(m, r, ("mask", "region"))
    return m & r


def fill_holes(mask, per_slice: bool = False) -> np.ndarray:
    """Fills enclosed holes (``scipy.ndimage.binary_fill_holes``), in 3D or per axial slice."""
    m = as_binary(mask, "mask")
    if per_slice and m.ndim == 3:
        return np.stack([ndimage.binary_fill_holes(s) for s in m])
    return ndimage.binary_fill_holes(m)


def combine_labels(liver, tumour) -> np.ndarray:
    """LiTS label map: 0 background, 1 liver, 2 tumour (tumour wins; use :func:`restrict_to_mask` first
    to keep tumour inside the liver). Returns uint8."""
    lv = as_binary(liver, "liver")
    tu = as_binary(tumour, "tumour")
    check_same_shape(lv, tu, ("liver", "tumour"))
    out = lv.astype(np.uint8)
    out[tu] = 2
    return out
