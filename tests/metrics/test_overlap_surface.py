"""Overlap and surface metrics against medpy 0.5.2 and hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest
from medpy.metric import binary as mp
from scipy import ndimage

from tfmedseg.errors import InvalidInputError
from tfmedseg.metrics import (
    LITS_LARGE,
    compute_assd,
    compute_dice,
    compute_global_dice,
    compute_hausdorff_distance,
    compute_hd95,
    compute_iou,
    compute_mssd,
    compute_rvd,
    compute_surface_distances,
    compute_voe,
)


def _blob(rng, shape, n_seeds=3, iters=3):
    m = np.zeros(shape, bool)
    idx = tuple(rng.integers(2, s - 2, n_seeds) for s in shape)
    m[idx] = True
    return ndimage.binary_dilation(m, iterations=iters)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_medpy_on_random_blobs_anisotropic(seed):
    rng = np.random.default_rng(seed)
    shape = (12, 20, 18)
    spacing = (2.5, 0.7, 0.9)
    p, y = _blob(rng, shape), _blob(rng, shape)
    assert compute_dice(p, y) == pytest.approx(mp.dc(p, y), abs=1e-12)
    assert compute_iou(p, y) == pytest.approx(mp.jc(p, y), abs=1e-12)
    assert compute_rvd(p, y) == pytest.approx(mp.ravd(p, y), abs=1e-12)
    assert compute_assd(p, y, spacing=spacing) == pytest.approx(mp.assd(p, y, voxelspacing=spacing), rel=1e-12)
    assert compute_mssd(p, y, spacing=spacing) == pytest.approx(mp.hd(p, y, voxelspacing=spacing), rel=1e-12)
    assert compute_hd95(p, y, spacing=spacing) == pytest.approx(mp.hd95(p, y, voxelspacing=spacing), rel=1e-12)
    # spacing matters: the same masks on an isotropic grid give another ASSD
    assert compute_assd(p, y, spacing=1.0) != pytest.approx(compute_assd(p, y, spacing=spacing))


def test_matches_medpy_connectivity_3_and_2d():
    rng = np.random.default_rng(7)
    p, y = _blob(rng, (30, 25), 4, 2), _blob(rng, (30, 25), 4, 2)
    sp = (0.8, 1.7)
    assert compute_assd(p, y, spacing=sp, connectivity=2) == pytest.approx(
        mp.assd(p, y, voxelspacing=sp, connectivity=2), rel=1e-12)
    assert compute_mssd(p, y, spacing=sp, connectivity=2) == pytest.approx(
        mp.hd(p, y, voxelspacing=sp, connectivity=2), rel=1e-12)


def test_single_voxel_objects_hand_computed():
    a = np.zeros((4, 6, 6), bool)
    b = np.zeros_like(a)
    a[1, 1, 1] = True
    b[3, 4, 1] = True
    sp = (3.0, 0.5, 2.0)
    expect = np.hypot(2 * 3.0, 3 * 0.5)  # |dz|=2 slices, |dy|=3 rows
    assert compute_assd(a, b, spacing=sp) == pytest.approx(expect)
    assert compute_mssd(a, b, spacing=sp) == pytest.approx(expect)
    assert compute_hd95(a, b, spacing=sp) == pytest.approx(expect)
    assert compute_dice(a, b) == 0.0
    assert compute_dice(a, a) == 1.0
    assert compute_assd(a, a, spacing=sp) == 0.0


def test_shifted_cubes_hand_computed():
    # 4x4x4 cube shifted by 2 voxels along W (spacing 1.5 mm): overlap 4x4x2.
    a = np.zeros((8, 8, 10), bool)
    a[2:6, 2:6, 2:6] = True
    b = np.roll(a, 2, axis=2)
    assert compute_dice(a, b) == pytest.approx(2 * 32 / 128)
    assert compute_iou(a, b) == pytest.approx(32 / 96)
    assert compute_voe(a, b) == pytest.approx(1 - 32 / 96)
    assert compute_rvd(a, b) == 0.0
    # Each cube's surface voxel lies at most 2 voxels (3 mm) along W from the other's surface.
    assert compute_mssd(a, b, spacing=(1.0, 1.0, 1.5)) == pytest.approx(3.0)
    d_p, d_r = compute_surface_distances(a, b, spacing=(1.0, 1.0, 1.5))
    assert d_p.size == d_r.size == 56  # 4^3 - 2^3 surface voxels of each cube
    # By symmetry both directions are equal; brute force over the surface-voxel definition
    # (a voxel with a face neighbour outside the object), independent of scipy.
    assert np.allclose(np.sort(d_p), np.sort(d_r))
    sp = np.array([1.0, 1.0, 1.5])

    def surf(m):
        pts = []
        for z, y, x in zip(*np.nonzero(m)):
            for dz, dy, dx in [(1, 0, 0), (-1, 0, 0), (0, 1, 0), (0, -1, 0), (0, 0, 1), (0, 0, -1)]:
                if not m[z + dz, y + dy, x + dx]:
                    pts.append((z, y, x))
                    break
        return np.array(pts, float) * sp

    sa, sb = surf(a), surf(b)
    brute = np.sqrt(((sa[:, None] - sb[None]) ** 2).sum(-1)).min(1)
    assert np.allclose(np.sort(d_p), np.sort(brute))
    assert compute_assd(a, b, spacing=sp) == pytest.approx(brute.mean())


def test_rvd_sign_and_empty_conventions():
    y = np.zeros((5, 5), bool)
    y[1:3, 1:3] = True  # 4 voxels
    p = np.zeros_like(y)
    p[1:4, 1:3] = True  # 6 voxels
    assert compute_rvd(p, y) == pytest.approx(0.5)
    assert compute_rvd(y, p) == pytest.approx(-1 / 3)
    e = np.zeros_like(y)
    assert compute_dice(e, e) == 1.0 and compute_iou(e, e) == 1.0 and compute_voe(e, e) == 0.0
    assert compute_dice(p, e) == 0.0 and compute_dice(e, y) == 0.0
    assert np.isnan(compute_dice(e, e, ignore_empty=True)) and np.isnan(compute_dice(p, e, ignore_empty=True))
    assert compute_dice(e, y, ignore_empty=True) == 0.0
    assert compute_rvd(e, e) == 0.0 and compute_rvd(p, e) == np.inf and compute_rvd(e, y) == -1.0
    assert np.isnan(compute_assd(e, e, spacing=1.0))
    assert compute_assd(p, e, spacing=1.0) == np.inf
    assert compute_hd95(e, y, spacing=1.0) == np.inf
    assert compute_mssd(e, y, spacing=1.0) == np.inf
    assert LITS_LARGE == 9001.0


def test_global_dice_pools_voxels():
    a = np.zeros((10,), bool)
    a[:2] = True
    b = np.zeros((10,), bool)
    b[:8] = True
    # per-case dice: (1.0 + 1.0)/2 ; pooled over a small and a large case differs from per-case mean
    p1, y1 = a, a
    p2, y2 = np.zeros(10, bool), b
    assert compute_global_dice([p1, p2], [y1, y2]) == pytest.approx(2 * 2 / (4 + 8))
    assert compute_global_dice([np.zeros(3)], [np.zeros(3)]) == 1.0
    with pytest.raises(InvalidInputError, match="ys"):
        compute_global_dice([p1], [y1, y2])


def test_bad_inputs_name_the_argument():
    a = np.ones((4, 4), bool)
    with pytest.raises(InvalidInputError, match="y: must have the same shape"):
        compute_dice(a, np.ones((4, 5)))
    with pytest.raises(InvalidInputError, match="spacing: is required"):
        compute_assd(a, a, spacing=None)
    with pytest.raises(InvalidInputError, match="spacing: must have one value per axis"):
        compute_hd95(a, a, spacing=(1.0, 1.0, 1.0))
    with pytest.raises(InvalidInputError, match="spacing: must be finite and > 0"):
        compute_mssd(a, a, spacing=(1.0, 0.0))
    nan = np.zeros((4, 4))
    nan[0, 0] = np.nan
    with pytest.raises(InvalidInputError, match="y_pred: contains 1 NaN"):
        compute_dice(nan, a)
    with pytest.raises(InvalidInputError, match="percentile"):
        compute_hausdorff_distance(a, a, spacing=1.0, percentile=150)
