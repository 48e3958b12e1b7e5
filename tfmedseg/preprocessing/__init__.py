"""Deterministic, cacheable preprocessing: intensity windows, resampling, invertible crops, SPECT/CT.

Every function is pure numpy/scipy/scikit-image with defaults equal to the seeds' values; see the
modules: :mod:`~tfmedseg.preprocessing.intensity`, :mod:`~tfmedseg.preprocessing.resample`,
:mod:`~tfmedseg.preprocessing.crop`, :mod:`~tfmedseg.preprocessing.spect_ct`,
:mod:`~tfmedseg.preprocessing.cascade`, :mod:`~tfmedseg.preprocessing.cache`.
"""

from tfmedseg.preprocessing.cache import CachedCase, CaseCache, hash_config
from tfmedseg.preprocessing.cascade import add_mask, combine, mask_out
from tfmedseg.preprocessing.crop import Crop, GridCrop, body_crop, bounding_box, chest_crop, hecktor_cube, liver_voi
from tfmedseg.preprocessing.intensity import (
    clip_and_scale,
    ct_display_window,
    hecktor_ct,
    hu_to_unit,
    liver_lesion_window,
    window_range,
    zscore,
)
from tfmedseg.preprocessing.resample import (
    resample_to_reference,
    resample_to_spacing,
    resize_array,
    resize_inplane,
    resize_volume,
    restore_array,
    restore_to_source,
)
from tfmedseg.preprocessing.spect_ct import (
    adjust_rg_histogram,
    fuse_weighted,
    is_abnormal_histogram,
    match_slices_ssim,
    resample_spect_to_ct,
    stretch_rg,
)

__all__ = [
    "CachedCase", "CaseCache", "hash_config",
    "add_mask", "combine", "mask_out",
    "Crop", "GridCrop", "body_crop", "bounding_box", "chest_crop", "hecktor_cube", "liver_voi",
    "clip_and_scale", "ct_display_window", "hecktor_ct", "hu_to_unit", "liver_lesion_window", "window_range", "zscore",
    "resample_to_reference", "resample_to_spacing", "resize_array", "resize_inplane", "resize_volume", "restore_array", "restore_to_source",
    "adjust_rg_histogram", "fuse_weighted", "is_abnormal_histogram", "match_slices_ssim", "resample_spect_to_ct", "stretch_rg",
]
