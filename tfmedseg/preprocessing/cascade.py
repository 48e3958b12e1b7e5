"""Seed 002 cascade: combine the normalised CT with the stage-1 liver mask for the tumour stage.

Two combinations, both keeping the input size (thesis L840-844):

* ``"mask"`` (mask-out): ``CT * liver`` - zero outside the liver;
* ``"add"`` (highlight): ``CT + liver`` - adds 1 inside the liver to the ``[0, 1]`` CT.
"""

from __future__ import annotations

import numpy as np

from tfmedseg.errors import InvalidInputError

__all__ = ["COMBINATIONS", "mask_out", "add_mask", "combine", "cascade_training_arrays"]

#: Accepted ``mode`` values of :func:`combine`.
COMBINATIONS = ("mask", "add")


def _check(ct: np.ndarray, liver: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    ct = np.asarray(ct, dtype=np.float32)
    liver = (np.asarray(liver) > 0).astype(np.float32)
    if ct.shape[: liver.ndim] != liver.shape:
        raise InvalidInputError(f"liver mask {liver.shape} does not fit the CT {ct.shape}", path="liver")
    if ct.ndim > liver.ndim:  # trailing channels (2.5D stacks): broadcast the mask
        liver = liver.reshape(liver.shape + (1,) * (ct.ndim - liver.ndim))
    return ct, liver


def mask_out(ct: np.ndarray, liver: np.ndarray) -> np.ndarray:
    """``CT * (liver > 0)``: float32, same shape as ``ct`` (``[..., C]`` channels broadcast)."""
    ct, liver = _check(ct, liver)
    return ct * liver


def add_mask(ct: np.ndarray, liver: np.ndarray, value: float = 1.0) -> np.ndarray:
    """``CT + value * (liver > 0)``: float32, values in ``[0, 1 + value]`` for a ``[0, 1]`` CT."""
    ct, liver = _check(ct, liver)
    return ct + np.float32(value) * liver


def combine(ct: np.ndarray, liver: np.ndarray, mode: str = "mask") -> np.ndarray:
    """Apply the combination named by ``mode`` (one of :data:`COMBINATIONS`)."""
    if mode not in COMBINATIONS:
        raise InvalidInputError(f"mode must be one of {COMBINATIONS}, got {mode!r}", path="mode")
    return mask_out(ct, liver) if mode == "mask" else add_mask(ct, liver)


def cascade_training_arrays(
    ct_hu: np.ndarray,
    label: np.ndarray,
    *,
    hu_window: tuple[float, float] = (-200.0, 200.0),
    inplane_size: int = 256,
    combination: str = "mask",
    slice_margin: int = 2,
) -> tuple[dict[str, np.ndarray], tuple[int, int]]:
    """Training arrays of both cascade stages from one CT and its LiTS label map (seed 002).

    The CT is clamped to ``hu_window`` and mapped to [0, 1]; in-plane resized to ``inplane_size``
    (linear; labels nearest). The tumour stage's input is the CT combined with the *reference* liver
    (``combination``), cut to the liver's slice range plus ``slice_margin`` slices on each side (the
    stage-2 network only ever sees liver slices at inference).

    Args:
        ct_hu: ``[D, H, W]`` CT in HU.
        label: ``[D, H, W]`` label map (0 background, 1 liver, 2 tumour).

    Returns:
        ``(arrays, (lo, hi))``: ``image`` float32 ``[D, S, S]``, ``liver`` uint8 ``[D, S, S]``,
        ``tumour_input`` float32 ``[hi - lo, S, S]``, ``tumour`` uint8 ``[hi - lo, S, S]``, and the
        slice range ``[lo, hi)`` of the tumour arrays.
    """
    from tfmedseg.preprocessing.intensity import hu_to_unit
    from tfmedseg.preprocessing.resample import resize_array

    label = np.asarray(label)
    depth = ct_hu.shape[0]
    size = (depth, inplane_size, inplane_size)
    unit = hu_to_unit(ct_hu, *hu_window)
    liver = (label >= 1).astype(np.float32)
    image = resize_array(unit, size, "linear")
    small_label = resize_array(label.astype(np.uint8), size, "nearest")
    combined = resize_array(combine(unit, liver, combination), size, "linear")
    zs = np.flatnonzero((label >= 1).reshape(depth, -1).any(axis=1))
    lo, hi = (int(zs[0]), int(zs[-1]) + 1) if zs.size else (0, depth)
    lo, hi = max(0, lo - slice_margin), min(depth, hi + slice_margin)
    arrays = {
        "image": image.astype(np.float32),
        "liver": (small_label >= 1).astype(np.uint8),
        "tumour_input": combined[lo:hi].astype(np.float32),
        "tumour": (small_label[lo:hi] == 2).astype(np.uint8),
    }
    return arrays, (lo, hi)
