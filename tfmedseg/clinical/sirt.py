"""SIRT (90Y radioembolisation) quantities from 99mTc-MAA SPECT/CT segmentations (seed 000).

The seed names the tumour-to-liver ratio as the purpose of its segmentation but gives no formula;
these are the standard definitions (spec seed-000-004 section 7):

- Tumour-to-liver ratio (TLR, also TNR): ``TLR = (C_T / V_T) / (C_N / V_N)`` with ``C`` the MAA SPECT
  counts summed in the tumour T and in the non-tumoural liver ``N = liver \\ T``, and ``V`` their
  volumes from the masks and the voxel spacing. Compute it on the SPECT count volume resampled onto
  the masks, never on display (RGB) images.
- Lung shunt fraction ``LSF = C_lung / (C_lung + C_liver)`` (planar: geometric means of the anterior
  and posterior counts).
- Partition model (Ho et al. 1996), 90Y: ``D[Gy] = 49.67 * A[GBq] / M[kg]``;
  ``A_liver = A_inj (1 - LSF)``, ``A_N = A_liver M_N / (TLR M_T + M_N)``, ``A_T = A_liver - A_N``,
  ``D_N = 49.67 A_N / M_N``, ``D_T = TLR D_N``, ``D_lung = 49.67 A_inj LSF / M_lung`` (M_lung 1 kg);
  prescription for a target normal-liver dose ``A_inj = D_N (TLR M_T + M_N) / (49.67 (1 - LSF))``.
- Masses from volumes with a tissue density of 1.03 g/ml.

Units are in the names: ``_gbq``, ``_gy``, ``_kg``, ``_ml``, spacing in mm.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from tfmedseg.errors import InvalidInputError
from tfmedseg.validation import as_array, as_binary, check_finite, check_same_shape, check_spacing

__all__ = [
    "DOSE_GY_KG_PER_GBQ",
    "TISSUE_DENSITY_G_PER_ML",
    "PartitionDoses",
    "mask_volume_ml",
    "mass_kg_from_volume_ml",
    "tumour_to_liver_ratio",
    "lung_shunt_fraction",
    "lung_shunt_fraction_planar",
    "partition_model_doses",
    "prescribe_activity_gbq",
]

#: 90Y absorbed dose per activity per mass when all energy is deposited locally (Gy kg / GBq).
DOSE_GY_KG_PER_GBQ = 49.67
#: Soft-tissue density used to turn segmented volumes into masses (g/ml).
TISSUE_DENSITY_G_PER_ML = 1.03


def _positive(value: float, name: str, allow_zero: bool = False) -> float:
    v = float(value)
    if not math.isfinite(v) or v < 0 or (v == 0 and not allow_zero):
        raise InvalidInputError(f"must be a finite number {'>=' if allow_zero else '>'} 0, got {value}", path=name)
    return v


def _fraction(value: float, name: str) -> float:
    v = float(value)
    if not math.isfinite(v) or not 0.0 <= v < 1.0:
        raise InvalidInputError(f"must be in [0, 1), got {value}", path=name)
    return v


def mask_volume_ml(mask, spacing) -> float:
    """Volume of a mask in ml: voxel count x prod(spacing) mm^3 / 1000.

    Args:
        mask: Binary mask ``[D, H, W]``.
        spacing: Voxel size in mm per axis (required).
    """
    m = as_binary(mask, "mask")
    sp = check_spacing(spacing, m.ndim)
    return float(np.count_nonzero(m) * np.prod(sp) / 1000.0)


def mass_kg_from_volume_ml(volume_ml: float, density_g_per_ml: float = TISSUE_DENSITY_G_PER_ML) -> float:
    """Tissue mass in kg of a volume in ml (density 1.03 g/ml by default)."""
    return _positive(volume_ml, "volume_ml", allow_zero=True) * _positive(density_g_per_ml, "density_g_per_ml") / 1000.0


def tumour_to_liver_ratio(counts, liver, tumour, *, spacing) -> dict[str, float]:
    """Tumour-to-(non-tumoural-)liver ratio of MAA SPECT counts per volume.

    Args:
        counts: SPECT counts ``[D, H, W]`` on the grid of the masks (non-negative, finite).
        liver: Binary whole-liver mask (tumour included or not; ``N = liver AND NOT tumour``).
        tumour: Binary tumour mask, same shape.
        spacing: Voxel size in mm per axis (required).

    Returns:
        ``{"tlr", "counts_tumour", "counts_normal", "volume_tumour_ml", "volume_normal_ml",
        "mass_tumour_kg", "mass_normal_kg"}``.

    Raises:
        InvalidInputError: shapes differ, spacing missing / wrong, NaN or negative counts, empty
            tumour or normal liver, or no counts in the normal liver.

    Example:
        >>> c = np.full((2, 2, 2), 10.0); c[0, 0, 0] = 50.0
        >>> t = np.zeros((2, 2, 2), bool); t[0, 0, 0] = True
        >>> tumour_to_liver_ratio(c, np.ones((2, 2, 2)), t, spacing=1.0)["tlr"]
        5.0
    """
    c = check_finite(as_array(counts, "counts").astype(np.float64), "counts")
    lv = as_binary(liver, "liver")
    tu = as_binary(tumour, "tumour")
    check_same_shape(c, lv, ("counts", "liver"))
    check_same_shape(c, tu, ("counts", "tumour"))
    if c.size and c.min() < 0:
        raise InvalidInputError(f"must be >= 0 (SPECT counts), got minimum {c.min()}", path="counts")
    sp = check_spacing(spacing, c.ndim)
    normal = lv & ~tu
    if not tu.any():
        raise InvalidInputError("is empty: the TLR needs a tumour", path="tumour")
    if not normal.any():
        raise InvalidInputError("has no voxel outside the tumour: the TLR needs non-tumoural liver", path="liver")
    voxel_ml = float(np.prod(sp)) / 1000.0
    c_t, c_n = float(c[tu].sum()), float(c[normal].sum())
    v_t, v_n = float(tu.sum() * voxel_ml), float(normal.sum() * voxel_ml)
    if c_n <= 0:
        raise InvalidInputError("has no counts in the non-tumoural liver: the TLR is undefined", path="counts")
    return {
        "tlr": float((c_t / v_t) / (c_n / v_n)),
        "counts_tumour": c_t,
        "counts_normal": c_n,
        "volume_tumour_ml": v_t,
        "volume_normal_ml": v_n,
        "mass_tumour_kg": mass_kg_from_volume_ml(v_t),
        "mass_normal_kg": mass_kg_from_volume_ml(v_n),
    }


def lung_shunt_fraction(lung_counts: float, liver_counts: float) -> float:
    """LSF = C_lung / (C_lung + C_liver), from MAA counts in lung and liver regions."""
    lu = _positive(lung_counts, "lung_counts", allow_zero=True)
    li = _positive(liver_counts, "liver_counts")
    return lu / (lu + li)


def lung_shunt_fraction_planar(lung_anterior: float, lung_posterior: float, liver_anterior: float,
                               liver_posterior: float) -> float:
    """LSF from planar MAA views using the geometric mean of anterior and posterior counts."""
    lung = math.sqrt(_positive(lung_anterior, "lung_anterior", True) * _positive(lung_posterior, "lung_posterior", True))
    liver = math.sqrt(_positive(liver_anterior, "liver_anterior") * _positive(liver_posterior, "liver_posterior"))
    return lung / (lung + liver)


@dataclasses.dataclass(frozen=True)
class PartitionDoses:
    """Partition-model activities (GBq) and mean absorbed doses (Gy) of one 90Y administration."""

    activity_injected_gbq: float
    activity_liver_gbq: float
    activity_normal_gbq: float
    activity_tumour_gbq: float
    activity_lung_gbq: float
    dose_normal_gy: float
    dose_tumour_gy: float
    dose_lung_gy: float


def partition_model_doses(
    activity_gbq: float, tlr: float, mass_tumour_kg: float, mass_normal_kg: float, lung_shunt: float = 0.0,
    mass_lung_kg: float = 1.0,
) -> PartitionDoses:
    """Doses of the partition model for an injected 90Y activity.

    Args:
        activity_gbq: Injected activity (GBq).
        tlr: Tumour-to-liver ratio (> 0).
        mass_tumour_kg: Tumour mass (kg).
        mass_normal_kg: Non-tumoural liver mass (kg).
        lung_shunt: Lung shunt fraction in [0, 1).
        mass_lung_kg: Lung mass (kg, 1 by convention).

    Returns:
        :class:`PartitionDoses`.

    Example:
        >>> d = partition_model_doses(2.0, 4.0, 0.2, 1.5, lung_shunt=0.1)
        >>> round(d.dose_normal_gy, 2), round(d.dose_tumour_gy, 2), round(d.dose_lung_gy, 2)
        (38.87, 155.49, 9.93)
    """
    a = _positive(activity_gbq, "activity_gbq", allow_zero=True)
    r = _positive(tlr, "tlr")
    m_t = _positive(mass_tumour_kg, "mass_tumour_kg")
    m_n = _positive(mass_normal_kg, "mass_normal_kg")
    lsf = _fraction(lung_shunt, "lung_shunt")
    m_l = _positive(mass_lung_kg, "mass_lung_kg")
    a_liver = a * (1.0 - lsf)
    a_n = a_liver * m_n / (r * m_t + m_n)
    a_t = a_liver - a_n
    d_n = DOSE_GY_KG_PER_GBQ * a_n / m_n
    return PartitionDoses(
        activity_injected_gbq=a,
        activity_liver_gbq=a_liver,
        activity_normal_gbq=a_n,
        activity_tumour_gbq=a_t,
        activity_lung_gbq=a * lsf,
        dose_normal_gy=d_n,
        dose_tumour_gy=r * d_n,
        dose_lung_gy=DOSE_GY_KG_PER_GBQ * a * lsf / m_l,
    )


def prescribe_activity_gbq(
    target_normal_dose_gy: float, tlr: float, mass_tumour_kg: float, mass_normal_kg: float, lung_shunt: float = 0.0
) -> float:
    """Injected activity (GBq) that gives ``target_normal_dose_gy`` to the non-tumoural liver.

    ``A = D_N (TLR M_T + M_N) / (49.67 (1 - LSF))``; check the resulting lung dose with
    :func:`partition_model_doses` (a common limit is 30 Gy per session).
    """
    d = _positive(target_normal_dose_gy, "target_normal_dose_gy")
    r = _positive(tlr, "tlr")
    m_t = _positive(mass_tumour_kg, "mass_tumour_kg")
    m_n = _positive(mass_normal_kg, "mass_normal_kg")
    lsf = _fraction(lung_shunt, "lung_shunt")
    return d * (r * m_t + m_n) / (DOSE_GY_KG_PER_GBQ * (1.0 - lsf))
