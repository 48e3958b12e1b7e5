"""Resampling to spacing / shape, affines, inverse mapping and world-coordinate resampling."""

import numpy as np
import pytest

from tfmedseg.errors import InvalidInputError
from tfmedseg.io.volume import Volume, canonical_affine
from tfmedseg.preprocessing import resample


def _vol(array, spacing=(2.0, 0.8, 0.8), origin=(10.0, -20.0, 30.0)):
    return Volume(array, spacing, canonical_affine(spacing, origin), "CT")


def _world(vol, index):
    return (vol.affine @ np.r_[np.asarray(index, float), 1.0])[:3]


def test_spacing_shape_and_affine_keep_field_of_view(rng):
    vol = _vol(rng.normal(size=(6, 32, 32)).astype(np.float32))
    out = resample.resample_to_spacing(vol, (None, 1.6, 1.6))
    assert out.shape == (6, 16, 16)
    assert out.spacing == pytest.approx((2.0, 1.6, 1.6))
    # new voxel (0,0,0) centre lies half a new voxel inside the old outer edge: old index (0, 0.5, 0.5)
    np.testing.assert_allclose(_world(out, (0, 0, 0)), _world(vol, (0, 0.5, 0.5)))
    np.testing.assert_allclose(_world(out, (5, 15, 15)), _world(vol, (5, 30.5, 30.5)))
    # linear downsampling by 2 of a linear ramp = mean of the pair
    ramp = _vol(np.broadcast_to(np.arange(32, dtype=np.float32), (2, 32, 32)).copy())
    small = resample.resize_inplane(ramp, (32, 16))
    np.testing.assert_allclose(small.array[0, 0, :3], [0.5, 2.5, 4.5], atol=1e-5)


def test_nearest_label_round_trip_exact_for_integer_factor(rng):
    coarse = rng.integers(0, 3, size=(4, 8, 8)).astype(np.uint8)
    label = np.repeat(np.repeat(coarse, 2, axis=1), 2, axis=2)  # constant on 2x2 blocks
    vol = _vol(label)
    down = resample.resize_inplane(vol, (8, 8), mode="nearest")
    np.testing.assert_array_equal(down.array, coarse)
    back = resample.restore_to_source(down.array, down, mode="nearest")
    np.testing.assert_array_equal(back.array, label)
    assert back.shape == vol.shape and back.spacing == vol.spacing
    np.testing.assert_allclose(back.affine, vol.affine)
    assert back.array.dtype == np.uint8


def test_seed002_512_to_256_and_back_probabilities(rng):
    prob = np.zeros((2, 16, 16), np.float32)
    prob[:, 4:12, 4:12] = 1.0
    vol = _vol(prob)
    down = resample.resize_inplane(vol, (8, 8))
    back = resample.restore_array(down.array[..., None], down, mode="linear")
    assert back.shape == (2, 16, 16, 1)
    np.testing.assert_array_equal(back[..., 0] > 0.5, prob > 0.5)


def test_onehot_keeps_label_set_and_matches_nearest_on_blocks(rng):
    lab = np.zeros((4, 16, 16), np.int32)
    lab[:, 2:10, 2:10] = 1
    lab[:, 6:14, 6:14] = 2
    out = resample.resize_volume(_vol(lab), (4, 8, 8), mode="onehot")
    assert set(np.unique(out.array)) == {0, 1, 2}
    np.testing.assert_array_equal(out.array[0, 4], [0, 1, 1, 2, 2, 2, 2, 0])


def test_bad_spacing_and_mode():
    vol = _vol(np.zeros((2, 4, 4)))
    with pytest.raises(InvalidInputError, match="target_spacing"):
        resample.resample_to_spacing(vol, (1.0, 0.0, 1.0))
    with pytest.raises(InvalidInputError, match="target_spacing"):
        resample.resample_to_spacing(vol, (1.0, -2.0, 1.0))
    with pytest.raises(InvalidInputError, match="mode"):
        resample.resize_volume(vol, (2, 2, 2), mode="cubic")
    with pytest.raises(InvalidInputError, match="resampled_from"):
        resample.restore_to_source(np.zeros((2, 4, 4)), vol)


def test_world_resampling_identity_and_shift():
    arr = np.arange(4 * 5 * 6, dtype=np.float32).reshape(4, 5, 6)
    vol = _vol(arr, spacing=(1.0, 1.0, 1.0))
    same = resample.resample_to_reference(vol, vol.affine, vol.shape)
    np.testing.assert_allclose(same, arr)
    shifted = vol.affine.copy()
    shifted[:3, 3] = _world(vol, (1, 0, 0))  # reference grid starts one slice further up
    out = resample.resample_to_reference(vol, shifted, (3, 5, 6), mode="nearest")
    np.testing.assert_array_equal(out, arr[1:])
