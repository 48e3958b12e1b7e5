"""99mTc-MAA SPECT simulation paired with the abdominal CT phantom, and the seed-000 display fusion.

The activity concentration on the CT grid is 1 in the non-tumoral liver, ``TLR`` in the
tumours (the known tumour-to-liver ratio), a lung concentration set so that lung counts are the
lung shunt fraction ``LSF`` of lung + liver counts, and a little free pertechnetate (stomach,
kidneys, body background). It is blurred with a 14 mm FWHM point-spread function, sampled on a
coarse 4.8 mm SPECT grid covering the CT field of view (same frame of reference) and Poisson
sampled. ``TLR`` is the ground truth of the activity *concentrations*; a TLR measured on the
blurred SPECT is lower for small tumours (partial-volume effect), as in real data.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy import ndimage

from tfmedseg.datasets.phantoms.abdomen import AbdomenPhantom

__all__ = ["MaaSpect", "simulate_maa_spect", "fuse_display", "display_window_max", "SPECT_SPACING", "DISPLAY_WEIGHTS",
           "MAA_TUMOUR_PLAN", "DISPLAY_MAX_RANGE"]

#: SPECT voxel size (mm).
SPECT_SPACING = (4.8, 4.8, 4.8)
#: ``(W1, W2)`` of the fused display image ``W1 * CT + W2 * SPECT`` (seed 000 best: 0.5 / 0.5).
DISPLAY_WEIGHTS = (0.5, 0.5)
#: Tumour sizes of the MAA patients (:func:`~tfmedseg.datasets.phantoms.abdomen.make_abdomen` plan):
#: "large" / "medium" tumours only (equivalent diameters 36-92 mm). The seed's SIRT patients have
#: 8-56 tumour slices each (mean 25) and the tumours were drawn on the SPECT/CT display, i.e. as hot
#: spots; the CT phantom's "small" group (3-11 mm radius) is below a 14 mm FWHM SPECT's resolution.
MAA_TUMOUR_PLAN = {"first": ("large", "medium"), "extra": ("medium",)}
#: Range of the per-patient display window's upper level, as a multiple of the 99.5th percentile of
#: the (blurred) liver counts: a reader sets it so that the hot spot stays visible, some patients a
#: little dim (the seed's "abnormal" histograms that the R,G adjustment brightens). Below about 0.8
#: a TLR 2 tumour saturates together with the liver and nobody could draw it.
DISPLAY_MAX_RANGE = (0.8, 1.6)


@dataclasses.dataclass
class MaaSpect:
    """A simulated MAA SPECT.

    Attributes:
        counts: ``[D', H', W']`` float32 counts on the SPECT grid.
        spacing: SPECT voxel size (mm).
        origin_lps: LPS position of SPECT voxel 0 (same frame of reference as the CT).
        tlr: True tumour-to-liver concentration ratio.
        lsf: True lung shunt fraction.
        on_ct: ``[D, H, W]`` float32 expected counts per CT voxel, blurred (for the display).
    """

    counts: np.ndarray
    spacing: tuple[float, float, float]
    origin_lps: tuple[float, float, float]
    tlr: float
    lsf: float
    on_ct: np.ndarray


def simulate_maa_spect(
    ct: AbdomenPhantom,
    rng: np.random.Generator,
    *,
    spacing: tuple[float, float, float] = SPECT_SPACING,
    total_counts: float = 2.0e6,
    fwhm_mm: float = 14.0,
) -> MaaSpect:
    """Simulate the MAA SPECT of one abdominal phantom.

    Args:
        ct: The CT phantom (its masks give the activity distribution).
        rng: The case's random generator.
        spacing: SPECT voxel size (mm).
        total_counts: Expected total counts in the SPECT volume.
        fwhm_mm: System resolution (FWHM, mm).

    Returns:
        A :class:`MaaSpect` with TLR drawn in [2, 8] and LSF in [0.03, 0.15].
    """
    masks = ct.masks
    tlr = float(rng.uniform(2.0, 8.0))
    lsf = float(rng.uniform(0.03, 0.15))
    activity = np.zeros(ct.ct.shape, np.float32)
    activity[masks["body"]] = 0.02
    activity[masks["spleen"]] = 0.05
    activity[masks["left_kidney"] | masks["right_kidney"]] = 0.15
    liver = masks["liver"] & ~masks["tumours"]
    activity[liver] = 1.0
    activity[masks["tumours"]] = tlr
    liver_total = float(activity[masks["liver"]].sum())
    n_lung = int(masks["lungs"].sum())
    if n_lung:
        activity[masks["lungs"]] = lsf / (1.0 - lsf) * liver_total / n_lung
    blurred = ndimage.gaussian_filter(activity, sigma=tuple(fwhm_mm / 2.355 / s for s in ct.spacing))
    fov = np.array(ct.ct.shape) * np.array(ct.spacing)
    shape = tuple(int(round(f / s)) for f, s in zip(fov, spacing))
    centres = [((np.arange(n) - (n - 1) / 2.0) * s) for n, s in zip(shape, spacing)]
    idx = np.meshgrid(*[c / s + (n - 1) / 2.0 for c, s, n in zip(centres, ct.spacing, ct.ct.shape)], indexing="ij")
    expected = ndimage.map_coordinates(blurred, idx, order=1, mode="constant", cval=0.0)
    scale = total_counts / max(float(expected.sum()), 1e-6)
    counts = rng.poisson(expected * scale).astype(np.float32)
    origin = tuple(float(-(n - 1) * s / 2.0) for n, s in zip(shape[::-1], spacing[::-1]))
    voxel_ratio = float(np.prod(spacing) / np.prod(ct.spacing))
    return MaaSpect(counts, tuple(spacing), origin, tlr, lsf, blurred * scale / voxel_ratio)


def display_window_max(spect_on_ct: np.ndarray, liver: np.ndarray, rng: np.random.Generator) -> float:
    """The patient's display window upper level (counts): :data:`DISPLAY_MAX_RANGE` times the
    99.5th percentile of ``spect_on_ct`` in the ``liver`` mask (tumours included)."""
    return float(np.percentile(spect_on_ct[liver], 99.5)) * float(rng.uniform(*DISPLAY_MAX_RANGE))


def _hot(x: np.ndarray) -> np.ndarray:
    """The 'hot' colour map: ``[..]`` in [0, 1] -> ``[.., 3]`` in [0, 1] (black-red-yellow-white)."""
    return np.stack([np.clip(3 * x, 0, 1), np.clip(3 * x - 1, 0, 1), np.clip(3 * x - 2, 0, 1)], -1)


def fuse_display(
    ct_hu: np.ndarray, spect_on_ct: np.ndarray, display_max: float, weights: tuple[float, float] = DISPLAY_WEIGHTS
) -> np.ndarray:
    """Fused SPECT/CT display slice(s), as a MIM screen export blended with ``cv2.addWeighted``.

    Args:
        ct_hu: ``[..., H, W]`` HU.
        spect_on_ct: Same shape, SPECT counts resampled on the CT grid.
        display_max: SPECT value shown at full colour (the per-patient display window).
        weights: ``(W1, W2)`` for CT and SPECT.

    Returns:
        ``[..., H, W, 3]`` uint8 RGB: ``W1 * grey(CT, L=40, W=400) + W2 * hot(SPECT / display_max)``.
    """
    grey = np.clip((ct_hu - (40.0 - 200.0)) / 400.0, 0.0, 1.0)[..., None].repeat(3, -1)
    colour = _hot(np.clip(spect_on_ct / display_max, 0.0, 1.0))
    return np.clip(np.rint(255.0 * (weights[0] * grey + weights[1] * colour)), 0, 255).astype(np.uint8)
