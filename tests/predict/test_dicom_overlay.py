"""tfmedseg.io.dicom_overlay: colours, windowing, blending, the RGB series writer and DICOM-SEG edge cases."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest

from tfmedseg.errors import InvalidInputError
from tfmedseg.io import Volume, canonical_affine, read_dicom_series, write_dicom_series
from tfmedseg.io.dicom_overlay import (
    blend_overlay,
    label_colors,
    window_to_uint8,
    write_overlay_series,
    write_segmentation_dicom_seg,
)


@pytest.fixture(scope="module")
def series(tmp_path_factory):
    """A 3-slice CT series of 0 HU with one slice of 400 HU, read back."""
    ct = np.zeros((3, 4, 5), np.float32)
    ct[2] = 400.0
    out = tmp_path_factory.mktemp("overlay") / "ct"
    write_dicom_series(Volume(ct, (3.0, 1.0, 1.0), canonical_affine((3.0, 1.0, 1.0)), "CT"), out, series_number=5, uid_seed="s")
    return read_dicom_series(out)


def test_label_colors_by_name_then_by_index():
    assert label_colors(("background", "liver", "tumour"), 3) == {1: (0, 255, 0), 2: (255, 0, 0)}
    assert label_colors(("background", "tumour"), 2) == {1: (255, 0, 0)}  # a tumour-only model paints red
    assert label_colors(None, 5) == {1: (0, 255, 0), 2: (255, 0, 0), 3: (0, 0, 255), 4: (255, 255, 0)}
    assert label_colors(None, 10)[9] == (0, 255, 0)  # the palette repeats after 8 colours


def test_window_to_uint8_values():
    hu = np.array([-1000.0, -160.0, 40.0, 70.0, 240.0, 3000.0])
    # level 40, width 400: [-160, 240] -> [0, 255]; 40 HU -> 127.5 -> 128 (round half to even), 70 HU -> 146.625 -> 147
    np.testing.assert_array_equal(window_to_uint8(hu, (40.0, 400.0)), [0, 0, 128, 147, 255, 255])
    ramp = np.arange(1001, dtype=np.float64)  # percentiles 0.5 / 99.5 -> 5 / 995
    auto = window_to_uint8(ramp, None)
    assert auto[0] == 0 and auto[5] == 0 and auto[995] == 255 and auto[500] == 128
    with pytest.raises(InvalidInputError, match="window"):
        window_to_uint8(hu, (40.0, 0.0))


def test_blend_overlay_arithmetic():
    grey = np.array([[100, 200], [0, 255]], np.uint8)
    labels = np.array([[0, 1], [2, 7]], np.uint8)
    rgb = blend_overlay(grey, labels, {1: (0, 255, 0), 2: (255, 0, 0)}, opacity=0.3)
    np.testing.assert_array_equal(rgb[0, 0], [100, 100, 100])  # background stays grey
    np.testing.assert_array_equal(rgb[0, 1], [140, 216, 140])  # 0.7 * 200 = 140; 140 + 76.5 = 216.5 -> 216
    np.testing.assert_array_equal(rgb[1, 0], [76, 0, 0])  # round(76.5) -> 76 (half to even)
    np.testing.assert_array_equal(rgb[1, 1], [255, 255, 255])  # a label without a colour stays grey
    np.testing.assert_array_equal(blend_overlay(grey, labels, {1: (0, 255, 0)}, 1.0)[0, 1], [0, 255, 0])
    np.testing.assert_array_equal(blend_overlay(grey, labels, {1: (0, 255, 0)}, 0.0)[..., 0], grey)
    with pytest.raises(InvalidInputError, match="opacity"):
        blend_overlay(grey, labels, {}, 1.5)
    with pytest.raises(InvalidInputError, match="does not fit"):
        blend_overlay(grey, labels[:1], {}, 0.3)


def test_writer_options_and_deterministic_uids(series, tmp_path):
    labels = np.zeros(series.shape, np.uint8)
    labels[2, 1, 1] = 3
    a = write_overlay_series(series, labels, tmp_path / "a", sop_class="source", window=(100.0, 800.0), uid_seed="x",
                             series_description="m" * 80)
    b = write_overlay_series(series, labels, tmp_path / "b", uid_seed="x")
    ds_a, ds_b = pydicom.dcmread(a[2]), pydicom.dcmread(b[2])
    assert ds_a.SOPClassUID == "1.2.840.10008.5.1.4.1.1.2" and "ConversionType" not in ds_a  # CT class kept
    assert ds_a.SOPInstanceUID == ds_b.SOPInstanceUID and ds_a.SeriesNumber == 1005
    assert ds_a.SeriesDescription == "m" * 64  # LO: at most 64 characters
    # window (100, 800) = [-300, 500] HU: 400 HU -> 700 / 800 * 255 = 223.125 -> 223;
    # label 3 = blue: (0.7 * 223, 0.7 * 223, 0.7 * 223 + 76.5) = (156.1, 156.1, 232.6) -> (156, 156, 233)
    np.testing.assert_array_equal(ds_a.pixel_array[1, 1], [156, 156, 233])
    np.testing.assert_array_equal(ds_a.pixel_array[0, 0], [223, 223, 223])
    np.testing.assert_array_equal(pydicom.dcmread(a[0]).pixel_array, 96)  # 0 HU -> 300 / 800 * 255 = 95.6 -> 96
    np.testing.assert_array_equal(ds_b.pixel_array[0, 0], [255, 255, 255])  # auto CT window 40/400: 400 HU saturates


def test_writer_rejects_bad_sources_and_keeps_existing_output(series, tmp_path):
    labels = np.zeros(series.shape, np.uint8)
    plain = Volume(series.array, series.spacing, series.affine, "CT")
    with pytest.raises(InvalidInputError, match="not read from a DICOM series"):
        write_overlay_series(plain, labels, tmp_path / "x")
    with pytest.raises(InvalidInputError, match="does not fit the series grid"):
        write_overlay_series(series, labels[:2], tmp_path / "x")
    with pytest.raises(InvalidInputError, match="sop_class"):
        write_overlay_series(series, labels, tmp_path / "x", sop_class="ct")
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "keep.txt").write_text("mine")
    with pytest.raises(InvalidInputError, match="not empty"):
        write_overlay_series(series, labels, tmp_path / "busy")
    assert [p.name for p in (tmp_path / "busy").iterdir()] == ["keep.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["busy"]  # no temporary directory left behind
    assert write_segmentation_dicom_seg(series, labels, tmp_path / "seg.dcm") is None  # empty map: no SEG
    assert not (tmp_path / "seg.dcm").exists()


def test_overlay_follows_the_source_pixel_order_of_a_mirrored_series(tmp_path):
    """Source rows run towards the patient's right (IOP row = -x): the canonical array is mirrored
    relative to the files, and each overlay file must be in its source file's pixel order again."""
    ct = np.full((2, 3, 4), -1000.0, np.float32)  # black in the CT window 40/400
    ct[:, :, 0] = 240.0  # canonical column 0 (patient right) white
    write_dicom_series(Volume(ct, (2.0, 1.0, 1.0), canonical_affine((2.0, 1.0, 1.0)), "CT"), tmp_path / "ct", uid_seed="m")
    for path in sorted((tmp_path / "ct").iterdir()):
        ds = pydicom.dcmread(path)
        pixels = ds.pixel_array[:, ::-1].copy()
        x0 = float(ds.ImagePositionPatient[0])
        ds.ImagePositionPatient = [x0 + 3.0, *ds.ImagePositionPatient[1:]]
        ds.ImageOrientationPatient = [-1, 0, 0, 0, 1, 0]
        ds.PixelData = pixels.tobytes()
        ds.save_as(path)
    series = read_dicom_series(tmp_path / "ct")
    np.testing.assert_array_equal(series.array, ct)  # the reader undoes the mirroring
    labels = np.zeros(ct.shape, np.uint8)
    labels[1, 0, 0] = 1  # canonical (slice 1, row 0, column 0) = last column of file 1
    files = write_overlay_series(series, labels, tmp_path / "ovl", label_names=("background", "liver"))
    # The slice normal row x column = -z, so the series is sorted from superior to inferior: identify
    # the slices by their position (canonical slice k lies at z = 2 k mm).
    by_z = {float(pydicom.dcmread(f).ImagePositionPatient[2]): pydicom.dcmread(f) for f in files}
    assert sorted(by_z) == [0.0, 2.0] and float(pydicom.dcmread(files[0]).ImagePositionPatient[2]) == 2.0
    for ds in by_z.values():  # the bright canonical column 0 is the files' last column
        np.testing.assert_array_equal(ds.pixel_array[1:, 3], 255)
        np.testing.assert_array_equal(ds.pixel_array[:, :3], 0)
        source = pydicom.dcmread(next(p for p in (tmp_path / "ct").iterdir()
                                      if pydicom.dcmread(p).SOPInstanceUID == ds.SourceImageSequence[0].ReferencedSOPInstanceUID))
        assert list(source.ImagePositionPatient) == list(ds.ImagePositionPatient)
        assert [float(v) for v in ds.ImageOrientationPatient] == [-1, 0, 0, 0, 1, 0]
    np.testing.assert_array_equal(by_z[2.0].pixel_array[0, 3], [178, 255, 178])  # 0.7 * 255 = 178.5 - eps -> 178; + 76.5
    np.testing.assert_array_equal(by_z[0.0].pixel_array[0, 3], [255, 255, 255])
