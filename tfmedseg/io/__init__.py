"""Medical image IO: NIfTI, DICOM series, NM planar scans -> canonical :class:`Volume`."""

from tfmedseg.io.dicom import list_dicom_series, read_dicom_series
from tfmedseg.io.dicom_write import write_dicom_series, write_nm_spect
from tfmedseg.io.nifti import read_nifti, write_nifti
from tfmedseg.io.nm_planar import read_nm_wholebody, write_nm_wholebody
from tfmedseg.io.volume import CANONICAL_AXCODES, Volume, canonical_affine

__all__ = [
    "Volume",
    "CANONICAL_AXCODES",
    "canonical_affine",
    "read_nifti",
    "write_nifti",
    "read_dicom_series",
    "write_dicom_series",
    "write_nm_spect",
    "list_dicom_series",
    "read_nm_wholebody",
    "write_nm_wholebody",
]
