"""Slice-by-slice prediction of 2D and 2.5D models over a volume, and mapping back to the source grid.

A 2.5D model sees each axial slice with its neighbours as channels: for slice ``z`` and ``context``
``c`` (odd, 9 in seed 002) the input is slices ``z - c//2 .. z + c//2`` stacked along the channel axis
in increasing ``z``, with all-zero slices beyond the ends of the volume. ``context=1`` is a plain
2D model.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
from scipy import ndimage

from tfmedseg.errors import ConfigError, InvalidInputError
from tfmedseg.validation import as_array, check_finite

__all__ = ["slice_stack", "predict_slices", "paste_crop", "resize_to_shape"]


def slice_stack(volume: np.ndarray, index: int, context: int) -> np.ndarray:
    """The ``[H, W, context * C]`` input of slice ``index`` (zero padded at the volume's ends).

    Args:
        volume: ``[D, H, W]`` or ``[D, H, W, C]`` array.
        index: Slice index in ``[0, D)``.
        context: Odd number of slices (1 = the slice only).
    """
    vol = volume if volume.ndim == 4 else volume[..., None]
    d, h, w, c = vol.shape
    half = context // 2
    out = np.zeros((context, h, w, c), np.float32)
    lo, hi = max(index - half, 0), min(index + half + 1, d)
    out[lo - (index - half) : hi - (index - half)] = vol[lo:hi]
    return np.moveaxis(out, 0, 2).reshape(h, w, context * c)


def predict_slices(volume, predictor: Callable, context: int = 9, batch_size: int = 8) -> np.ndarray:
    """Predicts a volume slice by slice with a 2D / 2.5D model.

    Args:
        volume: ``[D, H, W]`` (or ``[D, H, W, C]``) float array, already preprocessed (windowed,
            normalised, resampled) as the model expects.
        predictor: Callable ``[n, H, W, context*C] -> [n, H, W, K]`` (e.g.
            :func:`tfmedseg.inference.make_predictor` of a Keras model).
        context: Odd number of slices per input (9 for seed 002's 2.5D models, 1 for 2D).
        batch_size: Slices per predictor call.

    Returns:
        float32 ``[D, H, W, K]``.

    Raises:
        InvalidInputError: wrong rank or NaN in ``volume``.
        ConfigError: ``context`` even or < 1, ``batch_size`` < 1.
    """
    vol = check_finite(as_array(volume, "volume").astype(np.float32, copy=False), "volume")
    if vol.ndim not in (3, 4):
        raise InvalidInputError(f"must be [D, H, W] or [D, H, W, C], got shape {vol.shape}", path="volume")
    if context < 1 or context % 2 == 0:
        raise ConfigError(f"must be an odd number >= 1, got {context}", path="context")
    if batch_size < 1:
        raise ConfigError(f"must be >= 1, got {batch_size}", path="batch_size")
    if hasattr(predictor, "get_config") and not hasattr(predictor, "python_function"):
        from tfmedseg.inference.sliding_window import make_predictor

        predictor = make_predictor(predictor)
    outs = []
    for z0 in range(0, vol.shape[0], batch_size):
        batch = np.stack([slice_stack(vol, z, context) for z in range(z0, min(z0 + batch_size, vol.shape[0]))])
        y = predictor(batch)
        outs.append(np.asarray(y.numpy() if hasattr(y, "numpy") else y, np.float32))
    return np.concatenate(outs, axis=0)


def paste_crop(prediction, box: Sequence[tuple[int, int]], full_shape: Sequence[int], fill: float = 0) -> np.ndarray:
    """Puts a prediction made on a crop back into the full (uncropped) grid.

    Args:
        prediction: ``[*crop_shape]`` or ``[*crop_shape, K]`` array.
        box: ``(start, stop)`` per spatial axis of the crop in the full grid.
        full_shape: Spatial shape of the full grid.
        fill: Value outside the crop (0 = background; for probabilities of the background channel
            pass the caller's own fill after this call).

    Returns:
        Array of ``full_shape`` (+ trailing channel axis if ``prediction`` has one), same dtype.
    """
    pred = as_array(prediction, "prediction")
    n = len(full_shape)
    if len(box) != n or pred.ndim not in (n, n + 1):
        raise InvalidInputError(f"box {list(box)} and prediction {pred.shape} do not match full_shape {tuple(full_shape)}",
                                path="box")
    if any(stop - start != s for (start, stop), s in zip(box, pred.shape[:n])):
        raise InvalidInputError(f"box sizes {[b - a for a, b in box]} differ from prediction {pred.shape[:n]}", path="box")
    out = np.full(tuple(full_shape) + pred.shape[n:], fill, dtype=pred.dtype)
    out[tuple(slice(a, b) for a, b in box)] = pred
    return out


def resize_to_shape(array, shape: Sequence[int], order: int = 0) -> np.ndarray:
    """Resamples the spatial axes of a prediction to ``shape`` (inverse of a resample step).

    Args:
        array: ``[*spatial]`` labels (use ``order=0``) or ``[*spatial, K]`` probabilities (``order=1``).
        shape: Target spatial shape (the source grid).
        order: Spline order: 0 nearest (labels), 1 linear (probabilities).

    Returns:
        The resampled array, same dtype; the corner voxel centres of both grids are aligned
        (``scipy.ndimage.zoom(grid_mode=False)``).
    """
    arr = as_array(array, "array")
    n = len(shape)
    if arr.ndim not in (n, n + 1):
        raise InvalidInputError(f"must have {n} spatial axes (+ optional channels), got shape {arr.shape}", path="array")
    factors = [t / s for t, s in zip(shape, arr.shape[:n])] + [1.0] * (arr.ndim - n)
    out = ndimage.zoom(arr, factors, order=order, mode="nearest")
    return out.astype(arr.dtype, copy=False)
