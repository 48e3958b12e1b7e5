"""Input checks shared by the metric, inference and clinical functions.

Every check raises :class:`tfmedseg.errors.InvalidInputError` whose ``path`` is the argument name, so
the message always says which argument is wrong, the rule it broke and the value received.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from tfmedseg.errors import InvalidInputError

__all__ = ["as_array", "as_binary", "check_same_shape", "check_spacing", "check_finite"]


def as_array(x, name: str) -> np.ndarray:
    """Returns ``x`` as a numpy array (tensors are converted with ``np.asarray``)."""
    if x is None:
        raise InvalidInputError("is required, got None", path=name)
    try:
        return np.asarray(x)
    except Exception as exc:  # noqa: BLE001 - anything unconvertible is a user error
        raise InvalidInputError(f"cannot be converted to an array ({exc})", path=name) from exc


def check_finite(x: np.ndarray, name: str) -> np.ndarray:
    """Raises if a floating array holds NaN or infinite values."""
    if np.issubdtype(x.dtype, np.floating) and not np.all(np.isfinite(x)):
        n_bad = int(np.count_nonzero(~np.isfinite(x)))
        raise InvalidInputError(f"contains {n_bad} NaN or infinite values", path=name)
    return x


def as_binary(x, name: str) -> np.ndarray:
    """Returns a bool array (non-zero = foreground) after checking for NaN.

    Args:
        x: Array-like mask of any numeric or bool dtype.
        name: The argument name, used in error messages.

    Raises:
        InvalidInputError: ``x`` is None, not numeric, or holds NaN / inf.
    """
    arr = as_array(x, name)
    if arr.dtype == bool:
        return arr
    if not (np.issubdtype(arr.dtype, np.number)):
        raise InvalidInputError(f"must be a numeric or bool mask, got dtype {arr.dtype}", path=name)
    check_finite(arr, name)
    return arr != 0


def check_same_shape(a: np.ndarray, b: np.ndarray, names: tuple[str, str]) -> None:
    """Raises if two arrays do not have the same shape."""
    if a.shape != b.shape:
        raise InvalidInputError(
            f"must have the same shape as {names[0]} {tuple(a.shape)}, got {tuple(b.shape)}", path=names[1]
        )


def check_spacing(spacing: Sequence[float] | float | None, ndim: int, name: str = "spacing") -> np.ndarray:
    """Returns the spacing as a float64 vector of length ``ndim`` (mm per axis).

    A scalar is repeated over the axes. ``None``, a wrong length, or a non-positive / non-finite value
    raise, because a silently assumed 1 mm spacing gives wrong millimetre distances.
    """
    if spacing is None:
        raise InvalidInputError(
            f"is required: the voxel size in mm per axis ({ndim} values); "
            f"pass spacing=(1.0,) * {ndim} for distances in voxels",
            path=name,
        )
    arr = np.atleast_1d(np.asarray(spacing, dtype=np.float64))
    if arr.ndim != 1:
        raise InvalidInputError(f"must be a scalar or a 1-D sequence, got shape {arr.shape}", path=name)
    if arr.size == 1 and ndim != 1:
        arr = np.repeat(arr, ndim)
    if arr.size != ndim:
        raise InvalidInputError(
            f"must have one value per axis of the {ndim}-D mask, got {arr.size}: {tuple(arr.tolist())}", path=name
        )
    if not np.all(np.isfinite(arr)) or np.any(arr <= 0):
        raise InvalidInputError(f"must be finite and > 0 mm, got {tuple(arr.tolist())}", path=name)
    return arr
