"""NIfTI: nibabel's shipped files, canonical orientation, label maps written on the source geometry."""

from __future__ import annotations

import os

import nibabel as nib
import numpy as np
import pytest
from nibabel.testing import data_path

from tfmedseg.io import CANONICAL_AXCODES, Volume, canonical_affine, read_nifti, write_nifti


def _world(affine: np.ndarray, index: np.ndarray) -> np.ndarray:
    return (affine @ np.append(index, 1.0))[:3]


def test_anatomical_canonical_orientation():
    path = os.path.join(data_path, "anatomical.nii")
    image = nib.load(path)
    raw = np.asanyarray(image.dataobj).astype(np.float32)
    vol = read_nifti(path, "MR")
    # Source (33, 41, 25) is L, A, S ordered x, y, z -> canonical [D, H, W] = (S, P, L) = (25, 41, 33).
    assert vol.shape == (25, 41, 33)
    assert nib.aff2axcodes(vol.affine) == CANONICAL_AXCODES
    np.testing.assert_allclose(vol.spacing, (2.0, 2.0, 2.0))
    assert vol.array[3, 4, 5] == raw[5, 41 - 1 - 4, 3]  # W: L unchanged, H: A flipped to P, D: S
    # Every voxel keeps its world position.
    for index in ([0, 0, 0], [3, 4, 5], [24, 40, 32]):
        d, h, w = index
        src = np.array([w, 40 - h, d], dtype=float)
        np.testing.assert_allclose(_world(vol.affine, np.array(index, float)), _world(image.affine, src))
    np.testing.assert_array_equal(vol.to_source_array(), raw)


def test_standard_nii_gz():
    path = os.path.join(data_path, "standard.nii.gz")
    vol = read_nifti(path, "SEG")
    raw = np.asanyarray(nib.load(path).dataobj)
    assert vol.array.dtype == raw.dtype and vol.shape == (7, 5, 4)
    np.testing.assert_allclose(vol.spacing, (2.0, 3.0, 1.0))
    np.testing.assert_array_equal(vol.to_source_array(), raw)
    np.testing.assert_array_equal(vol.array, np.transpose(raw, (2, 1, 0))[:, ::-1, ::-1])


@pytest.mark.parametrize(
    "rotation_deg, flips",
    [(0.0, (1, 1, 1)), (0.0, (-1, 1, -1)), (17.0, (1, -1, 1)), (33.0, (-1, -1, -1))],
)
def test_label_map_written_on_source_geometry(tmp_path, rng, rotation_deg, flips):
    angle = np.deg2rad(rotation_deg)
    rot = np.array([[1, 0, 0], [0, np.cos(angle), -np.sin(angle)], [0, np.sin(angle), np.cos(angle)]])
    affine = np.eye(4)
    affine[:3, :3] = rot @ np.diag(np.array(flips) * [0.8, 1.2, 2.5])
    affine[:3, 3] = [12.0, -30.0, 7.5]
    data = rng.normal(0, 100, (9, 7, 5)).astype(np.float32)
    src_path = tmp_path / "image.nii.gz"
    nib.save(nib.Nifti1Image(data, affine), src_path)
    vol = read_nifti(src_path, "CT")
    np.testing.assert_array_equal(vol.to_source_array(), nib.load(src_path).get_fdata(dtype=np.float32))
    labels = (vol.array > 50).astype(np.uint8) + (vol.array > 150).astype(np.uint8)
    out = write_nifti(vol.with_array(labels, "SEG"), tmp_path / "labels.nii.gz")
    written = nib.load(out)
    np.testing.assert_allclose(written.affine, affine, atol=1e-6)
    np.testing.assert_allclose(written.header.get_qform(), nib.load(src_path).header.get_qform(), atol=1e-5)
    assert written.get_data_dtype() == np.uint8
    source_header = nib.load(src_path).header
    for field in ("dim", "pixdim", "qform_code", "sform_code", "xyzt_units", "quatern_b", "quatern_c", "quatern_d"):
        np.testing.assert_allclose(written.header[field], source_header[field], atol=1e-6, err_msg=field)
    raw = np.asanyarray(written.dataobj)
    np.testing.assert_array_equal(raw, vol.to_source_array(labels))
    np.testing.assert_array_equal(raw, (data > 50).astype(np.uint8) + (data > 150))
    reread = read_nifti(out, "SEG")
    np.testing.assert_array_equal(reread.array, labels)
    np.testing.assert_allclose(reread.affine, vol.affine, atol=1e-6)


def test_write_canonical_volume_without_source(tmp_path, rng):
    spacing = (2.0, 0.5, 0.75)
    vol = Volume(rng.normal(size=(3, 4, 5)).astype(np.float32), spacing, canonical_affine(spacing, (1, 2, 3)), "CT")
    out = write_nifti(vol, tmp_path / "v.nii")
    back = read_nifti(out, "CT")
    np.testing.assert_array_equal(back.array, vol.array)
    np.testing.assert_allclose(back.affine, vol.affine)
    np.testing.assert_allclose(back.spacing, spacing)


def test_singleton_fourth_axis_is_squeezed(tmp_path, rng):
    data = rng.normal(size=(4, 5, 6, 1)).astype(np.float32)
    nib.save(nib.Nifti1Image(data, np.eye(4)), tmp_path / "v.nii.gz")
    vol = read_nifti(tmp_path / "v.nii.gz")
    np.testing.assert_array_equal(vol.to_source_array(), data[..., 0])


def test_label_map_keeps_qform_only_header(tmp_path, rng):
    affine = np.diag([-1.5, 1.5, 3.0, 1.0])
    affine[:3, 3] = [40.0, -20.0, 5.0]
    image = nib.Nifti1Image(rng.normal(size=(6, 5, 4)).astype(np.float32), None)
    image.set_qform(affine, code=1)
    image.set_sform(None, code=0)
    image.header["cal_max"] = 400.0
    nib.save(image, tmp_path / "qform_only.nii")
    vol = read_nifti(tmp_path / "qform_only.nii")
    out = write_nifti(vol.with_array((vol.array > 0).astype(np.uint8), "SEG"), tmp_path / "seg.nii")
    header = nib.load(out).header
    assert int(header["qform_code"]) == 1 and int(header["sform_code"]) == 0
    np.testing.assert_allclose(nib.load(out).affine, affine)
    assert float(header["cal_max"]) == 0.0
