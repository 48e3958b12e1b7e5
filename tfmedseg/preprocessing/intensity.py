"""Intensity windowing and normalisation, one function per seed rule.

All functions are pure numpy, take any array shape and return ``float32`` (or ``uint8`` for display
images). CT values are Hounsfield units (HU); PET values are whatever the reader returns (Bq/ml or SUV).

Seed rules (defaults of the functions below):

* seed 002 (liver 2D/3D, LiTS): clamp HU to ``[-200, 200]`` and map to ``[0, 1]``
  (:func:`hu_to_unit`). The thesis says "min-max normalise"; we use the fixed window ends as min and
  max, so that one HU maps to the same value in every volume (identical to per-volume min-max for any
  volume spanning the window, which every abdominal CT does).
* seed 003 (liver lesions): clamp to ``[-250, 250]``, ``(x + 250) / 500`` to ``[0, 1]``, then
  ``(x - 0.5) / 0.5`` to ``[-1, 1]`` (:func:`liver_lesion_window`).
* seed 004 (HECKTOR): CT clipped to ``[-1024, 1024]`` and mapped linearly to ``[-1, 1]``
  (:func:`hecktor_ct`); PET and CT then z-scored independently per patch (:func:`zscore`).
* seed 000 (MAA SPECT/CT): the CT is shown as an 8-bit display image windowed at "30 ... 150 HU"
  (:func:`ct_display_window`). We read this as the standard radiological *liver window*
  level 30 HU / width 150 HU, i.e. HU ``[-45, 105]`` -> ``[0, 255]``: W150/L30 is the textbook liver
  window, and the literal range [30, 150] HU would clip liver parenchyma (40-60 HU) to near black.
  ``level=None`` gives the literal clip ``[30, 150]`` instead.
"""

from __future__ import annotations

import numpy as np

from tfmedseg.errors import InvalidInputError

__all__ = [
    "window_range",
    "clip_and_scale",
    "hu_to_unit",
    "liver_lesion_window",
    "hecktor_ct",
    "zscore",
    "ct_display_window",
]


def window_range(level: float, width: float) -> tuple[float, float]:
    """HU range ``(level - width / 2, level + width / 2)`` of a display window.

    Example:
        >>> window_range(30, 150)
        (-45.0, 105.0)
    """
    if not width > 0:
        raise InvalidInputError(f"window width must be positive, got {width}", path="width")
    return float(level - width / 2.0), float(level + width / 2.0)


def clip_and_scale(
    x: np.ndarray, in_min: float, in_max: float, out_min: float = 0.0, out_max: float = 1.0
) -> np.ndarray:
    """Clip ``x`` to ``[in_min, in_max]`` and map that range linearly onto ``[out_min, out_max]``.

    Args:
        x: Array of any shape (HU for CT).
        in_min: Lower window end; maps exactly to ``out_min``.
        in_max: Upper window end (``> in_min``); maps exactly to ``out_max``.
        out_min: Output value of ``in_min``.
        out_max: Output value of ``in_max``.

    Returns:
        ``float32`` array of the shape of ``x`` in ``[out_min, out_max]``.

    Raises:
        InvalidInputError: If ``in_max <= in_min``.
    """
    if not in_max > in_min:
        raise InvalidInputError(f"window must have in_max > in_min, got [{in_min}, {in_max}]", path="in_min/in_max")
    x = np.clip(np.asarray(x, dtype=np.float32), in_min, in_max)
    scaled = (x - np.float32(in_min)) / np.float32(in_max - in_min)
    return (scaled * np.float32(out_max - out_min) + np.float32(out_min)).astype(np.float32)


def hu_to_unit(x: np.ndarray, hu_min: float = -200.0, hu_max: float = 200.0) -> np.ndarray:
    """Seed 002: clamp CT to ``[hu_min, hu_max]`` HU and map to ``[0, 1]`` (float32, same shape).

    Example:
        >>> hu_to_unit(np.array([-1000.0, -200.0, 0.0, 200.0, 3000.0])).tolist()
        [0.0, 0.0, 0.5, 1.0, 1.0]
    """
    return clip_and_scale(x, hu_min, hu_max, 0.0, 1.0)


def liver_lesion_window(
    x: np.ndarray, hu_min: float = -250.0, hu_max: float = 250.0, mean: float = 0.5, std: float = 0.5
) -> np.ndarray:
    """Seed 003: clamp HU to ``[-250, 250]``, scale to ``[0, 1]``, then ``(x - mean) / std`` -> ``[-1, 1]``.

    Args:
        x: CT in HU, any shape.
        hu_min: Lower HU bound (-250).
        hu_max: Upper HU bound (250).
        mean: Normalisation mean on the ``[0, 1]`` scale (0.5, the thesis' transform).
        std: Normalisation std (0.5).

    Returns:
        float32 array, ``-1`` at ``hu_min``, ``1`` at ``hu_max`` with the defaults.
    """
    if not std > 0:
        raise InvalidInputError(f"std must be positive, got {std}", path="std")
    unit = clip_and_scale(x, hu_min, hu_max, 0.0, 1.0)
    return ((unit - np.float32(mean)) / np.float32(std)).astype(np.float32)


def hecktor_ct(x: np.ndarray, hu_min: float = -1024.0, hu_max: float = 1024.0) -> np.ndarray:
    """Seed 004: clip CT to ``[-1024, 1024]`` HU and map linearly to ``[-1, 1]`` (float32)."""
    return clip_and_scale(x, hu_min, hu_max, -1.0, 1.0)


def zscore(x: np.ndarray, mask: np.ndarray | None = None, eps: float = 1e-8) -> np.ndarray:
    """Seed 004: z-score a patch, ``(x - mean) / max(std, eps)``, statistics over the whole patch.

    Args:
        x: One channel of one patch (PET or CT), any shape.
        mask: Optional bool array of ``x``'s shape; statistics only over ``mask`` (all voxels are
            still normalised). An empty mask is an error.
        eps: Floor of the standard deviation (a constant patch becomes all zeros).

    Returns:
        float32 array with mean 0 and std 1 over the voxels used.
    """
    x = np.asarray(x, dtype=np.float32)
    values = x if mask is None else x[np.asarray(mask, dtype=bool)]
    if values.size == 0:
        raise InvalidInputError("z-score statistics over an empty mask", path="mask")
    mean = np.float32(values.mean(dtype=np.float64))
    std = np.float32(max(float(values.std(dtype=np.float64)), eps))
    return ((x - mean) / std).astype(np.float32)


def ct_display_window(x: np.ndarray, level: float | None = 30.0, width: float = 150.0) -> np.ndarray:
    """Seed 000: CT in HU to an 8-bit display image with the liver window.

    Args:
        x: CT in HU, any shape.
        level: Window level in HU (30). With ``level=None`` the window is the literal range
            ``[30, width]`` = [30, 150] HU (the other reading of the seed; see the module docstring).
        width: Window width in HU (150).

    Returns:
        ``uint8`` array: 0 at and below the lower end, 255 at and above the upper end, rounded
        linearly in between.

    Example:
        >>> ct_display_window(np.array([-1000.0, -45.0, 30.0, 105.0, 400.0])).tolist()
        [0, 0, 128, 255, 255]
    """
    lo, hi = (30.0, float(width)) if level is None else window_range(level, width)
    scaled = clip_and_scale(x, lo, hi, 0.0, 255.0)
    return np.rint(scaled).astype(np.uint8)
