"""``python -m tfmedseg.predict`` never deletes or replaces an input or foreign files (issue 13).

Each case ran into data loss before: ``--output`` pointed at the input DICOM folder, its parent or
the input NIfTI with ``--overwrite`` deleted the scan; staging was hidden and stayed after SIGKILL;
outputs were written 0600/0700 whatever the umask.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest

from tfmedseg.io import Volume, canonical_affine, write_dicom_series
from tfmedseg.io._atomic import OUTPUT_MARKER, STAGING_TAG, _host
from tfmedseg.predict import main


@pytest.fixture()
def case(tmp_path, phantom):
    """A patient folder holding a DICOM series, a NIfTI scan and a notes file."""
    patient = tmp_path / "patient"
    vol = Volume(phantom.ct(), phantom.spacing, canonical_affine(phantom.spacing), "CT")
    write_dicom_series(vol, patient / "ct", uid_seed="dataloss")
    image = nib.Nifti1Image(np.transpose(phantom.ct(), (2, 1, 0)).copy(), np.diag([0.8, 0.8, 2.5, 1.0]))
    nib.save(image, str(patient / "scan.nii.gz"))
    (patient / "notes.txt").write_text("keep me")
    return patient


def _snapshot(root):
    return {p.relative_to(root): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _predict(capsys, model, inp, out, *extra):
    rc = main(["--model", str(model), "--input", str(inp), "--output", str(out), "--no-dicom-seg", *map(str, extra)])
    return rc, capsys.readouterr().err


@pytest.mark.parametrize("where", ["input_folder", "input_parent", "inside_input", "input_nifti", "nifti_parent"])
def test_output_that_is_contains_or_sits_in_the_input_is_refused(case, models, capsys, where):
    before = _snapshot(case.parent)
    inp = case / "scan.nii.gz" if where.startswith(("input_nifti", "nifti")) else case / "ct"
    out = {
        "input_folder": case / "ct",
        "input_parent": case,
        "inside_input": case / "ct" / "result",
        "input_nifti": case / "scan.nii.gz",
        "nifti_parent": case,
    }[where]
    rc, err = _predict(capsys, models["savedmodel"], inp, out, "--overwrite")
    assert rc == 2
    assert err.startswith("error: ") and err.count("\n") == 1 and "input" in err, err
    assert _snapshot(case.parent) == before  # nothing deleted, replaced or added


def test_overwrite_refuses_a_folder_of_foreign_files(tmp_path, case, models, capsys):
    foreign = tmp_path / "results"
    foreign.mkdir()
    (foreign / "thesis.docx").write_text("years of work")
    rc, err = _predict(capsys, models["savedmodel"], case / "ct", foreign, "--overwrite")
    assert rc == 2 and "did not write" in err, err
    assert (foreign / "thesis.docx").read_text() == "years of work"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["patient", "results"]


def test_overwrite_refuses_a_foreign_nifti_file(tmp_path, case, models, capsys):
    other = tmp_path / "other_scan.nii.gz"
    other.write_bytes((case / "scan.nii.gz").read_bytes())
    rc, err = _predict(capsys, models["savedmodel"], case / "scan.nii.gz", other, "--overwrite")
    assert rc == 2 and "not a label map written by tfmedseg" in err, err
    assert other.read_bytes() == (case / "scan.nii.gz").read_bytes()


def test_overwrite_replaces_our_own_outputs(tmp_path, case, models, capsys):
    out_dir, out_file = tmp_path / "out", tmp_path / "labels.nii.gz"
    for _ in range(2):
        assert _predict(capsys, models["savedmodel"], case / "ct", out_dir, "--overwrite")[0] == 0
        assert _predict(capsys, models["savedmodel"], case / "scan.nii.gz", out_file, "--overwrite")[0] == 0
    assert (out_dir / OUTPUT_MARKER).is_file() and (out_dir / "label.nii.gz").is_file()
    rc, err = _predict(capsys, models["savedmodel"], case / "ct", out_dir, "--opacity", "0.5")  # another job
    assert rc == 2 and "--overwrite" in err


def _files(root):
    """Bytes and mtime of every file at or below ``root``."""
    paths = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
    return {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in paths}


@pytest.mark.parametrize("kind", ["savedmodel", "run_dir"])
def test_the_same_command_again_says_it_is_done_and_writes_nothing(tmp_path, case, models, capsys, kind):
    """A rerun with the same model, input and options exits 0 with one 'nothing to do' line; the
    output keeps its bytes and mtimes (it recorded what made it: marker / NIfTI descrip)."""
    jobs = [(case / "ct", tmp_path / "out"), (case / "scan.nii.gz", tmp_path / "labels.nii.gz"),
            (case / "ct", tmp_path / "dicom_labels.nii.gz")]
    for inp, out in jobs:
        assert _predict(capsys, models[kind], inp, out)[0] == 0
        before = _files(out)
        rc = main(["--model", str(models[kind]), "--input", str(inp), "--output", str(out), "--no-dicom-seg"])
        captured = capsys.readouterr()
        assert rc == 0, captured.err
        assert captured.out == f"{out} holds the result of this model, input and options already; nothing to do " \
                               "(pass --overwrite to write it again)\n"
        assert _files(out) == before
    marker = json.loads((tmp_path / "out" / OUTPUT_MARKER).read_text())
    assert marker["provenance"]["input"]["files"] == len(list((case / "ct").iterdir()))
    assert marker["provenance"]["options"]["dicom_seg"] is False


@pytest.mark.parametrize("change", ["option", "input", "model", "no_record"])
def test_another_job_into_an_output_of_ours_is_refused(tmp_path, case, models, capsys, change):
    """A changed option, a changed input file, another model, or an output that recorded no
    provenance (an older tfmedseg): exit 2 naming the output and --overwrite, nothing rewritten."""
    out_dir, out_file = tmp_path / "out", tmp_path / "labels.nii.gz"
    assert _predict(capsys, models["savedmodel"], case / "ct", out_dir)[0] == 0
    assert _predict(capsys, models["savedmodel"], case / "scan.nii.gz", out_file)[0] == 0
    assert json.loads((out_dir / OUTPUT_MARKER).read_text())["provenance"]["model"]["path"] == str(models["savedmodel"])
    assert nib.load(str(out_file)).header["descrip"].tobytes().startswith(b"written by tfmedseg job ")
    model, extra = models["savedmodel"], ()
    if change == "option":
        extra = ("--series-number", "77")
    elif change == "input":
        for path in [case / "scan.nii.gz", next((case / "ct").iterdir())]:
            os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    elif change == "model":
        model = models["run_dir"]
    else:
        marker = json.loads((out_dir / OUTPUT_MARKER).read_text())
        del marker["provenance"]
        (out_dir / OUTPUT_MARKER).write_text(json.dumps(marker))
        image = nib.load(str(out_file))
        image = nib.Nifti1Image(np.asarray(image.dataobj), image.affine, image.header)
        image.header["descrip"] = b"written by tfmedseg"
        nib.save(image, str(out_file))
    for out in [out_dir, out_file]:
        before = _files(out)
        inp = case / "ct" if out == out_dir else case / "scan.nii.gz"
        rc, err = _predict(capsys, model, inp, out, *extra)
        assert rc == 2 and err.startswith(f"error: {out}: ") and "--overwrite" in err and err.count("\n") == 1, err
        assert _files(out) == before
    assert _predict(capsys, model, case / "ct", out_dir, *extra, "--overwrite")[0] == 0  # --overwrite still replaces ours


def test_a_foreign_file_with_the_name_of_the_output_is_never_taken_for_done(tmp_path, case, models, capsys):
    """A folder without our marker (even with our file names) or a NIfTI not written by us stays untouched."""
    assert _predict(capsys, models["savedmodel"], case / "ct", tmp_path / "out")[0] == 0
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "label.nii.gz").write_bytes((tmp_path / "out" / "label.nii.gz").read_bytes())
    other = tmp_path / "other.nii.gz"
    other.write_bytes((case / "scan.nii.gz").read_bytes())
    for out in [foreign, other]:
        before = _files(out)
        rc, err = _predict(capsys, models["savedmodel"], case / "ct" if out == foreign else case / "scan.nii.gz", out)
        assert rc == 2 and str(out) in err, err
        assert _files(out) == before
    assert _predict(capsys, models["savedmodel"], case / "ct", tmp_path / "out")[0] == 0  # while our own output is done


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_stale_staging_of_a_killed_run_is_removed_and_staging_is_never_hidden(tmp_path, case, models, capsys, monkeypatch):
    import tfmedseg.io.dicom_overlay as overlay

    stale = tmp_path / f"out{STAGING_TAG}{_host()}-{_dead_pid()}-0123abcd"
    (stale / "overlay").mkdir(parents=True)
    (stale / "overlay" / "1.dcm").write_bytes(b"patient data")
    stale_file = tmp_path / f"labels.nii.gz{STAGING_TAG}{_host()}-{_dead_pid()}-0123abcd.nii.gz"
    stale_file.write_bytes(b"patient data")
    alive = tmp_path / f"out{STAGING_TAG}{_host()}-{os.getpid()}-feedbeef"  # a running process's staging stays
    alive.mkdir()
    seen = []
    real = overlay.write_overlay_series

    def spy(*args, **kwargs):
        result = real(*args, **kwargs)
        seen.extend(p.name for p in tmp_path.iterdir())
        return result

    monkeypatch.setattr(overlay, "write_overlay_series", spy)
    assert _predict(capsys, models["savedmodel"], case / "ct", tmp_path / "out")[0] == 0
    assert not stale.exists()
    assert alive.exists()
    assert seen and not [name for name in seen if name.startswith(".")], seen  # staging with patient data is visible
    assert _predict(capsys, models["savedmodel"], case / "scan.nii.gz", tmp_path / "labels.nii.gz")[0] == 0
    assert not stale_file.exists()


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_outputs_follow_the_umask(tmp_path, case, models, capsys, umask):
    old = os.umask(umask)
    try:
        assert _predict(capsys, models["savedmodel"], case / "ct", tmp_path / "out")[0] == 0
        assert _predict(capsys, models["savedmodel"], case / "scan.nii.gz", tmp_path / "labels.nii.gz")[0] == 0
    finally:
        os.umask(old)
    for path in [tmp_path / "out", tmp_path / "out" / "overlay"]:
        assert stat.S_IMODE(path.stat().st_mode) == 0o777 & ~umask, path
    for path in [tmp_path / "labels.nii.gz", tmp_path / "out" / "label.nii.gz", next((tmp_path / "out" / "overlay").iterdir())]:
        assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask, path


def test_savedmodel_versions_follow_the_umask_and_refuse_foreign_folders(tmp_path, models):
    from tfmedseg.errors import ExportError
    from tfmedseg.export.run_dir import load_for_export
    from tfmedseg.export.savedmodel import export_savedmodel

    bundle = load_for_export(models["run_dir"])
    model, spec = bundle.model, bundle.spec
    old = os.umask(0o022)
    try:
        version = export_savedmodel(model, tmp_path / "m" / "1", spec=spec, model_name="m")
    finally:
        os.umask(old)
    assert stat.S_IMODE(version.stat().st_mode) == 0o755
    assert stat.S_IMODE((version / "metadata.json").stat().st_mode) == 0o644
    foreign = tmp_path / "m" / "2"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("x")
    with pytest.raises(ExportError, match="not written by tfmedseg"):
        export_savedmodel(model, foreign, spec=spec, model_name="m", overwrite=True)
    assert (foreign / "keep.txt").exists()
    assert not [p for p in (tmp_path / "m").iterdir() if STAGING_TAG in p.name]
