"""Numpy extractors at the volume ends and the epoch orders."""

import numpy as np
import pytest

from tfmedseg.data import extract, sampling
from tfmedseg.errors import InvalidInputError


def _volume(d=6, h=3, w=2):
    # slice k is filled with k + 1, so a zero means padding
    image = np.broadcast_to((np.arange(d, dtype=np.float32) + 1)[:, None, None, None], (d, h, w, 1)).copy()
    label = np.broadcast_to((np.arange(d) % 3)[:, None, None], (d, h, w)).astype(np.int32).copy()
    return image, label


def test_stack25d_middle_slice_and_zero_padding_at_both_ends():
    image, label = _volume()
    x, y = extract.stack_25d(image, label, 0)
    assert x.shape == (3, 2, 9) and y.shape == (3, 2, 1)
    np.testing.assert_array_equal(x[0, 0], [0, 0, 0, 0, 1, 2, 3, 4, 5])
    assert (y == 0).all()
    x, y = extract.stack_25d(image, label, 5)
    np.testing.assert_array_equal(x[2, 1], [2, 3, 4, 5, 6, 0, 0, 0, 0])
    assert (y == 2).all()
    two = np.concatenate([image, -image], axis=-1)
    x2, _ = extract.stack_25d(two, label, 5, n_slices=3)
    np.testing.assert_array_equal(x2[0, 0], [5, -5, 6, -6, 0, 0])  # slice-major channels
    with pytest.raises(InvalidInputError, match="n_slices"):
        extract.stack_25d(image, label, 0, n_slices=8)


def test_slab3d_targets_and_context_padding():
    image, label = _volume(d=10)
    starts = sampling.slab_starts(10, 4)
    np.testing.assert_array_equal(starts, [0, 4, 6])  # the last slab ends at the last slice
    x, y = extract.slab_3d(image, label, 0)
    np.testing.assert_array_equal(x[:, 0, 0, 0], [0, 0, 1, 2, 3, 4, 5, 6])
    np.testing.assert_array_equal(y[:, 0, 0, 0], [0, 1, 2, 0])
    x, y = extract.slab_3d(image, label, 6)
    np.testing.assert_array_equal(x[:, 0, 0, 0], [5, 6, 7, 8, 9, 10, 0, 0])
    np.testing.assert_array_equal(y[:, 0, 0, 0], [6 % 3, 7 % 3, 8 % 3, 9 % 3])
    with pytest.raises(InvalidInputError, match="thinner"):
        sampling.slab_starts(3, 4)


def test_patch3d_centre_and_padding():
    image = np.arange(4 * 4 * 4, dtype=np.float32).reshape(4, 4, 4, 1) + 1
    label = np.zeros((4, 4, 4), np.int32)
    label[0, 0, 0] = 7
    x, y = extract.patch_3d(image, label, (0, 0, 0), (4, 4, 4))
    assert x[2, 2, 2, 0] == 1 and y[2, 2, 2, 0] == 7
    assert (x[:2] == 0).all() and (y[:2] == 0).all()
    np.testing.assert_array_equal(x[2:, 2:, 2:, 0], image[:2, :2, :2, 0])


def test_volume_order_every_slice_once_volume_by_volume():
    units = [np.arange(5), np.arange(3), np.arange(4)]
    table = sampling.epoch_order(units, "volume", sampling.epoch_rng(3, 0))
    assert len(table) == 12
    runs = [k for k, i in enumerate(table[:, 0]) if k == 0 or table[k - 1, 0] != i]
    assert len(runs) == 3  # each volume is one contiguous run
    for i, u in enumerate(units):
        np.testing.assert_array_equal(np.sort(table[table[:, 0] == i, 1]), u)
    again = sampling.epoch_order(units, "volume", sampling.epoch_rng(3, 0))
    np.testing.assert_array_equal(table, again)
    other = sampling.epoch_order(units, "volume", sampling.epoch_rng(3, 1))
    assert not np.array_equal(table, other)
    uni = sampling.epoch_order(units, "uniform", sampling.epoch_rng(3, 0))
    assert sorted(map(tuple, uni)) == sorted(map(tuple, table))
    with pytest.raises(InvalidInputError, match="order"):
        sampling.epoch_order(units, "random", sampling.epoch_rng(3, 0))


def test_foreground_weighted_slice_order_ratio():
    units = [np.arange(100)]
    fg = [np.arange(100) < 5]  # 5 % of the slices hold foreground
    table = sampling.epoch_order(units * 10, "foreground", sampling.epoch_rng(0, 0), fg * 10, 0.5)
    frac = np.mean(table[:, 1] < 5)
    assert abs(frac - (0.5 + 0.5 * 0.05)) < 0.04  # 0.525 expected over 1000 draws
    with pytest.raises(InvalidInputError, match="foreground"):
        sampling.epoch_order(units, "foreground", sampling.epoch_rng(0, 0), [np.zeros(100, bool)], 0.5)


def test_patch_centres_foreground_fraction_and_empty_mask():
    label = np.zeros((20, 20, 20), np.int32)
    label[3:5, 3:5, 3:5] = 1  # 8 of 8000 voxels
    coords = [sampling.foreground_coords(label)]
    rows = sampling.patch_centers([label.shape], coords, 2000, 0.33, sampling.epoch_rng(1, 0))
    on_fg = label[rows[:, 1], rows[:, 2], rows[:, 3]] > 0
    assert abs(on_fg.mean() - 0.33) < 0.035
    np.testing.assert_array_equal(on_fg[rows[:, 4] == 1], True)
    with pytest.raises(InvalidInputError, match="empty") as err:
        sampling.patch_centers([label.shape] * 2, [coords[0], np.zeros((0, 3), np.int64)], 4, 0.5,
                               sampling.epoch_rng(0, 0), case_ids=["ok", "case-empty"])
    assert err.value.path == "case-empty"
    rows = sampling.patch_centers([label.shape], [np.zeros((0, 3), np.int64)], 10, 0.5, sampling.epoch_rng(0, 0),
                                  empty_cases="random")
    assert (rows[:, 4] == 0).all()
