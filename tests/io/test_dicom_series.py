"""DICOM series: real pydicom test files, write-read round trips, geometry and PET SUV."""

from __future__ import annotations

import shutil

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

from tfmedseg.io import Volume, canonical_affine, read_dicom_series, write_dicom_series, write_nm_spect
from tfmedseg.io.volume import to_canonical


def _ct_volume(rng, shape=(5, 12, 10), spacing=(2.5, 0.7, 0.8), origin=(-10.0, 20.0, 30.0)) -> Volume:
    array = rng.integers(-1000, 1500, shape).astype(np.float32)
    return Volume(array, spacing, canonical_affine(spacing, origin), "CT")


def test_ct_small_hu_and_spacing(tmp_path):
    src = get_testdata_file("CT_small.dcm")
    shutil.copy(src, tmp_path / "CT_small.dcm")
    (tmp_path / "README").write_text("not dicom")
    vol = read_dicom_series(tmp_path)
    ds = pydicom.dcmread(src)
    assert vol.shape == (1, 128, 128)
    assert vol.modality == "CT"
    np.testing.assert_allclose(vol.spacing[1:], (0.661468, 0.661468))
    # Modality LUT: HU = stored * slope + intercept (CT_small: slope 1, intercept -1024).
    np.testing.assert_array_equal(vol.array[0], ds.pixel_array.astype(np.float32) - 1024.0)
    assert vol.array.min() == -896.0 and vol.array.max() == 1167.0
    # IPP (LPS) of the first pixel -> RAS: x and y negated.
    ipp = [float(v) for v in ds.ImagePositionPatient]
    np.testing.assert_allclose(vol.affine[:3, 3], [-ipp[0], -ipp[1], ipp[2]], atol=1e-5)
    assert vol.meta["series_uid"] == ds.SeriesInstanceUID
    assert vol.meta["patient_id"] == ds.PatientID
    assert len(vol.meta["skipped_files"]) == 1 and vol.meta["skipped_files"][0].startswith("README")


def test_mr_small_no_rescale(tmp_path):
    shutil.copy(get_testdata_file("MR_small.dcm"), tmp_path)
    vol = read_dicom_series(tmp_path)
    ds = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
    assert vol.modality == "MR" and vol.array.dtype == np.float32
    np.testing.assert_array_equal(vol.array[0], ds.pixel_array)
    np.testing.assert_allclose(vol.spacing, (0.8, 0.3125, 0.3125))


def test_jpeg2000_decodes(tmp_path):
    ds = pydicom.dcmread(get_testdata_file("JPEG2000.dcm"))
    assert ds.file_meta.TransferSyntaxUID.is_compressed
    expected = ds.pixel_array.copy()
    ds.ImagePositionPatient = [0, 0, 0]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.PixelSpacing = [0.5, 0.5]
    ds.save_as(tmp_path / "j2k.dcm")
    vol = read_dicom_series(tmp_path)
    slope, intercept = float(ds.get("RescaleSlope", 1)), float(ds.get("RescaleIntercept", 0))
    np.testing.assert_allclose(vol.array[0], expected * slope + intercept)
    assert vol.meta["transfer_syntax"] == "1.2.840.10008.1.2.4.91"


def test_ct_round_trip(tmp_path, rng):
    vol = _ct_volume(rng)
    files = write_dicom_series(vol, tmp_path / "ct", series_description="phantom")
    assert [f.name for f in files] == [f"IM{k:04d}.dcm" for k in range(5)]
    back = read_dicom_series(tmp_path / "ct")
    np.testing.assert_array_equal(back.array, vol.array)
    np.testing.assert_allclose(back.spacing, vol.spacing, atol=1e-6)
    np.testing.assert_allclose(back.affine, vol.affine, atol=1e-5)
    ds = pydicom.dcmread(files[2])
    assert ds.Modality == "CT" and ds.RescaleIntercept == -1024 and ds.PixelRepresentation == 1
    # Slice 2 lies 2 * 2.5 mm superior of the origin (LPS z = 30 + 5).
    np.testing.assert_allclose([float(v) for v in ds.ImagePositionPatient], [-10.0, 20.0, 35.0])
    assert float(ds.SliceThickness) == 2.5
    assert back.meta["files"] == files


def test_ct_round_trip_quantises_float_hu(tmp_path, rng):
    vol = _ct_volume(rng)
    noisy = vol.with_array(vol.array + rng.uniform(-0.4, 0.4, vol.shape).astype(np.float32))
    write_dicom_series(noisy, tmp_path / "ct")
    back = read_dicom_series(tmp_path / "ct")
    assert np.abs(back.array - noisy.array).max() <= 0.5


def test_write_is_atomic_and_refuses_non_empty_dir(tmp_path, rng):
    vol = _ct_volume(rng)
    write_dicom_series(vol, tmp_path / "ct")
    with pytest.raises(Exception, match="ct"):
        write_dicom_series(vol, tmp_path / "ct")
    bad = vol.with_array(np.full(vol.shape, 50000.0, np.float32))
    with pytest.raises(Exception, match="ct2"):
        write_dicom_series(bad, tmp_path / "ct2")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ct"]  # nothing partial, no temp dir left
    write_dicom_series(vol.with_array(vol.array + 1), tmp_path / "ct", overwrite=True)
    np.testing.assert_array_equal(read_dicom_series(tmp_path / "ct").array, vol.array + 1)


def test_pet_bqml_and_suv(tmp_path, rng):
    spacing = (3.0, 4.0, 4.0)
    array = (rng.random((4, 8, 8)) * 20000).astype(np.float32)
    pet = Volume(array, spacing, canonical_affine(spacing), "PT")
    write_dicom_series(
        pet,
        tmp_path / "pt",
        modality="PT",
        patient_weight=70.0,
        radionuclide_total_dose=3.7e8,
        radionuclide_half_life=6586.2,
        radiopharmaceutical_start_time="110000",
        series_time="120000",
    )
    back = read_dicom_series(tmp_path / "pt")
    assert back.modality == "PT" and back.meta["units"] == "BQML"
    assert np.abs(back.array - array).max() <= array.max() / 30000
    expected = 70.0 * 1000 / (3.7e8 * 2 ** (-3600 / 6586.2))  # one hour of F-18 decay
    assert back.meta["suv_factor"] == pytest.approx(expected, rel=1e-6)
    # Without the dose tags there is no SUV factor, but Bq/ml values are still right.
    write_dicom_series(pet, tmp_path / "pt2", modality="PT")
    plain = read_dicom_series(tmp_path / "pt2")
    assert plain.meta["suv_factor"] is None
    assert np.abs(plain.array - array).max() <= array.max() / 30000


def test_mask_series_with_reference(tmp_path, rng):
    vol = _ct_volume(rng)
    write_dicom_series(vol, tmp_path / "ct", patient_id="P7")
    ct = read_dicom_series(tmp_path / "ct")
    mask = (ct.array > 0).astype(np.uint8) * 255  # 3DIRCADb stores masks as 0/255
    files = write_dicom_series(mask, tmp_path / "liver", reference=ct, series_description="liver", series_number=5)
    ds = pydicom.dcmread(files[0])
    assert ds.BitsAllocated == 8 and ds.Modality == "CT"
    back = read_dicom_series(tmp_path / "liver", labels=True)
    assert back.array.dtype == np.uint8 and back.modality == "SEG"
    np.testing.assert_array_equal(back.array, mask)
    assert back.meta["study_uid"] == ct.meta["study_uid"]
    assert back.meta["frame_of_reference_uid"] == ct.meta["frame_of_reference_uid"]
    assert back.meta["patient_id"] == "P7" and back.meta["series_uid"] != ct.meta["series_uid"]
    np.testing.assert_allclose(back.affine, ct.affine, atol=1e-5)


def test_sagittal_series_reoriented_and_written_back_on_source_planes(tmp_path, rng):
    # A sagittal series: rows along -z (head to feet), columns along +y; slices step along +x.
    stack = rng.integers(0, 1000, (4, 6, 5)).astype(np.int16)  # [slice, row, col]
    for k in range(4):
        ds = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
        ds.ImageOrientationPatient = [0, 1, 0, 0, 0, -1]
        ds.ImagePositionPatient = [10.0 + 3 * k, -5.0, 40.0]
        ds.PixelSpacing = [1.5, 2.0]
        ds.SliceThickness = 3
        ds.Rows, ds.Columns = 6, 5
        ds.PixelData = stack[k].tobytes()
        ds.SOPInstanceUID = pydicom.uid.generate_uid()
        ds.save_as(tmp_path / f"s{3 - k}.dcm")  # file order differs from slice order
    vol = read_dicom_series(tmp_path)
    # Canonical [D, H, W] = [superior, posterior, left]: D from the rows (flipped), H from
    # the columns (+y = posterior), W from the slices (+x = left).
    assert vol.shape == (6, 5, 4)
    np.testing.assert_array_equal(vol.array, np.transpose(stack, (1, 2, 0))[::-1])
    np.testing.assert_allclose(vol.spacing, (1.5, 2.0, 3.0))
    assert np.allclose(vol.affine[:3, :3] @ [1, 0, 0], [0, 0, 1.5])  # d -> superior
    out = write_dicom_series(vol.with_array(vol.array + 1), tmp_path.parent / "sag_out", reference=vol, modality="MR")
    ds = pydicom.dcmread(out[0])
    assert [float(v) for v in ds.ImageOrientationPatient] == [0, 1, 0, 0, 0, -1]
    # Slices are written in source order along the normal row x col = -x: first the x = 19 plane.
    assert [float(v) for v in ds.ImagePositionPatient] == [19.0, -5.0, 40.0]
    positions = sorted(float(pydicom.dcmread(f).ImagePositionPatient[0]) for f in out)
    assert positions == [10.0, 13.0, 16.0, 19.0]
    back = read_dicom_series(tmp_path.parent / "sag_out")
    np.testing.assert_array_equal(back.array, vol.array + 1)
    np.testing.assert_allclose(back.affine, vol.affine, atol=1e-5)


def test_oblique_canonical_volume_round_trip(tmp_path, rng):
    angle = np.deg2rad(12)
    rot = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    source_affine = np.eye(4)
    source_affine[:3, :3] = rot @ np.diag([0.9, -1.1, 2.0])
    source_affine[:3, 3] = [5, -7, 11]
    canon, affine, _ = to_canonical(rng.integers(-100, 100, (7, 6, 5)).astype(np.float32), source_affine)
    vol = Volume(canon, (1, 1, 1), affine, "CT")
    write_dicom_series(vol, tmp_path / "obl")
    back = read_dicom_series(tmp_path / "obl")
    np.testing.assert_array_equal(back.array, vol.array)
    np.testing.assert_allclose(back.affine, vol.affine, atol=1e-4)


def test_nm_spect_multiframe_in_ct_frame(tmp_path, rng):
    ct = _ct_volume(rng)
    write_dicom_series(ct, tmp_path / "ct")
    ct = read_dicom_series(tmp_path / "ct")
    spacing = (4.0, 4.4, 4.4)
    counts = rng.poisson(30.0, (3, 4, 5)).astype(np.float32)
    spect = Volume(counts, spacing, canonical_affine(spacing, (-12.0, 18.0, 28.0)), "NM")
    path = write_nm_spect(spect, tmp_path / "spect" / "spect.dcm", reference=ct)
    ds = pydicom.dcmread(path)
    assert ds.NumberOfFrames == 3 and ds.Modality == "NM" and "RECON TOMO" in ds.ImageType
    back = read_dicom_series(tmp_path / "spect")
    assert back.modality == "NM"
    np.testing.assert_array_equal(back.array, counts)
    np.testing.assert_allclose(back.affine, spect.affine, atol=1e-5)
    assert back.meta["frame_of_reference_uid"] == ct.meta["frame_of_reference_uid"]
    assert back.meta["study_uid"] == ct.meta["study_uid"]
    # Non-integer counts are stored with a rescale slope.
    write_nm_spect(spect.with_array(counts / 7), tmp_path / "spect2" / "s.dcm")
    assert np.abs(read_dicom_series(tmp_path / "spect2").array - counts / 7).max() <= counts.max() / 7 / 60000


def test_per_slice_nm_series(tmp_path, rng):
    counts = rng.poisson(5.0, (3, 4, 4)).astype(np.float32)
    vol = Volume(counts, (2, 2, 2), canonical_affine((2, 2, 2)), "NM")
    write_dicom_series(vol, tmp_path / "nm", modality="NM")
    back = read_dicom_series(tmp_path / "nm")
    np.testing.assert_array_equal(back.array, counts)


def test_selects_series_by_uid_and_modality(tmp_path, rng):
    ct = _ct_volume(rng)
    write_dicom_series(ct, tmp_path / "a", series_uid="1.2.3.4", uid_seed="x")
    spacing = (3.0, 4.0, 4.0)
    pet = Volume(np.ones((2, 3, 3), np.float32), spacing, canonical_affine(spacing), "PT")
    write_dicom_series(pet, tmp_path / "b", modality="PT", series_uid="1.2.3.5", series_number=2)
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    for sub in ("a", "b"):
        for f in (tmp_path / sub).iterdir():
            shutil.copy(f, mixed / f"{sub}_{f.name}")
    assert read_dicom_series(mixed, series_uid="1.2.3.4").shape == ct.shape
    assert read_dicom_series(mixed, modality="PT").meta["series_uid"] == "1.2.3.5"


def test_uid_seed_is_deterministic(tmp_path, rng):
    vol = _ct_volume(rng)
    a = write_dicom_series(vol, tmp_path / "a", uid_seed="case-1")
    b = write_dicom_series(vol, tmp_path / "b", uid_seed="case-1")
    assert (tmp_path / "a" / a[0].name).read_bytes() == (tmp_path / "b" / b[0].name).read_bytes()


def test_dicomdir_skipped_and_recursive(tmp_path, rng):
    from tfmedseg.io import list_dicom_series

    vol = _ct_volume(rng)
    write_dicom_series(vol, tmp_path / "study" / "SE1")
    shutil.copy(get_testdata_file("DICOMDIR"), tmp_path / "study" / "DICOMDIR")
    (tmp_path / "study" / "notes.txt").write_text("scan notes")
    with pytest.raises(Exception, match="no DICOM image files"):
        read_dicom_series(tmp_path / "study")  # not recursive: only DICOMDIR and text
    back = read_dicom_series(tmp_path / "study", recursive=True)
    np.testing.assert_array_equal(back.array, vol.array)
    assert any(s.startswith("DICOMDIR: DICOMDIR") for s in back.meta["skipped_files"])
    listing = list_dicom_series(tmp_path / "study", recursive=True)
    assert list(listing.values())[0]["modality"] == "CT" and len(list(listing.values())[0]["files"]) == 5


@pytest.mark.parametrize(
    "decay_correction, start, series_time, elapsed_s",
    [("START", "113000", "120000", 1800.0), ("START", "233000", "003000", 3600.0), ("ADMIN", "100000", "120000", 0.0)],
)
def test_pet_suv_decay_variants(tmp_path, decay_correction, start, series_time, elapsed_s):
    spacing = (3.0, 4.0, 4.0)
    pet = Volume(np.full((2, 3, 3), 5000.0, np.float32), spacing, canonical_affine(spacing), "PT")
    write_dicom_series(
        pet,
        tmp_path / "pt",
        modality="PT",
        patient_weight=80.0,
        radionuclide_total_dose=2.0e8,
        radionuclide_half_life=6586.2,
        radiopharmaceutical_start_time=start,
        series_time=series_time,
        study_date="",  # no dates: times of day only, crossing midnight in the second case
        decay_correction=decay_correction,
    )
    back = read_dicom_series(tmp_path / "pt")
    expected = 80.0 * 1000 / (2.0e8 * 2 ** (-elapsed_s / 6586.2))
    assert back.meta["suv_factor"] == pytest.approx(expected, rel=1e-6)
    np.testing.assert_allclose(back.array * back.meta["suv_factor"], 5000.0 * expected, rtol=1e-4)


def test_gantry_tilt_sheared_series_round_trip(tmp_path, rng):
    spacing = (2.0, 0.5, 0.5)
    affine = canonical_affine(spacing, (0.0, 0.0, 0.0))
    affine[1, 0] = -0.35  # each slice shifts 0.35 mm posterior: a tilted gantry
    vol = Volume(rng.integers(-50, 50, (4, 6, 6)).astype(np.float32), spacing, affine, "CT")
    files = write_dicom_series(vol, tmp_path / "tilt")
    y = [float(pydicom.dcmread(f).ImagePositionPatient[1]) for f in files]
    np.testing.assert_allclose(y, [0.0, 0.35, 0.7, 1.05], atol=1e-9)
    back = read_dicom_series(tmp_path / "tilt")
    np.testing.assert_array_equal(back.array, vol.array)
    np.testing.assert_allclose(back.affine, affine, atol=1e-6)
