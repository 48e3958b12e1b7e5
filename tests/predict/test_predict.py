"""``python -m tfmedseg.predict``: both model kinds x NIfTI / DICOM inputs, geometry, overlay pixels, errors."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import nibabel as nib
import numpy as np
import pydicom
import pytest

from nifti_files import NIFTI_AFFINE, write_nifti  # tests/support
from tfmedseg.io import Volume, canonical_affine, read_dicom_series, read_nifti, write_dicom_series
from tfmedseg.io.volume import from_canonical
from tfmedseg.predict import main

# Source NIfTI geometry: voxel axes (i, j, k) -> (-x, +y, +z) RAS at 0.8 x 0.8 x 2.5 mm, so the canonical
# (S, P, L) array is a transpose of the file's array with the j axis flipped.
ORIGIN_LPS = (10.0, -20.0, 30.0)

# Hand-computed overlay colours (window 40/400 HU -> grey, then 30 % colour):
# 70 HU -> grey round(230 / 400 * 255) = 147; liver: (0.7 * 147, 0.7 * 147 + 0.3 * 255, 0.7 * 147) -> (103, 179, 103)
# 180 HU -> grey round(340 / 400 * 255) = 217; tumour: (0.7 * 217 + 76.5, 0.7 * 217, 0.7 * 217) -> (228, 152, 152)
LIVER_RGB, TUMOUR_RGB, BLOB_RGB, AIR_RGB = (103, 179, 103), (228, 152, 152), (147, 147, 147), (0, 0, 0)


@pytest.fixture(scope="module")
def nifti_ct(tmp_path_factory, phantom):
    path = write_nifti(tmp_path_factory.mktemp("nifti") / "ct.nii.gz", phantom.ct())
    np.testing.assert_array_equal(read_nifti(path, "CT").array, phantom.ct())  # the fixture is what the tests assume
    return path


@pytest.fixture(scope="module")
def dicom_ct(tmp_path_factory, phantom):
    vol = Volume(phantom.ct(), phantom.spacing, canonical_affine(phantom.spacing, ORIGIN_LPS), "CT")
    out = tmp_path_factory.mktemp("dicom") / "ct"
    write_dicom_series(vol, out, series_number=3, patient_id="PHANTOM", series_description="phantom CT", uid_seed="phantom")
    return out


def _run(capsys, *args):
    rc = main([str(a) for a in args])
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


@pytest.mark.parametrize("kind", ["savedmodel", "run_dir", "run_dir_spacing"])
def test_nifti_input_writes_label_map_in_source_geometry(kind, models, nifti_ct, phantom, tmp_path, capsys):
    out = tmp_path / "sub" / "label.nii.gz"
    rc, stdout, err = _run(capsys, "--model", models[kind], "--input", nifti_ct, "--output", out)
    assert rc == 0, err
    written, source = nib.load(str(out)), nib.load(str(nifti_ct))
    np.testing.assert_array_equal(written.affine, source.affine)  # bit for bit (float32 sform of the input)
    np.testing.assert_allclose(written.affine, NIFTI_AFFINE, atol=1e-6)
    assert written.shape == source.shape == (20, 16, 6)
    assert written.get_data_dtype() == np.uint8
    assert int(written.header["qform_code"]) == 1 and int(written.header["sform_code"]) == 2
    np.testing.assert_array_equal(np.asarray(written.dataobj), from_canonical(phantom.expected(), nib.orientations.io_orientation(NIFTI_AFFINE)))
    back = read_nifti(out, "SEG")
    np.testing.assert_array_equal(back.array, phantom.expected())  # the stray 70 HU blob is removed (largest liver component)
    np.testing.assert_allclose(back.affine, read_nifti(nifti_ct).affine)
    assert "liver: 448 voxels, 0.72 ml" in stdout  # (4 * 10 * 12 - 2 * 4 * 4) voxels of 1.6 ul
    if kind == "run_dir_spacing":
        assert "to (3, 8, 10) at 5 x 1.6 x 1.6 mm" in stdout  # an INFO log line


def test_bare_keras_file_reads_its_context_from_the_input_channels(models, nifti_ct, phantom, tmp_path, capsys):
    out = tmp_path / "label.nii"
    rc, stdout, err = _run(capsys, "--model", models["keras_file"], "--input", nifti_ct, "--output", out)
    assert rc == 0, err
    assert "3-slice 2.5D model" in err  # a warning on the log
    # No serving_spec.json: no largest-component post-processing, so the blob stays liver.
    np.testing.assert_array_equal(read_nifti(out, "SEG").array, phantom.expected(keep_blob=True))


def _expected_rgb(phantom):
    labels = phantom.expected()
    rgb = np.zeros(labels.shape + (3,), np.uint8)
    rgb[labels == 0] = AIR_RGB
    rgb[phantom.blob] = BLOB_RGB
    rgb[labels == 1] = LIVER_RGB
    rgb[labels == 2] = TUMOUR_RGB
    return rgb


@pytest.mark.parametrize("kind", ["savedmodel", "run_dir"])
def test_dicom_input_writes_overlay_series_label_map_and_seg(kind, models, dicom_ct, phantom, tmp_path, capsys):
    out = tmp_path / "result"
    extra = ["--series-number", "77", "--no-dicom-seg"] if kind == "run_dir" else []
    rc, stdout, err = _run(capsys, "--model", models[kind], "--input", dicom_ct, "--output", out, *extra)
    assert rc == 0, err
    source_files = sorted(dicom_ct.iterdir())
    overlay_files = sorted((out / "overlay").iterdir())
    assert len(overlay_files) == len(source_files) == 6
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging directory left
    expected_rgb = _expected_rgb(phantom)
    new_uids = set()
    series_uids = set()
    for k, (src_path, ovl_path) in enumerate(zip(source_files, overlay_files)):
        src, ovl = pydicom.dcmread(src_path), pydicom.dcmread(ovl_path)
        assert ovl.PhotometricInterpretation == "RGB" and ovl.SamplesPerPixel == 3 and ovl.PlanarConfiguration == 0
        assert (ovl.BitsAllocated, ovl.BitsStored, ovl.HighBit, ovl.PixelRepresentation) == (8, 8, 7, 0)
        assert "RescaleIntercept" not in ovl and "WindowCenter" not in ovl
        assert ovl.SOPClassUID == "1.2.840.10008.5.1.4.1.1.7" and ovl.ConversionType == "WSD"
        assert ovl.StudyInstanceUID == src.StudyInstanceUID and ovl.FrameOfReferenceUID == src.FrameOfReferenceUID
        assert ovl.PatientID == "PHANTOM" and ovl.Modality == "CT"
        assert ovl.SeriesInstanceUID != src.SeriesInstanceUID and ovl.SOPInstanceUID != src.SOPInstanceUID
        assert ovl.file_meta.MediaStorageSOPInstanceUID == ovl.SOPInstanceUID
        assert ovl.SeriesNumber == (77 if kind == "run_dir" else 1003)
        assert ovl.SeriesDescription == ("liver_run overlay" if kind == "run_dir" else "liver_threshold overlay")
        assert list(ovl.ImagePositionPatient) == list(src.ImagePositionPatient)
        assert list(ovl.ImageOrientationPatient) == list(src.ImageOrientationPatient)
        assert list(ovl.PixelSpacing) == list(src.PixelSpacing)
        assert ovl.SourceImageSequence[0].ReferencedSOPInstanceUID == src.SOPInstanceUID
        # Slice k of the sorted series is canonical slice k here (axial, ascending z).
        np.testing.assert_array_equal(ovl.pixel_array, expected_rgb[k])
        new_uids.add(ovl.SOPInstanceUID)
        series_uids.add(ovl.SeriesInstanceUID)
    assert len(new_uids) == 6 and len(series_uids) == 1
    label = read_nifti(out / "label.nii.gz", "SEG")
    np.testing.assert_array_equal(label.array, phantom.expected())
    np.testing.assert_allclose(label.affine, read_dicom_series(dicom_ct).affine, atol=1e-6)
    assert (out / "seg.dcm").is_file() == (kind == "savedmodel")


def test_dicom_seg_holds_the_labels_per_source_slice(models, dicom_ct, phantom, tmp_path, capsys):
    import highdicom as hd

    out = tmp_path / "result"
    rc, _, err = _run(capsys, "--model", models["savedmodel"], "--input", dicom_ct, "--output", out)
    assert rc == 0, err
    seg = hd.seg.segread(str(out / "seg.dcm"))
    source = [pydicom.dcmread(p) for p in sorted(dicom_ct.iterdir())]
    assert seg.Modality == "SEG" and seg.StudyInstanceUID == source[0].StudyInstanceUID
    assert seg.FrameOfReferenceUID == source[0].FrameOfReferenceUID and seg.SeriesNumber == 2003
    assert [d.SegmentLabel for d in seg.SegmentSequence] == ["liver", "tumour"]
    assert seg.SegmentSequence[0].SegmentedPropertyTypeCodeSequence[0].CodeValue == "10200004"  # SNOMED CT liver
    assert seg.SegmentSequence[1].SegmentedPropertyTypeCodeSequence[0].CodeValue == "108369006"  # neoplasm
    pixels = seg.get_pixels_by_source_instance(
        source_sop_instance_uids=[ds.SOPInstanceUID for ds in source], combine_segments=True,
    )
    np.testing.assert_array_equal(pixels, phantom.expected())


def test_folder_with_two_series_needs_series_uid(models, dicom_ct, phantom, tmp_path, capsys):
    folder = tmp_path / "two"
    shutil.copytree(dicom_ct, folder)
    other = Volume(phantom.ct()[:3] + 5, phantom.spacing, canonical_affine(phantom.spacing), "CT")
    write_dicom_series(other, tmp_path / "other", series_number=9, uid_seed="other")
    for p in (tmp_path / "other").iterdir():
        shutil.copy(p, folder / f"B_{p.name}")
    rc, _, err = _run(capsys, "--model", models["savedmodel"], "--input", folder, "--output", tmp_path / "o.nii.gz")
    assert rc == 2 and "contains 2 series" in err and str(folder) in err
    assert "pass --series-uid (or --modality) to choose one" in err and "series_uid=" not in err  # the options to type
    assert not (tmp_path / "o.nii.gz").exists()
    uid = pydicom.dcmread(next(dicom_ct.iterdir())).SeriesInstanceUID
    rc, _, err = _run(capsys, "--model", models["savedmodel"], "--input", folder, "--output", tmp_path / "o.nii.gz", "--series-uid", uid)
    assert rc == 0, err
    np.testing.assert_array_equal(read_nifti(tmp_path / "o.nii.gz", "SEG").array, phantom.expected())


# ------------------------------------------------------------------------------------------------
# Bad input: one "error: <path>: <cause>" line on stderr, exit status 2, nothing written.
# ------------------------------------------------------------------------------------------------


def _bad_model_without_segment(root):
    import tensorflow as tf

    module = tf.Module()
    module.f = tf.function(lambda x: {"y": x * 2.0}, input_signature=[tf.TensorSpec([None], tf.float32)])
    tf.saved_model.save(module, str(root), signatures={"serving_default": module.f.get_concrete_function()})
    (root / "metadata.json").write_text(json.dumps({"model_name": "bad", "serving_spec": {}}))
    return root


def _spec_of(models):
    from tfmedseg.inference.spec import ServingSpec

    return ServingSpec.from_dict(json.loads((models["run_dir"] / "serving_spec.json").read_text()))


def _case(name, tmp_path, models, nifti_ct, dicom_ct):
    """(model, input, output, text the message must contain) for each bad-input case."""
    out = tmp_path / "out.nii.gz"
    good = models["savedmodel"]
    if name == "missing_input":
        return good, tmp_path / "nope.nii.gz", out, "input does not exist"
    if name == "corrupt_nifti":
        bad = tmp_path / "corrupt.nii.gz"
        bad.write_bytes(b"\x1f\x8b\x08\x00garbage" * 10)
        return good, bad, out, "corrupt"
    if name == "4d_nifti":
        bad = tmp_path / "4d.nii.gz"
        nib.save(nib.Nifti1Image(np.zeros((4, 4, 4, 2), np.float32), np.eye(4)), str(bad))
        return good, bad, out, "expected a 3-D volume"
    if name == "nan_voxels":
        ct = np.full((6, 16, 20), -1000.0, np.float32)
        ct[3, 4, 5] = np.nan
        return good, write_nifti(tmp_path / "nan.nii.gz", ct), out, "NaN"
    if name == "output_parent_is_a_file":
        (tmp_path / "afile").write_text("x")
        return good, nifti_ct, tmp_path / "afile" / "sub" / "o.nii.gz", "is a file"
    if name == "output_exists":
        out.write_bytes(b"keep me")
        return good, nifti_ct, out, "--overwrite"
    if name == "nifti_input_folder_output":
        return good, nifti_ct, tmp_path / "folder", "must be a .nii or .nii.gz file"
    if name == "model_without_metadata":
        copy = tmp_path / "m" / "1"
        shutil.copytree(good, copy)
        (copy / "metadata.json").unlink()
        return copy, nifti_ct, out, "no metadata.json"
    if name == "model_without_segment_signature":
        return _bad_model_without_segment(tmp_path / "bad" / "1"), nifti_ct, out, "no 'segment' signature"
    if name in ("spec_does_not_fit_model", "model_fails_on_scan"):
        import dataclasses

        from tfmedseg.export.run_dir import load_for_export, save_for_export

        model = load_for_export(models["run_dir"]).model
        spec = dataclasses.replace(_spec_of(models), context_slices=5) if name == "spec_does_not_fit_model" else \
            dataclasses.replace(_spec_of(models), mode="3d_slab")  # feeds [B, 3, H, W, 1] to a 2D model
        run = save_for_export(model, tmp_path / name, spec)
        text = "model takes 3 input channels" if name == "spec_does_not_fit_model" else "the model failed on a scan of shape (6, 16, 20): InvalidArgumentError: "
        return run, nifti_ct, out, text
    if name == "not_a_model":
        (tmp_path / "empty_model").mkdir()
        return tmp_path / "empty_model", dicom_ct, tmp_path / "res", "not a model"
    raise ValueError(name)


@pytest.mark.parametrize("name", [
    "missing_input", "corrupt_nifti", "4d_nifti", "nan_voxels", "output_parent_is_a_file", "output_exists",
    "nifti_input_folder_output", "model_without_metadata", "model_without_segment_signature", "not_a_model",
    "spec_does_not_fit_model", "model_fails_on_scan",
])
def test_bad_input_is_one_clear_line_and_exit_2(name, models, nifti_ct, dicom_ct, tmp_path, capsys):
    model, inp, out, text = _case(name, tmp_path, models, nifti_ct, dicom_ct)
    existed = out.exists()
    rc, _, err = _run(capsys, "--model", model, "--input", inp, "--output", out)
    assert rc == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    assert text in lines[0], lines[0]
    assert "Graph execution error" not in lines[0]  # the cause, not TensorFlow's header
    named = {"missing_input": inp, "corrupt_nifti": inp, "4d_nifti": inp, "nan_voxels": inp, "output_parent_is_a_file": out,
             "output_exists": out, "nifti_input_folder_output": out, "not_a_model": model}.get(name, model)
    assert str(named) in lines[0]
    if existed:
        assert out.read_bytes() == b"keep me"  # an existing output is left alone
    else:
        assert not out.exists()
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".tmp")] if out.parent.is_dir() else True


def test_command_line_module_exit_status(tmp_path):
    cmd = [sys.executable, "-m", "tfmedseg.predict", "--model", str(tmp_path / "m"), "--input", str(tmp_path / "x.nii.gz"),
           "--output", str(tmp_path / "y.nii.gz")]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"error: {tmp_path / 'x.nii.gz'}: input does not exist"


def test_a_model_root_resolves_to_its_highest_version_holding_a_savedmodel(tmp_path):
    """A newer version folder without saved_model.pb (TFLite files only) is passed over; none with one: an error."""
    from tfmedseg.errors import ExportError
    from tfmedseg.predict import resolve_model_path

    root = tmp_path / "seg"
    for version, files in (("2", ["saved_model.pb"]), ("10", ["saved_model.pb"]), ("11", ["model.tflite"])):
        (root / version).mkdir(parents=True)
        for name in files:
            (root / version / name).write_bytes(b"")
    assert resolve_model_path(root) == root / "10"  # numeric order, not text order; 11 holds no SavedModel
    only_tflite = tmp_path / "tfl"
    (only_tflite / "1").mkdir(parents=True)
    (only_tflite / "1" / "model.tflite").write_bytes(b"")
    with pytest.raises(ExportError, match="not a model"):
        resolve_model_path(only_tflite)
