"""Seed intensity rules at their range ends, and the seed-002 cascade combinations."""

import numpy as np
import pytest

from tfmedseg.errors import InvalidInputError
from tfmedseg.preprocessing import cascade, intensity


def test_seed002_clamp_ends():
    out = intensity.hu_to_unit(np.array([-3000.0, -200.0, -100.0, 0.0, 200.0, 3000.0]))
    np.testing.assert_array_equal(out, np.array([0.0, 0.0, 0.25, 0.5, 1.0, 1.0], np.float32))
    assert out.dtype == np.float32


def test_seed003_window_then_normalise():
    out = intensity.liver_lesion_window(np.array([-1000.0, -250.0, 0.0, 125.0, 250.0, 999.0]))
    np.testing.assert_allclose(out, [-1.0, -1.0, 0.0, 0.5, 1.0, 1.0], atol=1e-7)


def test_seed004_ct_and_zscore():
    np.testing.assert_allclose(intensity.hecktor_ct(np.array([-2000.0, -1024.0, 0.0, 512.0, 1024.0, 4000.0])),
                               [-1, -1, 0, 0.5, 1, 1], atol=1e-7)
    rng = np.random.default_rng(0)
    patch = rng.normal(7.0, 3.0, size=(8, 8, 8))
    z = intensity.zscore(patch)
    assert abs(float(z.mean())) < 1e-5 and abs(float(z.std()) - 1.0) < 1e-5
    np.testing.assert_array_equal(intensity.zscore(np.full((4, 4), 5.0)), np.zeros((4, 4), np.float32))
    with pytest.raises(InvalidInputError, match="mask"):
        intensity.zscore(patch, mask=np.zeros_like(patch, bool))


def test_seed000_display_window_both_readings():
    hu = np.array([-1000.0, -45.0, 30.0, 105.0, 150.0])
    np.testing.assert_array_equal(intensity.ct_display_window(hu), [0, 0, 128, 255, 255])  # L30/W150
    np.testing.assert_array_equal(intensity.ct_display_window(hu, level=None), [0, 0, 0, 159, 255])  # [30, 150]
    assert intensity.ct_display_window(hu).dtype == np.uint8
    with pytest.raises(InvalidInputError, match="width"):
        intensity.window_range(30, 0)


def test_cascade_combinations():
    ct = np.array([[0.2, 0.4], [0.6, 0.8]], np.float32)
    liver = np.array([[0, 1], [1, 0]])
    np.testing.assert_allclose(cascade.mask_out(ct, liver), [[0, 0.4], [0.6, 0]])
    np.testing.assert_allclose(cascade.add_mask(ct, liver), [[0.2, 1.4], [1.6, 0.8]])
    stack = np.repeat(ct[..., None], 9, axis=-1)
    np.testing.assert_allclose(cascade.combine(stack, liver, "mask")[..., 4], [[0, 0.4], [0.6, 0]])
    with pytest.raises(InvalidInputError, match="mode"):
        cascade.combine(ct, liver, "multiply")
    with pytest.raises(InvalidInputError, match="liver"):
        cascade.mask_out(ct, np.ones((3, 3)))
