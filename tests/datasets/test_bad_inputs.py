"""Broken layouts and files: each raises a tfmedseg.errors type whose message names the file."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from tfmedseg.datasets import load_dataset
from tfmedseg.datasets.phantoms._nifti import save_nifti
from tfmedseg.errors import DatasetLayoutError, InvalidInputError

SPACING = (3.0, 2.0, 2.0)
ORIGIN = (-10.0, -10.0, 0.0)


def _expect(exc_type, path: Path | str, name: str, root: Path, **options):
    """Load ``name`` from ``root``; assert the error type and that ``path`` is named in the message."""
    with pytest.raises(exc_type) as info:
        load_dataset(name, root, **options)
    assert str(path) in str(info.value), str(info.value)
    return str(info.value)


def _lits_pair(root: Path, n: int = 0, label: np.ndarray | None = None) -> tuple[Path, Path]:
    ct = np.full((4, 6, 6), 40, np.int16)
    seg = np.zeros((4, 6, 6), np.uint8) if label is None else label
    seg[1:3, 2:4, 2:4] = np.maximum(seg[1:3, 2:4, 2:4], 1)
    return (save_nifti(ct, root / f"volume-{n}.nii", SPACING, ORIGIN),
            save_nifti(seg, root / f"segmentation-{n}.nii", SPACING, ORIGIN))


def _copy_case(src_root: Path, name: str, dst: Path) -> Path:
    shutil.copytree(src_root / name, dst / name)
    return dst / name


# --------------------------------------------------------------------------- LiTS
def test_lits_volume_without_segmentation(tmp_path):
    vol, seg = _lits_pair(tmp_path)
    seg.unlink()
    msg = _expect(DatasetLayoutError, vol, "lits", tmp_path)
    assert "segmentation-0" in msg


def test_lits_segmentation_without_volume(tmp_path):
    vol, seg = _lits_pair(tmp_path, 7)
    vol.unlink()
    _expect(DatasetLayoutError, seg, "lits", tmp_path)


def test_lits_shape_mismatch(tmp_path):
    _, seg = _lits_pair(tmp_path)
    save_nifti(np.zeros((4, 6, 5), np.uint8), seg, SPACING, ORIGIN)
    msg = _expect(InvalidInputError, seg, "lits", tmp_path)
    assert "shape" in msg


def test_lits_affine_mismatch(tmp_path):
    _, seg = _lits_pair(tmp_path)
    save_nifti(np.zeros((4, 6, 6), np.uint8), seg, SPACING, (-10.0, -10.0, 5.0))
    msg = _expect(InvalidInputError, seg, "lits", tmp_path)
    assert "affine" in msg and "5" in msg


def test_lits_label_values_outside_set(tmp_path):
    label = np.zeros((4, 6, 6), np.uint8)
    label[0, 0, 0] = 3
    _, seg = _lits_pair(tmp_path, label=label)
    case = load_dataset("lits", tmp_path)[0]  # lazy: headers only, the values are checked on reading
    with pytest.raises(InvalidInputError) as info:
        _ = case.label.array
    assert str(seg) in str(info.value) and "[3]" in str(info.value)


def test_lits_empty_directory(tmp_path):
    (tmp_path / "Training Batch 1").mkdir()
    _expect(DatasetLayoutError, tmp_path, "lits", tmp_path)


def test_lits_truncated_volume(tmp_path):
    vol, _ = _lits_pair(tmp_path)
    vol.write_bytes(vol.read_bytes()[:400])
    msg = _expect(InvalidInputError, vol, "lits", tmp_path)
    # the header check's own error as it is: the file named once, no exception class name in the line
    assert msg.count(str(vol)) == 1 and "Error" not in msg and "file is truncated" in msg, msg


def test_lits_duplicate_index_across_batches(tmp_path):
    _lits_pair(tmp_path / "Training Batch 1")
    _lits_pair(tmp_path / "Training Batch 2")
    msg = _expect(DatasetLayoutError, tmp_path / "Training Batch 2", "lits", tmp_path)
    assert "duplicate" in msg and str(tmp_path / "Training Batch 1") in msg


def test_lits_missing_root(tmp_path):
    _expect(DatasetLayoutError, tmp_path / "nope", "lits", tmp_path / "nope")


# --------------------------------------------------------------------------- HECKTOR
@pytest.fixture
def hecktor_copy(hecktor_root, tmp_path) -> Path:
    _copy_case(hecktor_root, "CHGJ001", tmp_path)
    (tmp_path / "bbox.csv").write_text((hecktor_root / "bbox.csv").read_text().splitlines()[0] + "\n"
                                       + (hecktor_root / "bbox.csv").read_text().splitlines()[1] + "\n")
    return tmp_path


def test_hecktor_missing_pet(hecktor_copy):
    (hecktor_copy / "CHGJ001" / "CHGJ001_pt.nii.gz").unlink()
    msg = _expect(DatasetLayoutError, hecktor_copy / "CHGJ001", "hecktor", hecktor_copy)
    assert "CHGJ001_pt.nii.gz" in msg


def test_hecktor_patient_missing_from_bbox_csv(hecktor_copy):
    (hecktor_copy / "bbox.csv").write_text("PatientID,x1,x2,y1,y2,z1,z2\nCHUS999,0,1,0,1,0,1\n")
    _expect(DatasetLayoutError, hecktor_copy / "bbox.csv", "hecktor", hecktor_copy)


def test_hecktor_bbox_inverted(hecktor_copy):
    (hecktor_copy / "bbox.csv").write_text("PatientID,x1,x2,y1,y2,z1,z2\nCHGJ001,10,-10,0,1,0,1\n")
    msg = _expect(InvalidInputError, hecktor_copy / "bbox.csv", "hecktor", hecktor_copy)
    assert "x1<x2" in msg


def test_hecktor_bbox_outside_ct(hecktor_copy):
    (hecktor_copy / "bbox.csv").write_text("PatientID,x1,x2,y1,y2,z1,z2\nCHGJ001,500,644,0,144,0,144\n")
    msg = _expect(InvalidInputError, hecktor_copy / "bbox.csv", "hecktor", hecktor_copy)
    assert "does not overlap" in msg


def test_hecktor_bbox_csv_missing_column(hecktor_copy):
    (hecktor_copy / "bbox.csv").write_text("PatientID,x1,x2,y1,y2,z1\nCHGJ001,0,1,0,1,0\n")
    msg = _expect(InvalidInputError, hecktor_copy / "bbox.csv", "hecktor", hecktor_copy)
    assert "z2" in msg


def test_hecktor_gtvt_label_values(hecktor_copy):
    from tfmedseg.io.nifti import read_nifti, write_nifti

    path = hecktor_copy / "CHGJ001" / "CHGJ001_gtvt.nii.gz"
    gt = read_nifti(path, "SEG")
    write_nifti(gt.with_array(gt.array * 2), path)
    case = load_dataset("hecktor", hecktor_copy)[0]  # lazy: the values are checked when read
    with pytest.raises(InvalidInputError) as info:
        _ = case.label.array
    assert str(path) in str(info.value)


def test_hecktor_4d_pet(hecktor_copy):
    import nibabel as nib

    path = hecktor_copy / "CHGJ001" / "CHGJ001_pt.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4, 2), np.float32), np.eye(4)), path)
    msg = _expect(InvalidInputError, path, "hecktor", hecktor_copy)
    assert "3-D" in msg


# --------------------------------------------------------------------------- 3DIRCADb
@pytest.fixture
def ircadb_copy(ircadb_root, tmp_path) -> Path:
    _copy_case(ircadb_root, "3Dircadb1.1", tmp_path)
    return tmp_path


def test_ircadb_zipped_patient_dicom(ircadb_copy):
    folder = ircadb_copy / "3Dircadb1.1"
    shutil.rmtree(folder / "PATIENT_DICOM")
    (folder / "PATIENT_DICOM.zip").write_bytes(b"PK")
    msg = _expect(DatasetLayoutError, folder / "PATIENT_DICOM.zip", "ircadb", ircadb_copy)
    assert "unzip" in msg


def test_ircadb_missing_liver_mask(ircadb_copy):
    liver = ircadb_copy / "3Dircadb1.1" / "MASKS_DICOM" / "liver"
    shutil.rmtree(liver)
    _expect(DatasetLayoutError, liver, "ircadb", ircadb_copy)


def test_ircadb_non_binary_mask(ircadb_copy):
    from tfmedseg.io.dicom import read_dicom_series
    from tfmedseg.io.dicom_write import write_dicom_series

    folder = ircadb_copy / "3Dircadb1.1"
    ct = read_dicom_series(folder / "PATIENT_DICOM")
    bad = np.zeros(ct.shape, np.uint8)
    bad[10, 10, 10] = 7
    target = folder / "MASKS_DICOM" / "livertumor01"
    write_dicom_series(bad, target, modality="CT", mask=True, reference=ct, overwrite=True)
    case = load_dataset("ircadb", ircadb_copy)[0]  # lazy: headers only, the values are checked on reading
    with pytest.raises(InvalidInputError) as info:
        _ = case.label.array
    assert str(target) in str(info.value) and "7" in str(info.value)


def test_ircadb_mask_on_other_grid(ircadb_copy):
    from tfmedseg.io.dicom_write import write_dicom_series
    from tfmedseg.io.volume import Volume, canonical_affine

    target = ircadb_copy / "3Dircadb1.1" / "MASKS_DICOM" / "livertumor02"
    small = Volume(np.zeros((48, 64, 64), np.uint8), (3.0, 5.0, 5.0), canonical_affine((3.0, 5.0, 5.0)), "SEG")
    write_dicom_series(small, target, modality="CT", mask=True, overwrite=True)
    msg = _expect(InvalidInputError, target, "ircadb", ircadb_copy)
    assert "shape" in msg


def test_ircadb_empty_root(tmp_path):
    _expect(DatasetLayoutError, tmp_path, "ircadb", tmp_path)


# --------------------------------------------------------------------------- MAA SPECT/CT
@pytest.fixture
def maa_copy(maa_root, tmp_path) -> Path:
    _copy_case(maa_root, "MAA001", tmp_path)
    return tmp_path


def test_maa_missing_tumour_mask(maa_copy):
    path = maa_copy / "MAA001" / "masks" / "tumor.nii.gz"
    path.unlink()
    _expect(DatasetLayoutError, path, "maa_spect", maa_copy)


def test_maa_mask_on_other_grid(maa_copy):
    path = maa_copy / "MAA001" / "masks" / "liver.nii.gz"
    save_nifti(np.zeros((48, 128, 128), np.uint8), path, (3.0, 2.5, 2.5), (0.0, 0.0, 0.0))
    msg = _expect(InvalidInputError, path, "maa_spect", maa_copy)
    assert "affine" in msg


def test_maa_spect_other_frame_of_reference(maa_copy):
    from tfmedseg.io.dicom import read_dicom_series
    from tfmedseg.io.dicom_write import write_nm_spect

    spect_dir = maa_copy / "MAA001" / "SPECT"
    spect = read_dicom_series(spect_dir)
    shutil.rmtree(spect_dir)
    write_nm_spect(spect, spect_dir / "spect.dcm", frame_of_reference_uid="1.2.826.0.1.3680043.2.1143.99")
    msg = _expect(InvalidInputError, spect_dir, "maa_spect", maa_copy)
    assert "FrameOfReferenceUID" in msg


def test_maa_missing_spect_folder(maa_copy):
    shutil.rmtree(maa_copy / "MAA001" / "SPECT")
    _expect(DatasetLayoutError, maa_copy / "MAA001" / "SPECT", "maa_spect", maa_copy)


def test_maa_display_slice_without_mask_image(maa_copy):
    tumour_dir = maa_copy / "MAA001" / "display" / "tumor"
    first = sorted(tumour_dir.iterdir())[0]
    first.unlink()
    _expect(DatasetLayoutError, first, "maa_spect", maa_copy)


def test_maa_bad_truth_json(maa_copy):
    path = maa_copy / "MAA001" / "phantom_truth.json"
    path.write_text('{"tumour_to_liver_ratio": "high"}')
    _expect(InvalidInputError, path, "maa_spect", maa_copy)


# --------------------------------------------------------------------------- bone scans
@pytest.fixture
def bone_copy(bone_root, tmp_path) -> Path:
    _copy_case(bone_root, "BS0002", tmp_path)  # labeled, infection_inflammation as mask PNGs
    return tmp_path


def _edit_annotation(root: Path, edit) -> Path:
    path = root / "BS0002" / "annotation.json"
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))
    return path


def test_bone_unknown_lesion_class(bone_copy):
    path = _edit_annotation(bone_copy, lambda d: d["views"]["anterior"]["lesions"][0].update({"class": "benign"}))
    msg = _expect(InvalidInputError, path, "bone_scan", bone_copy)
    assert "benign" in msg and "malignant" in msg


def test_bone_chest_box_outside_image(bone_copy):
    path = _edit_annotation(bone_copy, lambda d: d["views"]["posterior"].update({"chest_box": [10, 10, 500, 100]}))
    msg = _expect(InvalidInputError, path, "bone_scan", bone_copy)
    assert "posterior" in msg and "outside" in msg


def test_bone_polygon_outside_image(bone_copy):
    def edit(d):
        d["views"]["anterior"]["lesions"].append({"class": "malignant", "polygon": [[1, 1], [300, 5], [5, 9]]})

    path = _edit_annotation(bone_copy, edit)
    _expect(InvalidInputError, path, "bone_scan", bone_copy)


def test_bone_missing_mask_png(bone_copy):
    mask = sorted((bone_copy / "BS0002" / "masks").iterdir())[0]
    mask.unlink()
    _expect(DatasetLayoutError, mask, "bone_scan", bone_copy)


def test_bone_invalid_json(bone_copy):
    path = bone_copy / "BS0002" / "annotation.json"
    path.write_text("{not json")
    _expect(InvalidInputError, path, "bone_scan", bone_copy)


def test_bone_missing_scan(bone_copy):
    scan = bone_copy / "BS0002" / "wholebody.dcm"
    scan.unlink()
    _expect(DatasetLayoutError, scan, "bone_scan", bone_copy)


def test_bone_corrupt_scan(bone_copy):
    scan = bone_copy / "BS0002" / "wholebody.dcm"
    scan.write_bytes(scan.read_bytes()[:300])
    _expect(InvalidInputError, scan, "bone_scan", bone_copy)


def test_lits_test_split_is_unlabeled(tmp_path):
    vol, seg = _lits_pair(tmp_path, 4)
    seg.unlink()
    vol.rename(tmp_path / "test-volume-4.nii")
    cases = load_dataset("lits", tmp_path, split="test")
    assert [c.case_id for c in cases] == ["lits-test-004"] and cases[0].label is None
    assert float(cases[0].images["ct"].array.mean()) == 40.0
    from tfmedseg.errors import ConfigError

    with pytest.raises(ConfigError, match="split"):
        load_dataset("lits", tmp_path, split="val")
