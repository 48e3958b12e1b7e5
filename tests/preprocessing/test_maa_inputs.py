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
    no_fusion = prepare_maa_inputs(ct, display, label, size=32, fusion=False)  # no SSIM: each display's own slice
    np.testing.assert_array_equal(no_fusion.fused_partner, np.arange(6))
    assert (no_fusion.match_ssim == 1).all() and np.array_equal(no_fusion.display, inputs.display)
    unadjusted = prepare_maa_inputs(ct, display, label, size=32, adjust_rg=False, match="index")
    assert not unadjusted.abnormal and unadjusted.display[..., 0].max() < inputs.display[..., 0].max()


def test_rgb_adjustment_variant_of_table_12():
    """An abnormal study whose hot spots reach 150-200 in R, G and B: "rgb" stretches B as well."""
    rgb = np.zeros((2, 8, 8, 3), np.uint8)
    rgb[..., 2] = 90
    rgb[:, 2:4, 2:4] = (180, 160, 170)
    rg, flag_rg = adjust_rg_histogram(rgb, channels="rg")
    full, flag_rgb = adjust_rg_histogram(rgb, channels="rgb")
    assert flag_rg and flag_rgb
    np.testing.assert_array_equal(full[..., :2], rg[..., :2])  # R,G as the R,G variant
    assert rg[0, 2, 2].tolist() == [213, 171, 170] and full[0, 2, 2].tolist() == [213, 171, 192]
    assert full[0, 0, 0].tolist() == [0, 0, 90]  # below 150 untouched
    with pytest.raises(Exception, match="channels"):
        adjust_rg_histogram(rgb, channels="b")


def test_spect_based_matching_of_table_15(patient):
    """SPECT/CT base: each display image (here of CT slices 1, 3, 4, 5, stored shuffled) gets its most
    similar CT slice of the whole CT; its labels are the display masks, predictions go to its own slice."""
    ct, label, display = patient
    rng = np.random.default_rng(0)  # structure that tells the slices apart (the fixture's are alike)
    texture = np.where(ct > -500, rng.normal(0.0, 40.0, ct.shape), 0.0).astype(np.float32)
    ct = ct + np.kron(texture[:, ::4, ::4], np.ones((1, 4, 4), np.float32))
    fused = fuse_display(ct, np.where(label == 2, 4.0, np.where(label > 0, 1.0, 0.0)).astype(np.float32), 7.0)
    order = np.array([3, 1, 5, 4])
    sub = {"slices": order, "fused": fused[order], "liver": display["liver"][order], "tumor": display["tumor"][order]}
    inputs = prepare_maa_inputs(ct, sub, label, size=32, match="ssim_spect")
    np.testing.assert_array_equal(inputs.fused_ct, order)
    np.testing.assert_array_equal(inputs.fused_slices, order)
    np.testing.assert_array_equal(inputs.fused_partner, np.arange(4))
    np.testing.assert_array_equal(inputs.fused_masks, inputs.display_masks)
    ct_based = prepare_maa_inputs(ct, sub, label, size=32, match="ssim")
    assert len(ct_based.fused) == len(inputs.fused) == 4
    np.testing.assert_array_equal(order[ct_based.fused_partner], order)
    with pytest.raises(Exception, match="match must be one of"):
        prepare_maa_inputs(ct, sub, label, size=32, match="spect")


def test_ct_only_patient_for_the_3dircadb_liver_stage(patient):
    from tfmedseg.preprocessing.maa_inputs import prepare_ct_slices

    ct, label, display = patient
    ct_only = prepare_ct_slices(ct, label, size=32)
    full = prepare_maa_inputs(ct, display, label, size=32)
    np.testing.assert_array_equal(ct_only.ct, full.ct)
    np.testing.assert_array_equal(ct_only.masks, full.ct_masks)
    assert prepare_ct_slices(ct, None, size=32).masks is None
