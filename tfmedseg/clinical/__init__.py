"""Clinical quantities: tumour-to-liver ratio, lung shunt and 90Y partition-model dosimetry (SIRT)."""

from tfmedseg.clinical.sirt import (
    DOSE_GY_KG_PER_GBQ,
    TISSUE_DENSITY_G_PER_ML,
    PartitionDoses,
    lung_shunt_fraction,
    lung_shunt_fraction_planar,
    mask_volume_ml,
    mass_kg_from_volume_ml,
    partition_model_doses,
    prescribe_activity_gbq,
    tumour_to_liver_ratio,
)

__all__ = [
    "DOSE_GY_KG_PER_GBQ",
    "TISSUE_DENSITY_G_PER_ML",
    "PartitionDoses",
    "lung_shunt_fraction",
    "lung_shunt_fraction_planar",
    "mask_volume_ml",
    "mass_kg_from_volume_ml",
    "partition_model_doses",
    "prescribe_activity_gbq",
    "tumour_to_liver_ratio",
]
