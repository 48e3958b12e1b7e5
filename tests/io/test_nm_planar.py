"""NM planar whole-body bone scans: two-frame NM DICOM with anterior/posterior view codes."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest

from tfmedseg.io import Volume, read_nm_wholebody, write_nm_wholebody
from tfmedseg.io.nm_planar import VIEW_CODES


@pytest.fixture
def views(rng):
    anterior = rng.poisson(40.0, (64, 24)).astype(np.uint16)
    posterior = rng.poisson(40.0, (64, 24)).astype(np.uint16)
    anterior[10, 3] = 65535  # full 16-bit range survives
    posterior[20, 2] = 900  # a hot spot on the image's left in the shared convention
    return anterior, posterior


def test_round_trip_and_file_layout(tmp_path, views):
    anterior, posterior = views
    path = write_nm_wholebody(anterior, posterior, tmp_path / "wb.dcm", pixel_spacing=(2.4, 2.2), patient_id="B01")
    ds = pydicom.dcmread(path)
    assert ds.Modality == "NM" and ds.NumberOfFrames == 2 and ds.BitsAllocated == 16
    assert "WHOLE BODY" in ds.ImageType and list(ds.DetectorVector) == [1, 2]
    codes = [item.ViewCodeSequence[0].CodeValue for item in ds.DetectorInformationSequence]
    assert codes == [VIEW_CODES["anterior"][0], VIEW_CODES["posterior"][0]]
    # The file stores the posterior as seen from behind: mirrored left-right.
    np.testing.assert_array_equal(ds.pixel_array[0], anterior)
    np.testing.assert_array_equal(ds.pixel_array[1], posterior[:, ::-1])
    out = read_nm_wholebody(path)
    assert set(out) == {"anterior", "posterior"}
    np.testing.assert_array_equal(out["anterior"].array, anterior)
    np.testing.assert_array_equal(out["posterior"].array, posterior)
    assert out["posterior"].array[20, 2] == 900
    for view, vol in out.items():
        assert vol.modality == "NM" and vol.spacing == (2.4, 2.2) and vol.array.dtype == np.float32
        assert vol.meta["view"] == view and vol.meta["patient_id"] == "B01"
    assert out["posterior"].meta["flipped_lr"] and not out["anterior"].meta["flipped_lr"]
    as_stored = read_nm_wholebody(path, flip_posterior=False)
    np.testing.assert_array_equal(as_stored["posterior"].array, posterior[:, ::-1])
    assert not as_stored["posterior"].meta["flipped_lr"]


def test_views_found_by_detector_vector_not_frame_order(tmp_path, views):
    anterior, posterior = views
    path = write_nm_wholebody(anterior, posterior, tmp_path / "wb.dcm")
    ds = pydicom.dcmread(path)
    ds.DetectorVector = [2, 1]  # frame 0 now comes from detector 2 (posterior code)
    ds.save_as(path)
    out = read_nm_wholebody(path)
    np.testing.assert_array_equal(out["posterior"].array, anterior[:, ::-1])
    np.testing.assert_array_equal(out["anterior"].array, posterior[:, ::-1])
    assert out["posterior"].meta["frame_index"] == 0


def test_code_meaning_fallback_and_rescale(tmp_path, views):
    anterior, posterior = views
    path = write_nm_wholebody(anterior, posterior, tmp_path / "wb.dcm")
    ds = pydicom.dcmread(path)
    for item, meaning in zip(ds.DetectorInformationSequence, ("ANT", "POST")):
        item.ViewCodeSequence[0].CodeValue = "X"
        item.ViewCodeSequence[0].CodeMeaning = {"ANT": "anterior", "POST": "posterior view"}[meaning]
    ds.RescaleSlope = "0.5"
    ds.save_as(path)
    out = read_nm_wholebody(path)
    np.testing.assert_allclose(out["anterior"].array, anterior * 0.5)


def test_volume_inputs_carry_spacing_and_deterministic_uids(tmp_path, views):
    anterior, posterior = views
    ant = Volume(anterior, (3.0, 3.0))
    post = Volume(posterior, (3.0, 3.0))
    a = write_nm_wholebody(ant, post, tmp_path / "a.dcm", uid_seed="p1")
    b = write_nm_wholebody(ant, post, tmp_path / "b.dcm", uid_seed="p1")
    assert a.read_bytes() == b.read_bytes()
    assert read_nm_wholebody(a)["anterior"].spacing == (3.0, 3.0)
