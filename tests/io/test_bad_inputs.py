"""Bad input for every reader: each test checks the tfmedseg.errors type AND that the message names the file."""

from __future__ import annotations

import gzip
import os
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from nibabel.testing import data_path
from pydicom.data import get_testdata_file

from tfmedseg.errors import InvalidInputError
from tfmedseg.io import Volume, canonical_affine, read_dicom_series, read_nifti, write_dicom_series
from tfmedseg.io.nm_planar import read_nm_wholebody, write_nm_wholebody


def _raises(func, *args, name: str | os.PathLike, match: str, **kwargs) -> InvalidInputError:
    """Call ``func``; require InvalidInputError whose message names ``name`` and matches ``match``."""
    with pytest.raises(InvalidInputError, match=match) as info:
        func(*args, **kwargs)
    assert str(name) in str(info.value), f"{name} not named in: {info.value}"
    return info.value


@pytest.fixture
def ct_series(tmp_path, rng) -> Path:
    spacing = (2.0, 0.9, 0.9)
    vol = Volume(rng.integers(-200, 300, (5, 8, 8)).astype(np.float32), spacing, canonical_affine(spacing), "CT")
    write_dicom_series(vol, tmp_path / "series_dir", uid_seed="bad-input")
    return tmp_path / "series_dir"


def _edit(path: Path, **tags) -> None:
    ds = pydicom.dcmread(path)
    for key, value in tags.items():
        setattr(ds, key, value)
    ds.save_as(path)


# ------------------------------------------------------------------------------- NIfTI


def test_nifti_truncated_gz(tmp_path, rng):
    path = tmp_path / "truncated.nii.gz"
    nib.save(nib.Nifti1Image(rng.normal(size=(20, 20, 20)).astype(np.float32), np.eye(4)), path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    _raises(read_nifti, path, name="truncated.nii.gz", match="truncated or corrupt")


def test_nifti_corrupt_header(tmp_path, rng):
    path = tmp_path / "corrupt.nii"
    nib.save(nib.Nifti1Image(rng.normal(size=(4, 4, 4)).astype(np.float32), np.eye(4)), path)
    raw = bytearray(path.read_bytes())
    raw[0:4] = b"\x07\x00\x00\x00"  # sizeof_hdr must be 348
    raw[344:348] = b"XXXX"  # magic must be n+1 / ni1
    path.write_bytes(bytes(raw))
    _raises(read_nifti, path, name="corrupt.nii", match="corrupt")


def test_nifti_4d_rejected():
    path = os.path.join(data_path, "example4d.nii.gz")
    _raises(read_nifti, path, name="example4d.nii.gz", match=r"expected a 3-D volume, got shape \(128, 96, 24, 2\)")


def test_nifti_nan_voxels(tmp_path):
    data = np.zeros((4, 4, 4), np.float32)
    data[1, 2, 3] = np.nan
    data[0, 0, 0] = np.inf
    nib.save(nib.Nifti1Image(data, np.eye(4)), tmp_path / "nan.nii.gz")
    _raises(read_nifti, tmp_path / "nan.nii.gz", name="nan.nii.gz", match="2 NaN or infinite voxels")
    assert np.isnan(read_nifti(tmp_path / "nan.nii.gz", allow_nan=True).array).sum() == 1


def test_nifti_wrong_file_name(tmp_path):
    shutil.copy(os.path.join(data_path, "anatomical.nii"), tmp_path / "anatomical.img.bak")
    _raises(read_nifti, tmp_path / "anatomical.img.bak", name="anatomical.img.bak", match="not a NIfTI file name")


def test_nifti_missing_file(tmp_path):
    _raises(read_nifti, tmp_path / "volume-7.nii", name="volume-7.nii", match="does not exist")


def test_nifti_not_nifti_content(tmp_path):
    (tmp_path / "text.nii.gz").write_bytes(gzip.compress(b"hello, this is not an image" * 20))
    _raises(read_nifti, tmp_path / "text.nii.gz", name="text.nii.gz", match="corrupt")


def test_nifti_label_map_on_wrong_grid(tmp_path):
    ref = read_nifti(os.path.join(data_path, "anatomical.nii"))
    _raises(
        __import__("tfmedseg.io", fromlist=["write_nifti"]).write_nifti,
        np.zeros((3, 3, 3), np.uint8),
        tmp_path / "seg.nii.gz",
        reference=ref,
        name="seg.nii.gz",
        match="does not match the reference grid",
    )


# ------------------------------------------------------------------------------- DICOM series


def test_dicom_header_cut_after_preamble(ct_series):
    bad = ct_series / "IM0002.dcm"
    bad.write_bytes(bad.read_bytes()[:140])  # preamble + DICM + a few bytes of the meta group
    _raises(read_dicom_series, ct_series, name="IM0002.dcm", match="DICOM preamble but cannot be parsed|corrupt or truncated")


def test_dicom_truncated_pixel_data(ct_series):
    bad = ct_series / "IM0001.dcm"
    bad.write_bytes(bad.read_bytes()[:-40])
    _raises(read_dicom_series, ct_series, name="IM0001.dcm", match="pixel data|cannot be parsed")


def test_dicom_mixed_series_listed(ct_series, tmp_path, rng):
    spacing = (3.0, 2.0, 2.0)
    pet = Volume(np.ones((3, 4, 4), np.float32), spacing, canonical_affine(spacing), "PT")
    for f in write_dicom_series(pet, tmp_path / "pet", modality="PT", series_uid="1.2.826.0.1.99"):
        shutil.copy(f, ct_series / f"PT_{f.name}")
    ct_uid = pydicom.dcmread(ct_series / "IM0000.dcm").SeriesInstanceUID
    err = _raises(read_dicom_series, ct_series, name="series_dir", match="contains 2 series")
    assert "1.2.826.0.1.99" in str(err) and ct_uid in str(err) and "modality PT" in str(err)
    _raises(read_dicom_series, ct_series, series_uid="9.9.9", name="series_dir", match="no series with SeriesInstanceUID 9.9.9")


def test_dicom_gap_in_series(ct_series):
    (ct_series / "IM0002.dcm").unlink()
    err = _raises(read_dicom_series, ct_series, name="series_dir", match="gap")
    assert "2.000 -> 6.000 mm" in str(err)


def test_dicom_duplicate_positions(ct_series):
    ds = pydicom.dcmread(ct_series / "IM0003.dcm")
    ds.SOPInstanceUID = pydicom.uid.generate_uid()
    ds.save_as(ct_series / "IM0003_copy.dcm")
    err = _raises(read_dicom_series, ct_series, name="series_dir", match="duplicate slice positions")
    assert "6.000 mm" in str(err) and "IM0003.dcm" in str(err) and "IM0003_copy.dcm" in str(err)


def test_dicom_inconsistent_orientation(ct_series):
    _edit(ct_series / "IM0004.dcm", ImageOrientationPatient=[1, 0, 0, 0, 0.9950042, -0.0998334])
    err = _raises(read_dicom_series, ct_series, name="series_dir", match="inconsistent ImageOrientationPatient")
    assert "IM0004.dcm" in str(err)


def test_dicom_inconsistent_pixel_spacing(ct_series):
    _edit(ct_series / "IM0001.dcm", PixelSpacing=[0.8, 0.8])
    err = _raises(read_dicom_series, ct_series, name="series_dir", match="inconsistent PixelSpacing")
    assert "IM0001.dcm" in str(err)


def test_dicom_inconsistent_size(ct_series):
    ds = pydicom.dcmread(ct_series / "IM0000.dcm")
    ds.Rows, ds.Columns = 4, 16
    ds.save_as(ct_series / "IM0000.dcm")
    _raises(read_dicom_series, ct_series, name="series_dir", match="inconsistent Rows/Columns")


def test_dicom_empty_and_missing_directory(tmp_path):
    (tmp_path / "empty_dir").mkdir()
    _raises(read_dicom_series, tmp_path / "empty_dir", name="empty_dir", match="directory is empty")
    _raises(read_dicom_series, tmp_path / "no_such_dir", name="no_such_dir", match="does not exist")


def test_dicom_only_non_dicom_files(tmp_path):
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "README.txt").write_text("patient scans follow")
    _raises(read_dicom_series, tmp_path / "notes", name="notes", match="no DICOM image files")


def test_dicom_compressed_without_plugin_monkeypatched(tmp_path, monkeypatch):
    from pydicom.pixels import get_decoder
    from pydicom.uid import JPEG2000

    ds = pydicom.dcmread(get_testdata_file("JPEG2000.dcm"))
    ds.ImagePositionPatient, ds.ImageOrientationPatient, ds.PixelSpacing = [0, 0, 0], [1, 0, 0, 0, 1, 0], [1, 1]
    ds.save_as(tmp_path / "j2k.dcm")
    monkeypatch.setattr(get_decoder(JPEG2000), "_available", {})  # as if pillow had no JPEG 2000 support
    err = _raises(read_dicom_series, tmp_path, name="j2k.dcm", match="JPEG 2000 Image Compression")
    assert "pylibjpeg-openjpeg" in str(err) and "1.2.840.10008.1.2.4.91" in str(err)


def test_dicom_jpeg_ls_without_plugin(tmp_path):
    from pydicom.pixels import get_decoder
    from pydicom.uid import JPEGLSNearLossless

    decoder = get_decoder(JPEGLSNearLossless)
    ds = pydicom.dcmread(get_testdata_file("JPEGLSNearLossless_16.dcm"))
    ds.SeriesInstanceUID = ds.get("SeriesInstanceUID") or "1.2.826.0.1.3680043.2.1"
    ds.ImagePositionPatient, ds.ImageOrientationPatient, ds.PixelSpacing = [0, 0, 0], [1, 0, 0, 0, 1, 0], [1, 1]
    ds.save_as(tmp_path / "jls.dcm")
    if decoder.is_available:  # a JPEG-LS plugin is installed here: the file must decode instead
        assert read_dicom_series(tmp_path).shape[0] == 1
        return
    err = _raises(read_dicom_series, tmp_path, name="jls.dcm", match="JPEG-LS")
    assert "pyjpegls" in str(err)


def test_dicom_planar_file_without_geometry(tmp_path):
    write_nm_wholebody(np.ones((8, 4)), np.ones((8, 4)), tmp_path / "wb" / "bone.dcm")
    _raises(read_dicom_series, tmp_path / "wb", name="bone.dcm", match="read_nm_wholebody")


def test_dicom_write_bad_arguments(tmp_path, rng):
    vol = Volume(np.zeros((2, 3, 3), np.float32), (1, 1, 1), canonical_affine((1, 1, 1)), "CT")
    _raises(write_dicom_series, vol, tmp_path / "out_us", modality="US", name="out_us", match="modality must be one of")
    nan = vol.with_array(np.full(vol.shape, np.nan, np.float32))
    _raises(write_dicom_series, nan, tmp_path / "out_nan", modality="PT", name="out_nan", match="NaN")
    _raises(write_dicom_series, np.zeros((2, 3, 3)), tmp_path / "out_bare", name="out_bare", match="needs a reference")
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------------- NM planar


def _two_view_file(path: Path, views: list[str]) -> Path:
    write_nm_wholebody(np.ones((8, 4)), np.ones((8, 4)) * 2, path)
    ds = pydicom.dcmread(path)
    for item, view in zip(ds.DetectorInformationSequence, views):
        code = item.ViewCodeSequence[0]
        code.CodeValue, code.CodeMeaning = {"anterior": ("399321004", "Anterior projection"),
                                            "posterior": ("399001007", "Posterior projection"),
                                            "lateral": ("399067008", "Lateral projection")}[view]
    ds.save_as(path)
    return path


def test_nm_wholebody_missing_posterior(tmp_path):
    path = _two_view_file(tmp_path / "patient01_wb.dcm", ["anterior", "lateral"])
    _raises(read_nm_wholebody, path, name="patient01_wb.dcm", match="missing the posterior view")


def test_nm_wholebody_single_frame_missing_anterior(tmp_path):
    path = tmp_path / "single_view.dcm"
    write_nm_wholebody(np.ones((8, 4)), np.ones((8, 4)), path)
    ds = pydicom.dcmread(path)
    ds.NumberOfFrames = 1
    ds.DetectorVector = [2]
    ds.EnergyWindowVector = [1]
    ds.PixelData = ds.PixelData[: len(ds.PixelData) // 2]
    ds.save_as(path)
    _raises(read_nm_wholebody, path, name="single_view.dcm", match="missing the anterior view")


def test_nm_wholebody_wrong_modality_and_missing(tmp_path):
    shutil.copy(get_testdata_file("CT_small.dcm"), tmp_path / "ct_not_nm.dcm")
    _raises(read_nm_wholebody, tmp_path / "ct_not_nm.dcm", name="ct_not_nm.dcm", match="got Modality CT")
    _raises(read_nm_wholebody, tmp_path / "absent.dcm", name="absent.dcm", match="does not exist")


def test_nm_wholebody_write_mismatched_views(tmp_path):
    _raises(
        write_nm_wholebody, np.ones((8, 4)), np.ones((8, 5)), tmp_path / "wb.dcm", name="wb.dcm", match="differ in shape"
    )
    _raises(
        write_nm_wholebody, -np.ones((8, 4)), np.ones((8, 4)), tmp_path / "wb.dcm", name="wb.dcm", match=r"\[0, 65535\]"
    )
    assert not (tmp_path / "wb.dcm").exists()
