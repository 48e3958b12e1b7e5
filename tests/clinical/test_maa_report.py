"""Seed 000 clinical output on a hand-built SPECT phantom with known counts: TLR, volumes, doses, GTM, report."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import ndimage

from tfmedseg.clinical.maa_report import (
    largest_tumour_slice,
    patient_dosimetry,
    write_patient_report,
)
from tfmedseg.clinical.partial_volume import effective_sigma_mm, gtm_concentrations
from tfmedseg.clinical.sirt import DOSE_GY_KG_PER_GBQ

SPACING = (2.0, 2.0, 2.0)  # mm: 8 ul voxels


@pytest.fixture
def phantom():
    """Liver block 10 x 20 x 20 voxels (64 ml) at 10 counts / voxel, a 4 x 5 x 5 tumour (0.8 ml) at 40."""
    shape = (16, 32, 32)
    liver = np.zeros(shape, bool)
    liver[3:13, 6:26, 6:26] = True
    tumour = np.zeros(shape, bool)
    tumour[5:9, 10:15, 10:15] = True
    counts = np.where(liver, 10.0, 0.0)
    counts[tumour] = 40.0
    return counts, liver, tumour


def test_tlr_volumes_and_partition_doses_on_known_counts(phantom):
    counts, liver, tumour = phantom
    rec = patient_dosimetry(counts, liver, tumour, SPACING, lung_shunt=0.1, target_normal_dose_gy=40.0)
    assert rec["tlr"] == pytest.approx(4.0) and rec["tlr_method"] == "uncorrected"
    assert rec["volume_tumour_ml"] == pytest.approx(100 * 0.008)
    assert rec["volume_normal_ml"] == pytest.approx((4000 - 100) * 0.008)
    m_t, m_n = 0.8 * 1.03e-3, 31.2 * 1.03e-3
    activity = 40.0 * (4.0 * m_t + m_n) / (DOSE_GY_KG_PER_GBQ * 0.9)
    assert rec["activity_gbq"] == pytest.approx(activity)
    doses = rec["doses"]
    assert doses["dose_normal_gy"] == pytest.approx(40.0)
    assert doses["dose_tumour_gy"] == pytest.approx(160.0)
    assert doses["dose_lung_gy"] == pytest.approx(DOSE_GY_KG_PER_GBQ * activity * 0.1)


def test_no_tumour_gives_no_prescription(phantom):
    counts, liver, _ = phantom
    rec = patient_dosimetry(counts, liver, np.zeros_like(liver), SPACING, lung_shunt=0.1, target_normal_dose_gy=40.0)
    assert rec["tlr"] is None and rec["activity_gbq"] is None and "tumour" in rec["note"]


def test_gtm_undoes_the_partial_volume_loss(phantom):
    counts, liver, tumour = phantom
    sigma_mm = (5.0, 5.0, 5.0)
    blurred = ndimage.gaussian_filter(counts, [s / v for s, v in zip(sigma_mm, SPACING)], mode="constant")
    raw = patient_dosimetry(blurred, liver, tumour, SPACING, lung_shunt=0.0, target_normal_dose_gy=40.0)
    assert raw["tlr"] < 3.0  # a 0.8 ml tumour keeps well under its true ratio of 4
    body = np.ones_like(liver)
    rec = patient_dosimetry(blurred, liver, tumour, SPACING, lung_shunt=0.0, target_normal_dose_gy=40.0, body=body,
                            sigma_mm=sigma_mm)
    assert rec["tlr_method"] == "gtm" and rec["tlr"] == pytest.approx(4.0, rel=0.02)
    assert rec["tlr_uncorrected"] == pytest.approx(raw["tlr"])
    t = gtm_concentrations(blurred, [tumour, liver & ~tumour], SPACING, sigma_mm)
    np.testing.assert_allclose(t, [40.0, 10.0], rtol=0.02)
    assert effective_sigma_mm(14.0, (4.8, 4.8, 4.8))[0] == pytest.approx(6.41, abs=0.01)


def test_report_files(phantom, tmp_path):
    counts, liver, tumour = phantom
    rec = patient_dosimetry(counts, liver, tumour, SPACING, lung_shunt=0.05, target_normal_dose_gy=40.0)
    rec["tlr_reference"] = 4.0
    ct = np.where(liver, 60.0, -1000.0)
    paths = write_patient_report(tmp_path / "rep", "P01", rec, ct, counts, liver, tumour)
    data = json.loads(paths["json"].read_text())
    assert data["figure_slice"] == largest_tumour_slice(tumour, liver) == 5
    assert data["tlr"] == pytest.approx(4.0)
    md = paths["markdown"].read_text()
    assert "P01.png" in md and "prescribed 90Y activity" in md and "4.00" in md
    from PIL import Image

    with Image.open(paths["png"]) as img:
        pixels = np.asarray(img)
    assert img.size == (96, 96)
    assert (pixels == [255, 0, 0]).all(-1).any() and (pixels == [0, 255, 0]).all(-1).any()


def test_gtm_measurement_margin_and_hot_spot_exclusion():
    """Two 20 x 28 x 28 mm tumours at 4x the liver, blurred (5 mm sigma): exact masks stay exact with the
    tumour-core / away-from-tumour measurement and the hot-spot exclusion; a mask that misses one tumour
    (its uptake counted as normal liver) or is one voxel too small is much less wrong with them."""
    sigma = (5.0, 5.0, 5.0)
    shape = (24, 48, 48)
    liver = np.zeros(shape, bool)
    liver[3:21, 4:44, 4:44] = True
    a, b = np.zeros(shape, bool), np.zeros(shape, bool)
    a[7:17, 8:22, 8:22] = True
    b[7:17, 28:42, 28:42] = True
    counts = np.where(liver, 10.0, 0.0)
    counts[a | b] = 40.0
    blurred = ndimage.gaussian_filter(counts, [s / v for s, v in zip(sigma, SPACING)], mode="constant")
    kwargs = {"lung_shunt": 0.0, "target_normal_dose_gy": 40.0, "body": np.ones(shape, bool), "sigma_mm": sigma}

    def tlr(tumour, margin, hot):
        return patient_dosimetry(blurred, liver, tumour, SPACING, margin_mm=margin, hot_factor=hot, **kwargs)["tlr"]

    for margin, hot in ((0.0, None), (6.0, None), (6.0, 1.5)):
        assert tlr(a | b, margin, hot) == pytest.approx(4.0, rel=0.01)
    assert tlr(a, 0.0, None) < 0.8 * 4.0  # tumour b's counts inflate the normal liver
    assert tlr(a, 6.0, 1.5) == pytest.approx(4.0, rel=0.08)
    eroded = ndimage.binary_erosion(a | b)
    assert abs(tlr(eroded, 6.0, 1.5) / 4.0 - 1) < 0.5 * abs(tlr(eroded, 0.0, None) / 4.0 - 1)
    with pytest.raises(Exception, match="counts"):
        from tfmedseg.clinical.partial_volume import margin_measurement_regions

        margin_measurement_regions(a, liver & ~a, SPACING, 6.0, None, 1.5)
