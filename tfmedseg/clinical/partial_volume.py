"""Region-based partial-volume correction of SPECT means: the geometric transfer matrix (GTM).

Rousset et al. (J Nucl Med 1998): with ``n`` regions ``R_j`` of uniform true concentration
``t_j`` and a known point-spread function ``h``, the measured mean in region ``i`` is
``m_i = sum_j W_ij t_j`` with ``W_ij = mean over R_i of (h * 1_{R_j})``; solving ``W t = m`` gives
the true concentrations. MAA SPECT has a 12-16 mm FWHM, so a small tumour's measured
tumour-to-liver ratio is far below its true ratio (a 2 ml sphere keeps about half); the GTM
ratio ``t_tumour / t_normal`` undoes that when the masks and the resolution are right.

The resolution on the CT grid is the system FWHM combined with the SPECT voxel sampling and the
trilinear resampling (:func:`effective_sigma_mm`: variance ``(FWHM / 2.355)^2 + v^2 / 4`` per axis,
``v^2 / 12`` for the voxel and ``v^2 / 6`` for linear interpolation).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from tfmedseg.errors import InvalidInputError

__all__ = ["effective_sigma_mm", "gtm_concentrations"]


def effective_sigma_mm(fwhm_mm: float, spect_spacing_mm: Sequence[float]) -> tuple[float, ...]:
    """Per-axis Gaussian sigma (mm) of a SPECT of system ``fwhm_mm`` resampled from voxels ``spect_spacing_mm``.

    Example:
        >>> [round(s, 2) for s in effective_sigma_mm(14.0, (4.8, 4.8, 4.8))]
        [6.41, 6.41, 6.41]
    """
    if not (math.isfinite(fwhm_mm) and fwhm_mm > 0):
        raise InvalidInputError(f"must be a positive number of mm, got {fwhm_mm}", path="spect_fwhm_mm")
    return tuple(math.sqrt((fwhm_mm / 2.3548) ** 2 + float(v) ** 2 / 4.0) for v in spect_spacing_mm)


def gtm_concentrations(counts: np.ndarray, regions: Sequence[np.ndarray], spacing_mm: Sequence[float],
                       sigma_mm: Sequence[float]) -> np.ndarray:
    """True mean concentration of each region by the geometric transfer matrix.

    Args:
        counts: ``[D, H, W]`` SPECT counts on the grid of the masks.
        regions: Disjoint binary masks, same shape (e.g. tumour, non-tumoural liver, rest of body).
        spacing_mm: Voxel size of that grid (mm, per axis).
        sigma_mm: Gaussian sigma of the resolution on that grid (mm, per axis).

    Returns:
        float64 ``[n]`` concentrations (counts per voxel).

    Raises:
        InvalidInputError: An empty region or a singular transfer matrix.
    """
    counts = np.asarray(counts, np.float64)
    masks = [np.asarray(r, bool) for r in regions]
    for i, m in enumerate(masks):
        if m.shape != counts.shape:
            raise InvalidInputError(f"region {i} has shape {m.shape}, counts {counts.shape}", path="regions")
        if not m.any():
            raise InvalidInputError(f"region {i} is empty", path="regions")
    sigma_vox = [s / float(v) for s, v in zip(sigma_mm, spacing_mm)]
    spread = [ndimage.gaussian_filter(m.astype(np.float32), sigma_vox, mode="constant") for m in masks]
    w = np.array([[float(s[mi].mean()) for s in spread] for mi in masks])
    measured = np.array([float(counts[m].mean()) for m in masks])
    if abs(np.linalg.det(w)) < 1e-12:
        raise InvalidInputError("the geometric transfer matrix is singular (regions too small for the resolution)",
                                path="regions")
    return np.linalg.solve(w, measured)
