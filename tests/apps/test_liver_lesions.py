"""The seed-003 application on a 3DIRCADb phantom patient folder with a tiny exported bundle.

The bundle's "networks" are 1x1 convolutions that threshold the windowed CT (deterministic, so the
liver and lesion masks are not empty); the pipeline, the SavedModel round trip and the writers are
the real ones.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import keras
import numpy as np
import pydicom
import pytest

from tfmedseg.apps.liver_lesions import main, run_liver_lesions
from tfmedseg.datasets.phantoms import ensure_phantoms
from tfmedseg.errors import InvalidInputError
from tfmedseg.export.fusion_bundle import export_fusion_bundle
from tfmedseg.inference.fusion import build_decision_fusion
from tfmedseg.inference.liver_lesion import PipelineSettings

SIZE = 32


def _threshold_net(level: float, name: str) -> keras.Model:
    """Logit 20 * (x - level): foreground where the [-1, 1] input exceeds ``level``."""
    x = keras.Input((SIZE, SIZE, 1))
    conv = keras.layers.Conv2D(1, 1, name="logit")
    model = keras.Model(x, conv(x), name=name)
    conv.set_weights([np.full((1, 1, 1, 1), 20.0, np.float32), np.array([-20.0 * level], np.float32)])
    return model


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    liver = [_threshold_net(level, f"liver{i}") for i, level in enumerate((0.1, 0.15, 0.2, 0.3))]
    lesion = [_threshold_net(level, f"lesion{i}") for i, level in enumerate((0.6, 0.65, 0.7, 0.75))]
    settings = PipelineSettings(size=SIZE, lesion_min_size=2)
    root = tmp_path_factory.mktemp("bundle") / "liver_lesion_fusion" / "1"
    return export_fusion_bundle(liver, lesion, build_decision_fusion(4), build_decision_fusion(4), root,
                                settings=settings, networks=["a", "b", "c", "d"])


@pytest.fixture(scope="module")
def patient(tmp_path_factory) -> Path:
    root = ensure_phantoms("ircadb", tmp_path_factory.mktemp("phantoms") / "ircadb", cases=1, seed=0)
    return next(root.glob("3Dircadb1.*")) / "PATIENT_DICOM"


def test_app_writes_overlay_series_dicom_seg_label_map_and_report(bundle, patient, tmp_path, capsys):
    out = tmp_path / "result"
    assert main([str(patient), str(out), "--model", str(bundle)]) == 0
    printed = capsys.readouterr().out
    assert "liver stage" in printed and "lesion stage" in printed
    sources = [pydicom.dcmread(p, stop_before_pixels=True) for p in sorted(patient.iterdir()) if p.is_file()]
    files = sorted((out / "overlay").iterdir())
    assert len(files) == len(sources)
    source_series = {ds.SeriesInstanceUID for ds in sources}
    series = set()
    for path in files:
        ds = pydicom.dcmread(path)
        assert ds.PhotometricInterpretation == "RGB" and ds.SamplesPerPixel == 3
        assert ds.BitsAllocated == 8 and ds.BitsStored == 8
        assert ds.pixel_array.dtype == np.uint8 and ds.pixel_array.shape[-1] == 3
        assert ds.StudyInstanceUID == sources[0].StudyInstanceUID
        series.add(ds.SeriesInstanceUID)
    assert len(series) == 1 and not series & source_series
    green = sum(int(((a := pydicom.dcmread(p).pixel_array)[..., 1] > a[..., 0] + 20).sum()) for p in files)
    assert green > 0  # the liver is drawn

    import highdicom

    seg = highdicom.seg.segread(out / "seg.dcm")
    assert seg.StudyInstanceUID == sources[0].StudyInstanceUID
    assert next(s.SegmentLabel for s in seg.SegmentSequence) == "liver"

    import nibabel

    labels = np.asarray(nibabel.load(out / "label.nii.gz").dataobj)
    assert set(np.unique(labels)) <= {0, 1, 2} and (labels == 1).any()
    report = json.loads((out / "report.json").read_text())
    assert report["liver_volume_ml"] > 0 and report["lesion_count"] >= 0
    assert report["tumour_burden"] == pytest.approx(report["lesion_volume_ml"] / report["liver_volume_ml"], abs=1e-3)
    # the same command again says it is done (exit 0) and reads and writes nothing
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    assert main([str(patient), str(out), "--model", str(bundle)]) == 0
    printed = capsys.readouterr().out
    assert printed == (f"{out} holds the result of this model and input already; nothing to do (pass --overwrite to "
                       "write it again)\n")
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == before
    # another input into the same output is refused before any work
    other = tmp_path / "other_patient"
    shutil.copytree(patient, other)
    (other / sorted(p.name for p in other.iterdir())[0]).touch()
    assert main([str(other), str(out), "--model", str(bundle)]) == 2
    assert "input:" not in capsys.readouterr().out
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == before


def test_folder_with_two_series_is_refused_and_nothing_is_written(bundle, patient, tmp_path, capsys):
    mixed = tmp_path / "mixed"
    shutil.copytree(patient, mixed)
    first = min(p for p in mixed.iterdir() if p.is_file())
    ds = pydicom.dcmread(first)
    ds.SeriesInstanceUID = pydicom.uid.generate_uid()
    ds.SOPInstanceUID = pydicom.uid.generate_uid()
    ds.save_as(mixed / "other_series.dcm")
    out = tmp_path / "result"
    with pytest.raises(InvalidInputError, match="exactly one CT series"):
        run_liver_lesions(mixed, out, bundle)
    assert main([str(mixed), str(out), "--model", str(bundle)]) == 2
    assert "exactly one CT series" in capsys.readouterr().err
    assert not out.exists()
    assert not any(p.name.startswith(".") or "staging" in p.name for p in tmp_path.iterdir() if p.name != "mixed")


def test_a_model_root_runs_its_highest_saved_model_version(bundle, patient, tmp_path, capsys):
    root = tmp_path / "saved_models" / "liver_lesion_fusion"
    shutil.copytree(bundle, root / "3")
    (root / "10").mkdir()  # newer, without a SavedModel (e.g. TFLite files only): passed over
    (root / "10" / "model.tflite").write_bytes(b"")
    shutil.copytree(bundle, root / "2")
    (root / "3" / "variables" / "variables.index").unlink()  # version 3 cannot load: its error names the one chosen
    out = tmp_path / "result"
    code = main([str(patient), str(out), "--model", str(root)])
    printed = capsys.readouterr()
    assert code == 2 and str(root / "3") in printed.err  # version 3 (highest with saved_model.pb) was the one loaded
    shutil.rmtree(root / "3")
    assert main([str(patient), str(out), "--model", str(root)]) == 0
    assert f"model: {root / '2'} " in capsys.readouterr().out
    assert json.loads((out / "report.json").read_text())["model"] == str(root / "2")
    assert main([str(patient), str(out), "--model", str(root)]) == 0
    assert "nothing to do" in capsys.readouterr().out


def test_missing_bundle_is_a_clear_error(patient, tmp_path):
    with pytest.raises(InvalidInputError, match="bundle"):
        run_liver_lesions(patient, tmp_path / "out", tmp_path / "no_model")
    assert not (tmp_path / "out").exists()
