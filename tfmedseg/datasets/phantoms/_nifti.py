"""Writing phantom arrays as NIfTI in a realistic (ITK-style) voxel order (private)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tfmedseg.io.nifti import write_nifti
from tfmedseg.io.volume import Volume, canonical_affine

__all__: list[str] = []

#: Voxel order of the written files: i towards patient-left, j posterior, k superior (what
#: SimpleITK / ITK-SNAP write for an axial scan), so the loaders' reorientation is exercised.
SOURCE_AXCODES = ("L", "P", "S")


def reference_volume(array: np.ndarray, spacing, origin_lps, modality: str = "OT") -> Volume:
    """A canonical Volume whose ``meta`` makes :func:`write_nifti` store it in ``SOURCE_AXCODES`` order."""
    import nibabel as nib

    affine = canonical_affine(spacing, origin_lps)
    canonical_ornt = nib.orientations.axcodes2ornt(("S", "P", "L"))
    source_ornt = nib.orientations.axcodes2ornt(SOURCE_AXCODES)
    transform = nib.orientations.ornt_transform(canonical_ornt, source_ornt)
    source_affine = affine @ nib.orientations.inv_ornt_aff(transform, array.shape)
    source_shape = tuple(int(array.shape[int(i)]) for i in transform[:, 0].argsort())
    meta = {"source_affine": source_affine, "source_ornt": source_ornt, "source_shape": source_shape}
    return Volume(array, spacing, affine, modality, meta)


def save_nifti(array: np.ndarray, path: Path, spacing, origin_lps, dtype=None) -> Path:
    """Write a canonical ``[D, H, W]`` array to ``path`` (``.nii`` / ``.nii.gz``) in ITK voxel order."""
    return write_nifti(reference_volume(array, spacing, origin_lps), path, dtype=dtype)
