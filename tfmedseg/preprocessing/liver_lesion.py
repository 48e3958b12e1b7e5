"""Seed-003 network inputs and targets: the liver stage's windowed slices and the lesion stage's VOI.

Liver stage (spec section 2a): HU clipped to [-250, 250], scaled to [0, 1], normalised with mean and
std 0.5 to [-1, 1], each axial slice resized (bilinear) to ``size`` x ``size`` (256); target
``label >= 1`` resized with nearest neighbour. Lesion stage (2b): the same window to [0, 1], the
square liver VOI with filled background and CLAHE (:func:`tfmedseg.preprocessing.crop.liver_voi`),
then ``2 x - 1``; target ``label == 2`` cropped and resized the same way (nearest).

Arrays: ``hu``/``label`` ``[D, H, W]`` on the canonical grid (axis 0 axial).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from tfmedseg.preprocessing.crop import Crop, liver_voi
from tfmedseg.preprocessing.intensity import clip_and_scale, liver_lesion_window
from tfmedseg.preprocessing.resample import resize_array

__all__ = ["lesion_input", "lesion_target", "liver_input", "liver_target"]


def liver_input(hu: np.ndarray, size: int = 256, hu_window: Sequence[float] = (-250.0, 250.0)) -> np.ndarray:
    """``[D, H, W]`` HU -> float32 ``[D, size, size]`` in [-1, 1]."""
    x = liver_lesion_window(np.asarray(hu, np.float32), float(hu_window[0]), float(hu_window[1]))
    return resize_array(x, (x.shape[0], size, size), "linear").astype(np.float32)


def liver_target(label: np.ndarray, size: int = 256) -> np.ndarray:
    """``[D, H, W]`` LiTS labels -> uint8 ``[D, size, size]`` liver (tumour included) mask."""
    liver = (np.asarray(label) >= 1).astype(np.uint8)
    return resize_array(liver, (liver.shape[0], size, size), "nearest").astype(np.uint8)


def lesion_input(hu: np.ndarray, liver: np.ndarray, size: int = 256, hu_window: Sequence[float] = (-250.0, 250.0),
                 clahe: bool = True, clip_limit: float = 0.01) -> tuple[np.ndarray, Crop]:
    """The lesion network's input: ``([D', size, size] float32 in [-1, 1], crop)``; ``crop`` maps the
    lesion target (:func:`lesion_target`) and predictions (``crop.invert``) between the grids.

    Raises:
        InvalidInputError: Empty liver mask.
    """
    unit = clip_and_scale(np.asarray(hu, np.float32), float(hu_window[0]), float(hu_window[1]), 0.0, 1.0)
    voi, crop = liver_voi(unit, liver, out_size=size, clahe=clahe, clip_limit=clip_limit)
    return (2.0 * voi - 1.0).astype(np.float32), crop


def lesion_target(label: np.ndarray, crop: Crop) -> np.ndarray:
    """``[D, H, W]`` LiTS labels -> uint8 lesion mask on the VOI grid of ``crop``."""
    return (crop.apply((np.asarray(label) == 2).astype(np.float32), mode="nearest") > 0.5).astype(np.uint8)
