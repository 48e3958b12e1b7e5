"""Epoch orders and sample positions, in numpy, seeded per epoch (same seed -> same order).

A *unit* is one training sample position inside a case: a slice index (2.5D stacks, 2D slices)
or a slab start (3D slabs). An epoch order is an ``int64 [N, 2]`` table of ``(case, position)``:

* ``"volume"`` (seed 002, thesis L776): every unit once per epoch, volume by volume in a random
  volume order, the units of a volume in random order;
* ``"uniform"``: every unit once per epoch, globally shuffled;
* ``"foreground"``: as many draws as units, with replacement; a draw is a unit containing
  foreground with probability ``foreground_fraction`` (uniform among those) and otherwise any unit.

3D patches use :func:`patch_centers`: the case cycles through random permutations and the centre
is a random foreground voxel with probability ``foreground_fraction``, else a uniform voxel.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from tfmedseg.errors import InvalidInputError

__all__ = ["ORDERS", "EMPTY_CASE_POLICIES", "epoch_rng", "slab_starts", "epoch_order", "foreground_coords", "patch_centers"]

#: Accepted ``order`` values.
ORDERS = ("volume", "uniform", "foreground")
#: What a foreground patch sampler does with a case whose mask is empty.
EMPTY_CASE_POLICIES = ("error", "random")


def epoch_rng(seed: int, epoch: int) -> np.random.Generator:
    """The generator of epoch ``epoch`` for ``seed`` (independent streams per epoch)."""
    return np.random.default_rng([int(seed), int(epoch)])


def slab_starts(depth: int, n_out: int = 4) -> np.ndarray:
    """Target-slab starts covering slices ``0 .. depth - 1`` once: ``0, n_out, 2 n_out, ...``.

    The last slab is moved back to end at the last slice (it overlaps its neighbour) instead of
    reaching past the volume, so every target slice is a real slice.

    Raises:
        InvalidInputError: If ``depth < n_out``.
    """
    if depth < n_out:
        raise InvalidInputError(f"a volume of {depth} slices is thinner than a {n_out}-slice target slab", path="depth")
    starts = np.arange(0, depth, n_out)
    starts[-1] = min(starts[-1], depth - n_out)
    return np.unique(starts)


def epoch_order(
    units: Sequence[np.ndarray],
    order: str,
    rng: np.random.Generator,
    foreground: Sequence[np.ndarray] | None = None,
    foreground_fraction: float = 0.5,
) -> np.ndarray:
    """The ``(case, position)`` table of one epoch.

    Args:
        units: Per case, ``int64 [n_i]`` positions (slice indices or slab starts).
        order: One of :data:`ORDERS`.
        rng: The epoch's generator.
        foreground: Per case, ``bool [n_i]``: whether the unit contains foreground
            (needed for ``"foreground"``).
        foreground_fraction: Probability that a ``"foreground"`` draw is a foreground unit.

    Returns:
        ``int64 [N, 2]``.
    """
    if order not in ORDERS:
        raise InvalidInputError(f"order must be one of {ORDERS}, got {order!r}", path="order")
    table = np.concatenate(
        [np.stack([np.full(len(u), i, np.int64), np.asarray(u, np.int64)], axis=1) for i, u in enumerate(units)]
    )
    if order == "volume":
        parts = []
        for i in rng.permutation(len(units)):
            u = np.asarray(units[i], np.int64)
            parts.append(np.stack([np.full(len(u), i, np.int64), rng.permutation(u)], axis=1))
        return np.concatenate(parts)
    if order == "uniform":
        return table[rng.permutation(len(table))]
    if foreground is None:
        raise InvalidInputError("order='foreground' needs labels to find foreground units", path="order")
    if not 0.0 <= foreground_fraction <= 1.0:
        raise InvalidInputError(f"must be in [0, 1], got {foreground_fraction}", path="foreground_fraction")
    fg = np.concatenate([np.asarray(f, bool) for f in foreground])
    fg_rows = np.flatnonzero(fg)
    if len(fg_rows) == 0 and foreground_fraction > 0:
        raise InvalidInputError("no case has any foreground: every label map is empty", path="order")
    n = len(table)
    pick_fg = rng.random(n) < foreground_fraction
    rows = rng.integers(0, n, size=n)
    if len(fg_rows):
        rows[pick_fg] = fg_rows[rng.integers(0, len(fg_rows), size=int(pick_fg.sum()))]
    return table[rows]


def foreground_coords(label: np.ndarray, max_points: int = 20000, seed: int = 0) -> np.ndarray:
    """``int64 [K, 3]`` foreground voxel indices of a label map, subsampled to ``max_points``."""
    coords = np.argwhere(np.asarray(label) > 0)
    if len(coords) > max_points:
        coords = coords[np.random.default_rng(seed).choice(len(coords), max_points, replace=False)]
    return coords.astype(np.int64)


def patch_centers(
    shapes: Sequence[Sequence[int]],
    fg_coords: Sequence[np.ndarray],
    n: int,
    foreground_fraction: float,
    rng: np.random.Generator,
    case_ids: Sequence[str] | None = None,
    empty_cases: str = "error",
) -> np.ndarray:
    """``int64 [n, 5]`` rows ``(case, z, y, x, is_foreground_draw)`` for one epoch.

    Args:
        shapes: Per case ``(D, H, W)``.
        fg_coords: Per case ``[K, 3]`` foreground voxels (:func:`foreground_coords`).
        n: Samples in the epoch.
        foreground_fraction: Fraction of patches centred on a foreground voxel (Bernoulli per draw).
        rng: The epoch's generator.
        case_ids: Names for errors.
        empty_cases: ``"error"``: a case without foreground while ``foreground_fraction > 0`` is an
            error; ``"random"``: its foreground draws fall back to uniform centres.

    Raises:
        InvalidInputError: Naming the first case whose mask is empty (policy ``"error"``).
    """
    if empty_cases not in EMPTY_CASE_POLICIES:
        raise InvalidInputError(f"empty_cases must be one of {EMPTY_CASE_POLICIES}, got {empty_cases!r}", path="empty_cases")
    if not 0.0 <= foreground_fraction <= 1.0:
        raise InvalidInputError(f"must be in [0, 1], got {foreground_fraction}", path="foreground_fraction")
    n_cases = len(shapes)
    if foreground_fraction > 0 and empty_cases == "error":
        for i, coords in enumerate(fg_coords):
            if len(coords) == 0:
                name = case_ids[i] if case_ids is not None else str(i)
                raise InvalidInputError(
                    "label mask is empty but the patch sampler draws foreground centres "
                    f"(foreground_fraction={foreground_fraction}); pass empty_cases='random' to allow it",
                    path=name,
                )
    cases = np.concatenate([rng.permutation(n_cases) for _ in range(-(-n // n_cases))])[:n]
    fg_draw = rng.random(n) < foreground_fraction
    uniform = rng.random((n, 3))
    out = np.zeros((n, 5), np.int64)
    for k, (i, want_fg) in enumerate(zip(cases, fg_draw)):
        coords = fg_coords[i]
        if want_fg and len(coords):
            out[k, 1:4] = coords[rng.integers(0, len(coords))]
            out[k, 4] = 1
        else:
            out[k, 1:4] = np.minimum((uniform[k] * np.asarray(shapes[i])).astype(np.int64), np.asarray(shapes[i]) - 1)
        out[k, 0] = i
    return out
