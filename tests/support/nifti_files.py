"""NIfTI test files written from canonical ``[D, H, W]`` arrays (shared by the predict and viewer tests)."""

from __future__ import annotations

import numpy as np

# 0.8 x 0.8 mm in-plane, 2.5 mm slices, x flipped (LAS+ in the file): reading it must reorient.
NIFTI_AFFINE = np.array([[-0.8, 0.0, 0.0, 10.0], [0.0, 0.8, 0.0, -20.0], [0.0, 0.0, 2.5, -30.0], [0.0, 0.0, 0.0, 1.0]])


def write_nifti(path, array_canonical, affine=NIFTI_AFFINE):
    """Write ``array_canonical`` (``[D, H, W]``, tfmedseg's canonical order) to ``path`` with ``affine``
    as both qform (code 1) and sform (code 2); returns ``path``."""
    import nibabel as nib

    from tfmedseg.io.volume import from_canonical

    source = from_canonical(array_canonical, nib.orientations.io_orientation(affine))
    image = nib.Nifti1Image(source, affine)
    image.set_qform(affine, code=1)
    image.set_sform(affine, code=2)
    nib.save(image, str(path))
    return path
