"""SPECT -> CT world resampling, SSIM slice matching, R,G histogram rule, fusion arithmetic."""

import numpy as np
import pytest

from tfmedseg.errors import InvalidInputError
from tfmedseg.io.volume import Volume, canonical_affine
from tfmedseg.preprocessing import spect_ct as S


def test_point_source_lands_on_right_ct_voxel():
    ct_sp, sp_sp = (2.0, 1.0, 1.0), (4.0, 4.0, 4.0)
    target = np.array([9, 14, 21])  # CT voxel of the source
    spect_aff = canonical_affine(sp_sp, (-14.0, -16.0, 1.0))
    sp_idx = np.array([5, 4, 6])  # SPECT voxel of the source
    world = (spect_aff @ np.r_[sp_idx, 1.0])[:3]
    ct_aff = canonical_affine(ct_sp)
    ct_aff[:3, 3] = world - ct_aff[:3, :3] @ target
    ct = Volume(np.zeros((16, 32, 32), np.float32), ct_sp, ct_aff, "CT")
    arr = np.zeros((10, 12, 12), np.float32)
    arr[tuple(sp_idx)] = 1000.0
    out = S.resample_spect_to_ct(Volume(arr, sp_sp, spect_aff, "NM"), ct)
    assert out.shape == ct.shape and out.spacing == ct.spacing
    np.testing.assert_array_equal(np.unravel_index(np.argmax(out.array), out.shape), target)
    assert out.array.max() == pytest.approx(1000.0)
    with pytest.raises(InvalidInputError, match="frame of reference"):
        S.resample_spect_to_ct(Volume(arr, sp_sp, spect_aff, "NM", {"frame_of_reference_uid": "1.2"}),
                               Volume(ct.array, ct_sp, ct.affine, "CT", {"frame_of_reference_uid": "1.3"}))


def test_ssim_matching_finds_shuffled_slices(rng):
    stack = (rng.random((5, 24, 24)) * 255).astype(np.uint8)
    perm = np.array([3, 0, 4, 1, 2])
    spect = stack[perm]
    noisy = np.clip(stack.astype(int) + rng.integers(-5, 6, stack.shape), 0, 255).astype(np.uint8)
    idx, score = S.match_slices_ssim(noisy, spect)
    np.testing.assert_array_equal(perm[idx], np.arange(5))
    assert (score > 0.8).all()
    rgb_idx, _ = S.match_slices_ssim(np.repeat(noisy[..., None], 3, -1), np.repeat(spect[..., None], 3, -1))
    np.testing.assert_array_equal(rgb_idx, idx)


def test_histogram_rule_and_stretch():
    normal = np.zeros((2, 8, 8, 3), np.uint8)
    normal[:, 2:4, 2:4, 0] = 250
    abnormal = np.zeros((2, 8, 8, 3), np.uint8)
    abnormal[:, 2:4, 2:4, 0] = 180
    abnormal[:, 2:4, 2:4, 1] = 160
    abnormal[..., 2] = 90
    assert not S.is_abnormal_histogram(normal) and S.is_abnormal_histogram(abnormal)
    assert not S.is_abnormal_histogram(np.zeros((4, 4, 3), np.uint8))
    adj, flag = S.adjust_rg_histogram(abnormal)
    assert flag
    # 180 -> 150 + 30 * 105 / 50 = 213; 160 -> 171; B untouched; below 150 untouched
    assert adj[0, 2, 2].tolist() == [213, 171, 90] and adj[0, 0, 0].tolist() == [0, 0, 90]
    same, flag = S.adjust_rg_histogram(normal)
    assert not flag and np.array_equal(same, normal)
    with pytest.raises(InvalidInputError, match="rgb"):
        S.stretch_rg(np.zeros((4, 4, 3), np.float32))


def test_fusion_matches_add_weighted():
    ct = np.array([[0, 10, 255, 100]], np.uint8)
    sp = np.array([[0, 21, 255, 50]], np.uint8)
    np.testing.assert_array_equal(S.fuse_weighted(ct, sp), [[0, 16, 255, 75]])
    np.testing.assert_array_equal(S.fuse_weighted(ct, sp, 1.0, 1.0), [[0, 31, 255, 150]])  # saturates
    np.testing.assert_array_equal(S.fuse_weighted(ct, sp, 0.3, 0.7, gamma=1.0), [[1, 19, 255, 66]])
    rgb = np.stack([sp, sp, sp // 2], -1)
    fused = S.fuse_weighted(ct, rgb)
    assert fused.shape == (1, 4, 3) and fused[0, 3].tolist() == [75, 75, 62]
    with pytest.raises(InvalidInputError, match="spect"):
        S.fuse_weighted(ct, np.zeros((2, 4), np.uint8))
