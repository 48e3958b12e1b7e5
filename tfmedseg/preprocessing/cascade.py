"""Seed 002 cascade: combine the normalised CT with the stage-1 liver mask for the tumour stage.

Two combinations, both keeping the input size (thesis L840-844):

* ``"mask"`` (mask-out): ``CT * liver`` - zero outside the liver;
* ``"add"`` (highlight): ``CT + liver`` - adds 1 inside the liver to the ``[0, 1]`` CT.
"""

from __future__ import annotations

import numpy as np

from tfmedseg.errors import InvalidInputError

__all__ = ["COMBINATIONS", "mask_out", "add_mask", "combine"]

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
