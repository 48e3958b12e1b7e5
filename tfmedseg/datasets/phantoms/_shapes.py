"""Geometric primitives for the phantoms (private): ellipsoids, tubes, smooth random fields."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

__all__: list[str] = []


def grid_mm(shape: tuple[int, int, int], spacing: tuple[float, float, float]) -> tuple[np.ndarray, ...]:
    """Centred mm coordinates ``(z, y, x)`` of a canonical ``[D, H, W]`` grid (broadcastable views).

    ``z`` grows towards superior, ``y`` towards posterior, ``x`` towards the patient's left.
    """
    axes = [((np.arange(n) - (n - 1) / 2.0) * s).astype(np.float32) for n, s in zip(shape, spacing)]
    return axes[0][:, None, None], axes[1][None, :, None], axes[2][None, None, :]


def ellipsoid(coords, center, semi_axes, field: np.ndarray | None = None, wobble: float = 0.0) -> np.ndarray:
    """Bool mask of ``sum(((c - center) / semi)^2) < 1``; ``field`` (std 1) bends the border by ``wobble``.

    Args:
        coords: ``(z, y, x)`` from :func:`grid_mm`, or ``(y, x)`` for 2D.
        center: Centre in mm, same order as ``coords``.
        semi_axes: Semi-axes in mm, same order.
        field: Optional smooth random field of the grid's shape.
        wobble: Relative border perturbation (0.1 = +-10 % of the radius per unit of ``field``).
    """
    dist = sum(((c - c0) / a) ** 2 for c, c0, a in zip(coords, center, semi_axes))
    if field is not None and wobble:
        return np.sqrt(dist) + wobble * field < 1.0
    return dist < 1.0


def tube(coords, start, end, radius: float) -> np.ndarray:
    """Bool mask of the points within ``radius`` mm of the segment ``start``-``end`` (3D or 2D)."""
    start = np.asarray(start, np.float32)
    end = np.asarray(end, np.float32)
    seg = end - start
    length2 = float(seg @ seg) or 1.0
    rel = [c - s for c, s in zip(coords, start)]
    t = np.clip(sum(r * d for r, d in zip(rel, seg)) / length2, 0.0, 1.0)
    dist2 = sum((r - t * d) ** 2 for r, d in zip(rel, seg))
    return dist2 < radius**2


def smooth_field(rng: np.random.Generator, shape: tuple[int, ...], sigma: tuple[float, ...]) -> np.ndarray:
    """Gaussian-smoothed white noise normalised to mean 0, std 1 (float32)."""
    field = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), sigma, mode="wrap")
    return (field - field.mean()) / (field.std() + 1e-6)
