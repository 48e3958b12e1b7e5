"""Seed 004 PET/CT preprocessing: the 144 mm cube around the HECKTOR box, CT scaling, per-patch z-score.

Seed 004 (L35, L66): CT clipped to [-1024, 1024] HU and mapped to [-1, 1]; PET (SUV) and CT each
z-scored independently per patch; volumes resampled to 144 x 144 x 144 voxels at 1 mm, i.e. the
HECKTOR bounding box. Here:

* :func:`petct_cube`: CT (linear, ``cval -1024``), PET (linear, ``cval 0``) and GTVt (nearest)
  resampled onto the :func:`~tfmedseg.preprocessing.crop.hecktor_cube` grid (``size`` voxels of
  ``spacing`` mm; the quick config uses 48 voxels of 3 mm, the same 144 mm field), CT already scaled
  to [-1, 1]; the :class:`~tfmedseg.preprocessing.crop.GridCrop` maps predictions back onto the
  CT grid;
* :func:`zscore_patch`: the per-patch, per-channel z-score (numpy; the tf.data and in-graph
  versions are :func:`tfmedseg.data.petct.zscore_patch_tf`), ``(x - mean) / (std + 1e-3)`` as the
  reference's ``NormalizeIntensity`` (its epsilon).
"""

from __future__ import annotations

import numpy as np

from tfmedseg.datasets.case import Case
from tfmedseg.preprocessing.crop import GridCrop, hecktor_cube

__all__ = ["CT_CLIP_HU", "ZSCORE_EPSILON", "lps_box_to_ras", "petct_cube", "scale_ct", "zscore_patch"]

#: Seed 004: CT clip range (HU), mapped linearly to [-1, 1].
CT_CLIP_HU = (-1024.0, 1024.0)
#: Added to the standard deviation of the z-score (iantsen/hecktor ``NormalizeIntensity``).
ZSCORE_EPSILON = 1e-3


def scale_ct(ct_hu: np.ndarray) -> np.ndarray:
    """CT HU -> clip to [-1024, 1024] -> [-1, 1] (float32)."""
    lo, hi = CT_CLIP_HU
    return ((np.clip(np.asarray(ct_hu, np.float32), lo, hi) - lo) / (hi - lo) * 2.0 - 1.0).astype(np.float32)


def lps_box_to_ras(box_lps) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
    """HECKTOR ``(x1, x2, y1, y2, z1, z2)`` LPS mm -> ``((x0, y0, z0), (x1, y1, z1))`` RAS+ mm corners."""
    x1, x2, y1, y2, z1, z2 = (float(v) for v in box_lps)
    return (-x2, -y2, z1), (-x1, -y1, z2)


def petct_cube(case: Case, size: int = 144, spacing: float = 1.0) -> tuple[np.ndarray, np.ndarray | None, GridCrop]:
    """A HECKTOR case on the cube grid.

    Args:
        case: A :func:`~tfmedseg.datasets.hecktor.load_hecktor` case (``images["ct"]`` HU,
            ``images["pt"]`` SUV, ``label`` GTVt on the CT grid or None, ``meta["bbox_mm"]`` LPS).
        size: Cube edge in voxels (seed 004: 144).
        spacing: Voxel size in mm (seed 004: 1.0).

    Returns:
        ``(image [size]^3 x 2 float32 (CT in [-1, 1], PET SUV), label [size]^3 uint8 or None, crop)``.

    Raises:
        InvalidInputError: The cube lies outside the CT (from :func:`hecktor_cube`).
    """
    ct, pet = case.images["ct"], case.images["pt"]
    crop = hecktor_cube(ct, lps_box_to_ras(case.meta["bbox_mm"]), size=size, spacing=spacing)
    ct_cube = scale_ct(crop.apply(ct, "linear", cval=CT_CLIP_HU[0]).array)
    pet_cube = crop.apply(pet, "linear", cval=0.0).array.astype(np.float32)
    image = np.stack([ct_cube, pet_cube], axis=-1)
    label = None
    if case.label is not None:
        label = (crop.apply(case.label, "nearest", cval=0).array > 0).astype(np.uint8)
    return image, label, crop


def zscore_patch(x: np.ndarray, epsilon: float = ZSCORE_EPSILON) -> np.ndarray:
    """Per-patch, per-channel z-score of ``[..., D, H, W, C]`` (statistics over D, H, W)."""
    x = np.asarray(x, np.float32)
    axes = (-4, -3, -2)
    return ((x - x.mean(axis=axes, keepdims=True)) / (x.std(axis=axes, keepdims=True) + epsilon)).astype(np.float32)
