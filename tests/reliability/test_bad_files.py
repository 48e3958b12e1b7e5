"""Bad NIfTI, DICOM, npz and dataset files: one-line errors naming the file, bounded time and memory."""

from __future__ import annotations

import gzip
import json

import nibabel as nib
import numpy as np
import pydicom
import pytest

from tfmedseg.errors import DatasetLayoutError, InvalidInputError
from tfmedseg.io import Volume, canonical_affine, read_dicom_series, write_dicom_series
from tfmedseg.io.nifti import read_nifti
from tfmedseg.io.npz import load_npz


# ----------------------------------------------------------------------------- NIfTI
def _nifti_header_bytes(shape, dtype=np.float32, pixdim=(1.0, 1.0, 1.0), vox_offset=352.0, srow=None) -> bytes:
    header = nib.Nifti1Header()
    header.set_data_shape(shape)
    header.set_data_dtype(dtype)
    header["pixdim"][1:4] = pixdim
    header["vox_offset"] = vox_offset
    if srow is not None:  # sform of our choice (a singular one), no qform
        header["sform_code"], header["qform_code"] = 1, 0
        header["srow_x"], header["srow_y"], header["srow_z"] = srow
    return header.binaryblock + b"\0\0\0\0"


def _raw_nifti(path, shape=(4, 4, 4), **header):
    data = _nifti_header_bytes(shape, **header) + np.zeros(shape, np.float32).tobytes()
    return _write(path, gzip.compress(data) if path.name.endswith(".gz") else data)


def _save(path, array, affine=None, **header_fields):
    image = nib.Nifti1Image(array, np.eye(4) if affine is None else affine)
    for key, value in header_fields.items():
        image.header[key] = value
    nib.save(image, str(path))
    return path


NIFTI_CASES = {
    "gz_claims_1024_cubed": lambda d: _write(d / "bomb.nii.gz", gzip.compress(_nifti_header_bytes((1024, 1024, 1024)))),
    "nii_claims_more_than_it_holds": lambda d: _write(d / "short.nii", _nifti_header_bytes((64, 64, 64)) + b"\0" * 1000),
    "claims_beyond_the_voxel_limit": lambda d: _write(d / "huge.nii", _nifti_header_bytes((32000, 32000, 32000))),
    "empty_file": lambda d: _write(d / "empty.nii.gz", b""),
    "text_file": lambda d: _write(d / "notes.nii", b"hello, not a NIfTI file\n" * 20),
    # a whole gzip stream of half the declared voxels: nibabel's "Expected .. bytes, got .. bytes from \n - could the
    # file be damaged?" made the error two lines
    "gz_holds_half_its_voxels": lambda d: _write(d / "half.nii.gz", gzip.compress(_nifti_header_bytes((8, 8, 8)) + b"\0" * 1024)),
    "truncated_gzip": lambda d: _write(d / "cut.nii.gz", gzip.compress(_nifti_header_bytes((8, 8, 8)) + np.random.default_rng(0).bytes(2048))[:600]),
    "rgb_voxels": lambda d: _save(d / "rgb.nii.gz", np.zeros((4, 4, 4), dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])),
    "zero_pixdim": lambda d: _raw_nifti(d / "pix0.nii.gz", pixdim=(1.0, 0.0, 1.0)),
    "negative_pixdim": lambda d: _raw_nifti(d / "pixneg.nii", pixdim=(1.0, -2.0, 1.0)),
    "nan_voxels": lambda d: _save(d / "nan.nii.gz", np.full((4, 4, 4), np.nan, np.float32)),
    "inf_voxels": lambda d: _save(d / "inf.nii.gz", np.full((4, 4, 4), np.inf, np.float32)),
    "four_d": lambda d: _save(d / "4d.nii.gz", np.zeros((4, 4, 4, 3), np.float32)),
    "two_d": lambda d: _save(d / "2d.nii.gz", np.zeros((4, 4), np.float32)),
    "singular_affine": lambda d: _raw_nifti(d / "sing.nii.gz", srow=(np.zeros(4), np.zeros(4), np.zeros(4))),
    "wrong_suffix": lambda d: _write(d / "scan.img", b"x"),
    "missing_file": lambda d: d / "nope.nii.gz",
}


def _write(path, data: bytes):
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("case", sorted(NIFTI_CASES))
def test_bad_nifti(tmp_path, probe, case):
    path = NIFTI_CASES[case](tmp_path)
    probe.error(lambda: read_nifti(path, "CT"), path.name, watch=tmp_path, kind=InvalidInputError)


# ----------------------------------------------------------------------------- DICOM
@pytest.fixture(scope="module")
def series(tmp_path_factory):
    vol = Volume(np.full((3, 8, 8), -1000.0, np.float32), (2.0, 1.0, 1.0), canonical_affine((2.0, 1.0, 1.0)), "CT")
    out = tmp_path_factory.mktemp("dicom") / "ct"
    write_dicom_series(vol, out, uid_seed="reliability")
    return out


def _edit_first(series, tmp_path, edit):
    import shutil

    folder = tmp_path / "series"
    shutil.copytree(series, folder)
    first = min(folder.iterdir())
    ds = pydicom.dcmread(first)
    edit(ds)
    ds.save_as(first)
    return folder, first


def _set(keyword, value):
    def edit(ds):
        if value is None:
            delattr(ds, keyword)
        else:
            setattr(ds, keyword, value)
    return edit


def _raw(keyword, vr, value: bytes):
    def edit(ds):
        tag = pydicom.datadict.tag_for_keyword(keyword)
        ds[tag] = pydicom.dataelem.RawDataElement(pydicom.tag.Tag(tag), vr, len(value), value, 0, False, True)
    return edit


def _private_syntax(ds):
    ds.file_meta.TransferSyntaxUID = "1.2.3.4.5.6.7"


DICOM_EDITS = {
    "rows_missing": _set("Rows", None),
    "columns_missing": _set("Columns", None),
    "rescale_slope_text": _raw("RescaleSlope", "DS", b"abc "),
    "rescale_slope_zero": _set("RescaleSlope", "0"),
    "rescale_slope_nan": _raw("RescaleSlope", "DS", b"nan "),
    "number_of_frames_text": _raw("NumberOfFrames", "IS", b"many"),
    "number_of_frames_100000": _set("NumberOfFrames", 100000),
    "private_transfer_syntax": _private_syntax,
    "pixel_spacing_missing": _set("PixelSpacing", None),
    "pixel_spacing_text": _raw("PixelSpacing", "DS", b"a\\b "),
    "orientation_missing": _set("ImageOrientationPatient", None),
}


@pytest.mark.parametrize("case", sorted(DICOM_EDITS))
def test_bad_dicom_tags(series, tmp_path, probe, case):
    folder, first = _edit_first(series, tmp_path, DICOM_EDITS[case])
    probe.error(lambda: read_dicom_series(folder), (first.name, str(folder)), watch=tmp_path, kind=InvalidInputError)


def test_dicom_truncated_header(series, tmp_path, probe):
    folder, first = _edit_first(series, tmp_path, lambda ds: None)
    first.write_bytes(first.read_bytes()[:200])
    probe.error(lambda: read_dicom_series(folder), first.name, watch=tmp_path)


def test_dicom_empty_folder_and_file_instead_of_folder(series, tmp_path, probe):
    (tmp_path / "empty").mkdir()
    probe.error(lambda: read_dicom_series(tmp_path / "empty"), "empty", watch=tmp_path)
    first = min(series.iterdir())
    probe.error(lambda: read_dicom_series(first), first.name)


def test_dicom_folder_of_text_files(tmp_path, probe):
    folder = tmp_path / "texts"
    folder.mkdir()
    for k in range(3):
        (folder / f"note{k}.txt").write_text("not DICOM")
    probe.error(lambda: read_dicom_series(folder), "texts", watch=tmp_path)


def test_big_non_dicom_file_is_skipped_cheaply(series, tmp_path, probe):
    import shutil
    import time

    folder = tmp_path / "series"
    shutil.copytree(series, folder)
    with open(folder / "video.bin", "wb") as f:  # 100 MB of non-DICOM bytes (sparse: no disk cost)
        f.truncate(100 << 20)
        f.seek(0)
        f.write(b"\x89PNG not dicom")
    start = time.perf_counter()
    vol = read_dicom_series(folder)
    assert time.perf_counter() - start < 5.0 and vol.shape == (3, 8, 8)


def test_series_in_subfolders_are_found(series, tmp_path):
    import shutil

    shutil.copytree(series, tmp_path / "patient" / "study" / "series1")
    assert read_dicom_series(tmp_path / "patient").shape == (3, 8, 8)  # before: "directory is empty"


# ----------------------------------------------------------------------------- npz and dataset files
def test_npz_object_array_is_refused(tmp_path, probe):
    path = tmp_path / "representative.npz"
    np.savez(path, inputs=np.array([{"a": 1}], dtype=object))
    probe.error(lambda: load_npz(path), path.name, watch=tmp_path, match="not numeric")


def test_npz_not_a_zip_and_missing_key(tmp_path, probe):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"PK\x03\x04garbage")
    probe.error(lambda: load_npz(bad), bad.name, watch=tmp_path)
    good = tmp_path / "good.npz"
    np.savez(good, other=np.zeros(3))
    probe.error(lambda: load_npz(good, required=("inputs",)), good.name, watch=tmp_path, match="inputs")


def test_representative_npz_with_object_array_through_export(tmp_path, probe):
    import keras

    from tfmedseg.errors import ExportError
    from tfmedseg.export.run_dir import load_for_export, save_for_export
    from tfmedseg.export.spec import ServingSpec

    inp = keras.Input((8, 8, 1))
    run = save_for_export(keras.Model(inp, keras.layers.Conv2D(2, 1)(inp)), tmp_path / "run", ServingSpec(context_slices=1, mode="2d"))
    np.savez(run / "representative.npz", inputs=np.array([object()], dtype=object))
    probe.error(lambda: load_for_export(run), "representative.npz", watch=tmp_path, kind=ExportError)


@pytest.mark.parametrize("mask", ["../../outside.png", "/etc/passwd", "masks/../../../x.png", "", 5, "C:\\\\x.png"])
def test_annotation_mask_path_leaving_the_dataset_is_refused(tmp_path, probe, mask):
    from tfmedseg.datasets.bone_scan import parse_annotation

    root = tmp_path / "data"
    patient = root / "p1"
    patient.mkdir(parents=True)
    from PIL import Image

    Image.fromarray(np.ones((8, 8), np.uint8) * 255).save(tmp_path / "outside.png")
    annotation = patient / "annotation.json"
    annotation.write_text(json.dumps({"views": {"anterior": {"chest_box": [0, 0, 4, 4],
                                                            "lesions": [{"class": "malignant", "mask": mask}]}}}))
    probe.error(lambda: parse_annotation(annotation, {"anterior": (8, 8), "posterior": (8, 8)}, root=root),
                "annotation.json", watch=tmp_path, kind=InvalidInputError)


def test_symlink_mask_leaving_the_dataset_is_refused(tmp_path, probe):
    from PIL import Image

    from tfmedseg.datasets.bone_scan import parse_annotation

    root = tmp_path / "data"
    (root / "p1" / "masks").mkdir(parents=True)
    Image.fromarray(np.ones((8, 8), np.uint8) * 255).save(tmp_path / "secret.png")
    (root / "p1" / "masks" / "m.png").symlink_to(tmp_path / "secret.png")
    annotation = root / "p1" / "annotation.json"
    annotation.write_text(json.dumps({"views": {"anterior": {"chest_box": [0, 0, 4, 4],
                                                            "lesions": [{"class": "malignant", "mask": "masks/m.png"}]}}}))
    probe.error(lambda: parse_annotation(annotation, {"anterior": (8, 8), "posterior": (8, 8)}, root=root),
                "annotation.json", watch=tmp_path, match="leaves the dataset root")


def test_missing_dataset_root(tmp_path, probe):
    from tfmedseg.datasets.bone_scan import load_bone_scan

    probe.error(lambda: load_bone_scan(tmp_path / "nothing"), "nothing", kind=DatasetLayoutError)



def test_phantoms_over_a_truncated_marker_or_into_a_file(tmp_path, probe):
    from tfmedseg.datasets.phantoms import COMPLETE_MARKER, ensure_phantoms

    out = tmp_path / "lits"
    out.mkdir()
    (out / COMPLETE_MARKER).write_text('{"dataset": "li')
    probe.error(lambda: ensure_phantoms("lits", out, cases=1), COMPLETE_MARKER, watch=tmp_path, kind=DatasetLayoutError)
    (tmp_path / "afile").write_text("x")
    probe.error(lambda: ensure_phantoms("lits", tmp_path / "afile" / "lits", cases=1), "afile", watch=tmp_path)
