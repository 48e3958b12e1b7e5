"""SIRT quantities against worked examples computed by hand."""

from __future__ import annotations

import numpy as np
import pytest

from tfmedseg.clinical import (
    lung_shunt_fraction,
    lung_shunt_fraction_planar,
    mask_volume_ml,
    mass_kg_from_volume_ml,
    partition_model_doses,
    prescribe_activity_gbq,
    tumour_to_liver_ratio,
)
from tfmedseg.errors import InvalidInputError


def _phantom():
    # 4x4x4 voxels of 2.5 x 2 x 2 mm = 10 mm^3 = 0.01 ml; tumour 2x2x2 with 50 counts, rest 10.
    counts = np.full((4, 4, 4), 10.0)
    tumour = np.zeros((4, 4, 4), bool)
    tumour[1:3, 1:3, 1:3] = True
    counts[tumour] = 50.0
    liver = np.ones((4, 4, 4), bool)
    return counts, liver, tumour, (2.5, 2.0, 2.0)


def test_tlr_worked_example():
    counts, liver, tumour, sp = _phantom()
    out = tumour_to_liver_ratio(counts, liver, tumour, spacing=sp)
    # C_T = 8*50 = 400 in 0.08 ml; C_N = 56*10 = 560 in 0.56 ml -> (5000 / 1000) = 5
    assert out["tlr"] == pytest.approx(5.0)
    assert out["volume_tumour_ml"] == pytest.approx(0.08)
    assert out["volume_normal_ml"] == pytest.approx(0.56)
    assert out["mass_normal_kg"] == pytest.approx(0.56 * 1.03 / 1000)
    # background counts outside the liver do not enter
    counts2 = np.pad(counts, 1, constant_values=1000.0)
    liver2, tumour2 = np.pad(liver, 1), np.pad(tumour, 1)
    assert tumour_to_liver_ratio(counts2, liver2, tumour2, spacing=sp)["tlr"] == pytest.approx(5.0)
    assert mask_volume_ml(liver, sp) == pytest.approx(0.64)
    assert mass_kg_from_volume_ml(1000.0) == pytest.approx(1.03)


def test_partition_model_worked_example():
    # A=2 GBq, TLR=4, M_T=0.2 kg, M_N=1.5 kg, LSF=0.1:
    # A_liver=1.8; A_N=1.8*1.5/(0.8+1.5)=1.173913; A_T=0.626087
    # D_N=49.67*(1.5/2.3)*1.8/1.5=38.872174; D_T=4*D_N=155.488696; D_lung=49.67*2*0.1/1=9.934
    d = partition_model_doses(2.0, 4.0, 0.2, 1.5, lung_shunt=0.1)
    assert d.activity_liver_gbq == pytest.approx(1.8)
    assert d.activity_normal_gbq == pytest.approx(1.173913, rel=1e-6)
    assert d.activity_tumour_gbq == pytest.approx(0.626087, rel=1e-5)
    assert d.activity_lung_gbq == pytest.approx(0.2)
    assert d.dose_normal_gy == pytest.approx(38.872174, rel=1e-6)
    assert d.dose_tumour_gy == pytest.approx(155.488696, rel=1e-6)
    assert d.dose_tumour_gy == pytest.approx(49.67 * d.activity_tumour_gbq / 0.2)
    assert d.dose_lung_gy == pytest.approx(9.934)
    # the prescription inverts the model
    a = prescribe_activity_gbq(38.872174, 4.0, 0.2, 1.5, lung_shunt=0.1)
    assert a == pytest.approx(2.0, rel=1e-6)
    assert prescribe_activity_gbq(40.0, 1.0, 0.5, 1.5) == pytest.approx(40 * 2.0 / 49.67)


def test_lung_shunt():
    assert lung_shunt_fraction(100.0, 900.0) == pytest.approx(0.1)
    # geometric means: lung sqrt(80*125)=100, liver sqrt(1600*2500)=2000 -> 100/2100
    assert lung_shunt_fraction_planar(80, 125, 1600, 2500) == pytest.approx(100 / 2100)


def test_bad_inputs():
    counts, liver, tumour, sp = _phantom()
    with pytest.raises(InvalidInputError, match="tumour: must have the same shape"):
        tumour_to_liver_ratio(counts, liver, tumour[:3], spacing=sp)
    with pytest.raises(InvalidInputError, match="spacing: is required"):
        tumour_to_liver_ratio(counts, liver, tumour, spacing=None)
    with pytest.raises(InvalidInputError, match="spacing: must have one value per axis"):
        tumour_to_liver_ratio(counts, liver, tumour, spacing=(1.0, 1.0))
    bad = counts.copy()
    bad[0, 0, 0] = np.nan
    with pytest.raises(InvalidInputError, match="counts: contains 1 NaN"):
        tumour_to_liver_ratio(bad, liver, tumour, spacing=sp)
    with pytest.raises(InvalidInputError, match="tumour: is empty"):
        tumour_to_liver_ratio(counts, liver, np.zeros_like(tumour), spacing=sp)
    with pytest.raises(InvalidInputError, match="lung_shunt"):
        partition_model_doses(1.0, 2.0, 0.1, 1.0, lung_shunt=1.0)
    with pytest.raises(InvalidInputError, match="mass_normal_kg"):
        partition_model_doses(1.0, 2.0, 0.1, 0.0)
