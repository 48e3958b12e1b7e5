"""Seed 000 inputs of one patient: crop, window, R,G adjustment of an abnormal study, SSIM matching, fusion."""

from __future__ import annotations

import numpy as np
import pytest

from tfmedseg.datasets.phantoms.maa import fuse_display
from tfmedseg.inference.maa import stack_to_volume
from tfmedseg.metrics.overlap import compute_dice
from tfmedseg.preprocessing.maa_inputs import prepare_maa_inputs
from tfmedseg.preprocessing.spect_ct import adjust_rg_histogram, is_abnormal_histogram


@pytest.fixture(scope="module")
def patient():
    """6 slices of 40 x 40: a body ellipse, a liver disc growing with z, a hot tumour; display window
    set high so that the hot spot stays below 200 in R and G (an "abnormal" study)."""
    d, h, w = 6, 40, 40
    yy, xx = np.mgrid[:h, :w]
    ct = np.full((d, h, w), -1000.0, np.float32)
    label = np.zeros((d, h, w), np.uint8)
    spect = np.zeros((d, h, w), np.float32)
    for k in range(d):
        body = ((yy - 20) / 14.0) ** 2 + ((xx - 20) / 17.0) ** 2 < 1
        liver = (yy - 18) ** 2 + (xx - 14) ** 2 < (3 + k) ** 2
        tumour = (yy - 18) ** 2 + (xx - 14) ** 2 < (1 + k // 2) ** 2
        ct[k][body] = 20.0
        ct[k][liver] = 60.0
        label[k][liver] = 1
        label[k][tumour] = 2
        spect[k][liver] = 1.0
        spect[k][tumour] = 4.0
    fused = fuse_display(ct, spect, display_max=7.0)
    display = {"slices": np.arange(d), "fused": fused, "liver": label > 0, "tumor": label == 2}
    return ct, label, display


def test_histogram_adjustment_of_an_abnormal_study(patient):
    _, _, display = patient
    rgb = display["fused"]
    assert is_abnormal_histogram(rgb)
    adjusted, abnormal = adjust_rg_histogram(rgb)
    assert abnormal
    hot = rgb[..., 0] >= 150
    assert adjusted[..., 0][hot].max() > rgb[..., 0][hot].max()  # stretched up toward 255
    np.testing.assert_array_equal(adjusted[..., 2], rgb[..., 2])  # B untouched
    np.testing.assert_array_equal(adjusted[~hot & (rgb[..., 1] < 150)][..., 0], rgb[~hot & (rgb[..., 1] < 150)][..., 0])


def test_prepared_inputs_and_inverse_crop(patient):
    ct, label, display = patient
    inputs = prepare_maa_inputs(ct, display, label, size=32)
    assert inputs.ct.shape == (6, 32, 32, 1) and 0 <= inputs.ct.min() and inputs.ct.max() <= 1
    assert inputs.display.shape == inputs.fused.shape == (6, 32, 32, 3)
    assert inputs.abnormal
    # CT-based SSIM matching finds each slice's own display image (liver and tumour grow with z)
    np.testing.assert_array_equal(inputs.fused_partner, np.arange(6))
    assert inputs.match_ssim.min() > 0.5
    # window 30 / 150: liver (60 HU) maps to (60 + 45) / 150
    inner = inputs.ct_masks[..., 0] > 0
    assert np.median(inputs.ct[..., 0][inner]) == pytest.approx(105 / 150, abs=0.02)
    back = stack_to_volume(inputs.crop, inputs.ct_masks, np.arange(6), 6)
    assert compute_dice(back[..., 0], label > 0) > 0.9
    assert compute_dice(back[..., 1], label == 2) > 0.75
    assert inputs.display_masks.shape == (6, 32, 32, 2)
    np.testing.assert_array_equal(inputs.fused_masks, inputs.ct_masks)
    unadjusted = prepare_maa_inputs(ct, display, label, size=32, adjust_rg=False, match="index")
    assert not unadjusted.abnormal and unadjusted.display[..., 0].max() < inputs.display[..., 0].max()
