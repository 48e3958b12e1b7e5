"""Lazy DICOM loading: 3D-IRCADb and MAA SPECT/CT cases read headers first and pixel data on demand."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from tfmedseg.datasets import load_dataset
from tfmedseg.errors import InvalidInputError
from tfmedseg.io import dicom
from tfmedseg.io.dicom import read_dicom_series
from tfmedseg.io.lazy import LazyVolume, read_dicom_series_lazy
from tfmedseg.io.nifti import read_nifti


def _record_paths(monkeypatch, module, name: str) -> list:
    """Wrap ``module.name(path, ...)`` so that every call appends its path to the returned list."""
    seen = []
    real = getattr(module, name)
    monkeypatch.setattr(module, name, lambda path, *args: seen.append(path) or real(path, *args))
    return seen


@pytest.fixture
def decodes(monkeypatch):
    """Files whose pixel data was decoded."""
    return _record_paths(monkeypatch, dicom, "_pixels")


def _same_geometry(lazy, eager):
    assert isinstance(lazy, LazyVolume) and not lazy.loaded
    assert lazy.shape == eager.shape and lazy.modality == eager.modality
    np.testing.assert_allclose(lazy.spacing, eager.spacing, rtol=0, atol=1e-9)
    np.testing.assert_allclose(lazy.affine, eager.affine, rtol=0, atol=1e-9)
    assert set(lazy.meta) - {"lazy"} == set(eager.meta)
    for key, value in eager.meta.items():
        if isinstance(value, np.ndarray):
            np.testing.assert_array_equal(lazy.meta[key], value)
        else:
            assert lazy.meta[key] == value, key


@pytest.mark.parametrize("series", ["PATIENT_DICOM", "MASKS_DICOM/liver"])
def test_lazy_series_has_the_eager_geometry_and_voxels(ircadb_root, series, decodes):
    folder = ircadb_root / "3Dircadb1.1" / series
    labels = series != "PATIENT_DICOM"
    lazy = read_dicom_series_lazy(folder, labels=labels)
    assert decodes == []  # headers only
    eager = read_dicom_series(folder, labels=labels)
    assert decodes  # the recorder sees decoding
    _same_geometry(lazy, eager)
    np.testing.assert_array_equal(lazy.array, eager.array)
    assert lazy.array.dtype == eager.array.dtype and lazy.loaded
    lazy.release()
    assert not lazy.loaded


def test_ircadb_cases_are_lazy_and_equal_the_eager_reading(ircadb_root, decodes):
    cases = load_dataset("ircadb", ircadb_root)
    assert decodes == [] and not any(v.loaded for c in cases for v in c.volumes)
    case = cases[0]
    folder = ircadb_root / case.case_id
    ct = read_dicom_series(folder / "PATIENT_DICOM")
    _same_geometry(case.images["ct"], ct)
    label = np.zeros(ct.shape, np.uint8)
    for name in ["liver"] + case.meta["tumour_masks"]:
        label[read_dicom_series(folder / "MASKS_DICOM" / name, labels=True).array > 0] = 1 if name == "liver" else 2
    decodes.clear()
    np.testing.assert_array_equal(case.label.array, label)
    assert case.label.array.dtype == np.uint8 and 2 in np.unique(label)
    assert not case.images["ct"].loaded  # the label map reads only the masks
    np.testing.assert_array_equal(case.images["ct"].array, ct.array)
    case.release()
    assert not any(v.loaded for v in case.volumes)


def test_maa_cases_are_lazy_and_equal_the_eager_reading(maa_root, decodes):
    cases = load_dataset("maa_spect", maa_root)
    assert decodes == [] and not any(v.loaded for c in cases for v in c.volumes)
    case = cases[0]
    folder = maa_root / case.case_id
    ct, spect = read_dicom_series(folder / "CT"), read_dicom_series(folder / "SPECT")
    _same_geometry(case.images["ct"], ct)
    _same_geometry(case.images["spect"], spect)
    label = np.zeros(ct.shape, np.uint8)
    label[read_nifti(folder / "masks" / "liver.nii.gz", "SEG").array > 0] = 1
    label[read_nifti(folder / "masks" / "tumor.nii.gz", "SEG").array > 0] = 2
    np.testing.assert_array_equal(case.label.array, label)
    np.testing.assert_array_equal(case.images["spect"].array, spect.array)
    np.testing.assert_array_equal(case.images["ct"].array, ct.array)


def test_bad_files_are_named_at_loading_and_at_reading(ircadb_root, tmp_path):
    root = tmp_path / "ircadb"
    shutil.copytree(ircadb_root / "3Dircadb1.1", root / "3Dircadb1.1")
    ct_files = sorted((root / "3Dircadb1.1" / "PATIENT_DICOM").iterdir())
    case = load_dataset("ircadb", root)[0]
    bad = ct_files[len(ct_files) // 2]
    bad.write_bytes(bad.read_bytes()[:300])  # damaged after loading: the read names it
    with pytest.raises(InvalidInputError) as info:
        _ = case.images["ct"].array
    assert str(bad) in str(info.value)
    with pytest.raises(InvalidInputError) as info:  # and a new loading names it at once
        load_dataset("ircadb", root)
    assert str(bad) in str(info.value)


@pytest.fixture
def png_reads(monkeypatch):
    """PNG files read by the MAA loader."""
    from tfmedseg.datasets import maa_spect

    return _record_paths(monkeypatch, maa_spect, "_read_png")


def test_maa_display_pngs_are_read_on_first_use_and_equal_the_eager_reading(maa_root, png_reads):
    from tfmedseg.datasets.maa_spect import DISPLAY_KEYS, read_display_slices
    from tfmedseg.io.lazy import LazyMapping

    cases = load_dataset("maa_spect", maa_root)
    assert png_reads == []  # listed and paired, not read
    case = cases[0]
    display = case.meta["display"]
    assert isinstance(display, LazyMapping) and not display.loaded
    assert tuple(display) == DISPLAY_KEYS and len(display) == 4 and "fused" in display and "other" not in display
    assert not display.loaded and png_reads == []  # asking for the keys reads nothing
    eager = read_display_slices(maa_root / case.case_id / "display", depth=case.images["ct"].shape[0])
    png_reads.clear()
    assert set(eager) == set(DISPLAY_KEYS)
    for key in DISPLAY_KEYS:
        np.testing.assert_array_equal(display[key], eager[key])
        assert display[key].dtype == eager[key].dtype
    assert len(png_reads) == 3 * len(eager["slices"])  # every PNG once, on the first access
    case.release()
    assert not display.loaded and not any(v.loaded for v in case.volumes)
    with pytest.raises(KeyError):
        display["other"]


def test_maa_bad_display_png_is_named_when_first_used(maa_root, tmp_path):
    root = tmp_path / "maa"
    shutil.copytree(maa_root / "MAA001", root / "MAA001")
    fused = sorted((root / "MAA001" / "display" / "fused").iterdir())
    bad = fused[len(fused) // 2]
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    case = load_dataset("maa_spect", root)[0]  # loading lists the files only
    with pytest.raises(InvalidInputError) as info:
        _ = case.meta["display"]["fused"]
    assert str(bad) in str(info.value) and "PNG" in str(info.value)
    assert not case.meta["display"].loaded
