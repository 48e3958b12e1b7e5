"""Region-based partial-volume correction of SPECT means: the geometric transfer matrix (GTM).

Rousset et al. (J Nucl Med 1998): with ``n`` regions ``R_j`` of uniform true concentration
``t_j`` and a known point-spread function ``h``, the measured mean in region ``i`` is
``m_i = sum_j W_ij t_j`` with ``W_ij = mean over R_i of (h * 1_{R_j})``; solving ``W t = m`` gives
the true concentrations. MAA SPECT has a 12-16 mm FWHM, so a small tumour's measured
tumour-to-liver ratio is far below its true ratio (a 2 ml sphere keeps about half); the GTM
ratio ``t_tumour / t_normal`` undoes that when the masks and the resolution are right.

The means may be measured in other volumes than the model regions (Rousset's GTM allows any ROI
``M_i``: ``W_ij = mean over M_i of (h * 1_{R_j})``): :func:`margin_measurement_regions` measures the
tumour in its core and the normal liver away from the tumour, which makes the ratio much less
sensitive to a tumour boundary one or two voxels off (a predicted mask) while it stays exact for
exact masks; leaving hot spots out of the normal-liver volume keeps tumour that a predicted mask
missed from raising the normal-liver concentration.

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

__all__ = ["effective_sigma_mm", "gtm_concentrations", "margin_measurement_regions"]


def effective_sigma_mm(fwhm_mm: float, spect_spacing_mm: Sequence[float]) -> tuple[float, ...]:
    """Per-axis Gaussian sigma (mm) of a SPECT of system ``fwhm_mm`` resampled from voxels ``spect_spacing_mm``.

    Example:
        >>> [round(s, 2) for s in effective_sigma_mm(14.0, (4.8, 4.8, 4.8))]
        [6.41, 6.41, 6.41]
    """
    if not (math.isfinite(fwhm_mm) and fwhm_mm > 0):
        raise InvalidInputError(f"must be a positive number of mm, got {fwhm_mm}", path="spect_fwhm_mm")
    return tuple(math.sqrt((fwhm_mm / 2.3548) ** 2 + float(v) ** 2 / 4.0) for v in spect_spacing_mm)


def margin_measurement_regions(tumour: np.ndarray, normal: np.ndarray, spacing_mm: Sequence[float],
                               margin_mm: float, counts: np.ndarray | None = None,
                               hot_factor: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Measurement volumes ``(tumour core, normal liver away from the tumour)`` for :func:`gtm_concentrations`.

    The core is the tumour deeper than ``margin_mm`` from its surface (where no tumour is that
    deep: the deepest half of it); the normal-liver volume is ``normal`` farther than
    ``margin_mm`` from the tumour (all of ``normal`` when nothing is that far), without its hot
    spots when ``hot_factor`` is given: voxels whose ``counts`` exceed ``hot_factor`` times the
    volume's median (uptake of tumour the mask missed; a reader places the normal-liver reference
    away from hot spots too).

    Args:
        tumour: ``[D, H, W]`` bool tumour mask.
        normal: Same shape, non-tumoural liver.
        spacing_mm: Voxel size (mm).
        margin_mm: Margin (mm); 0 keeps the masks themselves.
        counts: ``[D, H, W]`` SPECT counts (needed with ``hot_factor``).
        hot_factor: Hot-spot threshold as a multiple of the median (e.g. 1.5); None: keep all.

    Example:
        >>> t = np.zeros((1, 1, 12), bool); t[0, 0, 2:7] = True
        >>> core, away = margin_measurement_regions(t, ~t, (1.0, 1.0, 1.0), 2.0)
        >>> core.nonzero()[2].tolist(), away.nonzero()[2].tolist()
        ([4], [9, 10, 11])
    """
    tumour, normal = np.asarray(tumour, bool), np.asarray(normal, bool)
    core, away = tumour, normal
    if margin_mm > 0 and tumour.any():
        depth = ndimage.distance_transform_edt(tumour, sampling=spacing_mm)
        core = depth > margin_mm
        if not core.any():
            core = depth >= 0.5 * float(depth.max())
        away = normal & (ndimage.distance_transform_edt(~tumour, sampling=spacing_mm) > margin_mm)
        away = away if away.any() else normal
    if hot_factor is not None and away.any():
        if counts is None:
            raise InvalidInputError("hot_factor needs the counts", path="counts")
        values = np.asarray(counts)[away]
        cool = away.copy()
        cool[away] = values <= hot_factor * float(np.median(values))
        away = cool if cool.any() else away
    return core, away


def gtm_concentrations(counts: np.ndarray, regions: Sequence[np.ndarray], spacing_mm: Sequence[float],
                       sigma_mm: Sequence[float], measure: Sequence[np.ndarray] | None = None) -> np.ndarray:
    """True mean concentration of each region by the geometric transfer matrix.

    Args:
        counts: ``[D, H, W]`` SPECT counts on the grid of the masks.
        regions: Disjoint binary masks, same shape (e.g. tumour, non-tumoural liver, rest of body).
        spacing_mm: Voxel size of that grid (mm, per axis).
        sigma_mm: Gaussian sigma of the resolution on that grid (mm, per axis).
        measure: One non-empty measurement volume per region (default: the regions), e.g.
            :func:`margin_measurement_regions`.

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
    rois = masks if measure is None else [np.asarray(r, bool) for r in measure]
    if len(rois) != len(masks) or any(r.shape != counts.shape or not r.any() for r in rois):
        raise InvalidInputError(f"need {len(masks)} non-empty measurement volumes of shape {counts.shape}", path="measure")
    sigma_vox = [s / float(v) for s, v in zip(sigma_mm, spacing_mm)]
    spread = [ndimage.gaussian_filter(m.astype(np.float32), sigma_vox, mode="constant") for m in masks]
    w = np.array([[float(s[mi].mean()) for s in spread] for mi in rois])
    measured = np.array([float(counts[m].mean()) for m in rois])
    if abs(np.linalg.det(w)) < 1e-12:
        raise InvalidInputError("the geometric transfer matrix is singular (regions too small for the resolution)",
                                path="regions")
    return np.linalg.solve(w, measured)
