"""Numpy sample extractors: 2.5D stacks, 3D slabs, 3D patches, 2D slices (zero padding outside).

All take an image ``[D, H, W, C]`` float32 and a label ``[D, H, W]`` int and return
``(x, y)`` with channels last and a trailing label axis of 1.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from tfmedseg.errors import InvalidInputError

__all__ = ["take_slices", "stack_25d", "slab_3d", "patch_3d"]


def take_slices(array: np.ndarray, indices: np.ndarray, pad_value: float = 0) -> np.ndarray:
    """``array[indices]`` along axis 0 with ``pad_value`` for indices outside ``[0, D)``."""
    indices = np.asarray(indices)
    valid = (indices >= 0) & (indices < array.shape[0])
    out = array[np.clip(indices, 0, array.shape[0] - 1)].copy()
    out[~valid] = pad_value
    return out


def stack_25d(image: np.ndarray, label: np.ndarray, z: int, n_slices: int = 9, pad_value: float = 0.0):
    """Seed 002 2.5D input: slices ``z - w .. z + w`` as channels, target = slice ``z``.

    Args:
        image: ``[D, H, W, C]``.
        label: ``[D, H, W]``.
        z: Centre slice.
        n_slices: Odd number of slices (9, so ``w = 4``).
        pad_value: Value of slices outside the volume (0).

    Returns:
        ``x [H, W, n_slices * C]`` float32 (slice-major: channel ``k * C + c`` is slice
        ``z - w + k``, channel ``c``) and ``y [H, W, 1]`` int32.
    """
    if n_slices < 1 or n_slices % 2 == 0:
        raise InvalidInputError(f"n_slices must be odd and positive, got {n_slices}", path="n_slices")
    w = n_slices // 2
    stack = take_slices(image, np.arange(z - w, z + w + 1), pad_value)  # [n, H, W, C]
    n, h, wd, c = stack.shape
    x = np.transpose(stack, (1, 2, 0, 3)).reshape(h, wd, n * c)
    return x, label[z][..., None].astype(np.int32)


def slab_3d(image: np.ndarray, label: np.ndarray, z0: int, n_in: int = 8, n_out: int = 4, pad_value: float = 0.0):
    """Seed 002 3D input: ``n_in`` slices in, the middle ``n_out`` target slices out.

    Target slices are ``z0 .. z0 + n_out - 1``; the input adds ``(n_in - n_out) / 2`` context
    slices on each side, zero-padded outside the volume (thesis L774). Targets always lie inside
    the volume (the samplers choose ``z0`` so; see :func:`tfmedseg.data.sampling.slab_starts`).

    Returns:
        ``x [n_in, H, W, C]`` float32, ``y [n_out, H, W, 1]`` int32.
    """
    ctx = (n_in - n_out) // 2
    if n_out < 1 or n_in < n_out or (n_in - n_out) % 2:
        raise InvalidInputError(f"need n_in >= n_out >= 1 with an even difference, got {n_in}, {n_out}", path="n_in")
    x = take_slices(image, np.arange(z0 - ctx, z0 + n_out + ctx), pad_value)
    y = take_slices(label, np.arange(z0, z0 + n_out), 0)
    return x, y[..., None].astype(np.int32)


def patch_3d(image: np.ndarray, label: np.ndarray, center: Sequence[int], patch_size: Sequence[int], pad_value: float = 0.0):
    """A 3D patch with voxel ``center`` at index ``patch_size // 2``, padded outside the volume.

    Returns:
        ``x [d, h, w, C]`` float32 (``pad_value`` outside), ``y [d, h, w, 1]`` int32 (0 outside).
    """
    size = np.asarray(patch_size, dtype=np.int64)
    start = np.asarray(center, dtype=np.int64) - size // 2
    shape = np.asarray(image.shape[:3])
    lo, hi = np.maximum(start, 0), np.minimum(start + size, shape)
    x = np.full(tuple(size) + image.shape[3:], pad_value, dtype=np.float32)
    y = np.zeros(tuple(size) + (1,), dtype=np.int32)
    if np.all(hi > lo):
        src = tuple(slice(a, b) for a, b in zip(lo, hi))
        dst = tuple(slice(a - s, b - s) for a, b, s in zip(lo, hi, start))
        x[dst] = image[src]
        y[dst + (0,)] = label[src]
    return x, y
