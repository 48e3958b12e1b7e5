"""The viewer's server through Starlette's test client: files under --root only, uploads capped,
segmentation through predict's code path (same labels and volumes), the queue, downloads."""

from __future__ import annotations

import io
import zipfile

import nibabel as nib
import numpy as np
import pytest

from tfmedseg.io.nifti import read_nifti
from tfmedseg.predict import load_segmenter, predict_file


def _open(client, path):
    response = client.post("/api/open", json={"path": path})
    assert response.status_code == 200, response.text
    return response.json()["scan"]


def _segment(client, scan_id, model="liver_ct_2d3d/1"):
    response = client.post(f"/api/scans/{scan_id}/segment", json={"model": model})
    assert response.status_code == 202, response.text
    return response.json()["job"]


def _wait(client, job_id):
    state = client.app.state.viewer
    state.jobs.wait(state.jobs.get(job_id), timeout=120)
    return client.get(f"/api/jobs/{job_id}").json()["job"]


def test_listing_shows_what_can_be_opened_and_marks_escaping_links(client_factory):
    client = client_factory()
    listing = client.get("/api/files").json()
    kinds = {e["name"]: e["kind"] for e in listing["entries"]}
    assert kinds == {"ct.nii.gz": "nifti", "dicom": "dir", "escape": "refused", "escape.nii.gz": "refused",
                     "runs": "dir", "shifted.nii.gz": "nifti"}
    assert client.get("/api/files", params={"path": "dicom"}).json()["entries"] == [
        {"name": "ct", "path": "dicom/ct", "kind": "dicom"}]
    assert client.get("/api/files", params={"path": "runs"}).json()["entries"][0]["kind"] == "run"


@pytest.mark.parametrize("path, message", [
    ("../outside/secret.nii.gz", "'..' is refused"),
    ("dicom/../ct.nii.gz", "'..' is refused"),
    ("/etc/passwd", "absolute paths are refused"),
    ("C:\\Windows\\win.ini", "absolute paths are refused"),
    ("escape/secret.nii.gz", "symbolic link leads outside"),
    ("escape.nii.gz", "symbolic link leads outside"),
    ("missing.nii.gz", "does not exist"),
])
def test_paths_outside_the_root_are_refused_with_a_clear_message(client_factory, path, message):
    client = client_factory()
    for response in (client.post("/api/open", json={"path": path}), client.get("/api/files", params={"path": path}),
                     client.get("/api/run/file", params={"path": path})):
        assert response.status_code == 400
        assert message in response.json()["error"]
        assert response.json()["error"].startswith(path)


def test_dicom_folder_with_a_file_linking_out_of_the_root_is_refused(client_factory, viewer_data, tmp_path):
    import shutil

    folder = viewer_data.root / "dicom_link"
    shutil.copytree(viewer_data.root / "dicom" / "ct", folder)
    try:
        (folder / "zz.dcm").symlink_to(viewer_data.outside / "secret.nii.gz")
        response = client_factory().post("/api/open", json={"path": "dicom_link"})
        assert response.status_code == 400 and "symbolic link leads outside" in response.json()["error"]
    finally:
        shutil.rmtree(folder)


def test_uploads_over_the_cap_are_refused_and_leave_nothing(client_factory, viewer_data):
    client = client_factory(max_upload_mb=0.001)  # 1048 bytes
    data = np.random.default_rng(0).bytes(4096)  # refused before it is read as NIfTI
    response = client.post("/api/upload", params={"name": "ct.nii.gz"}, content=data)
    assert response.status_code == 413
    assert "limited to 0.001 MB" in response.json()["error"]
    work = client.app.state.viewer.config.work_dir
    assert not any(p.is_file() for p in work.rglob("*"))

    def chunks():  # no Content-Length: the cap is counted while streaming
        for i in range(0, len(data), 512):
            yield data[i:i + 512]

    response = client.post("/api/upload", params={"name": "ct.nii.gz"}, content=chunks())
    assert response.status_code == 413 and not any(p.is_file() for p in work.rglob("*"))
    assert client.post("/api/upload", params={"name": "notes.txt"}, content=b"x").status_code == 400


def test_upload_of_a_nifti_and_of_a_zipped_dicom_series(client_factory, viewer_data):
    client = client_factory()
    scan = client.post("/api/upload", params={"name": "ct.nii.gz"},
                       content=(viewer_data.root / "ct.nii.gz").read_bytes()).json()["scan"]
    assert scan["shape"] == [6, 16, 20] and scan["path"] == "upload:ct.nii.gz"
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for path in sorted((viewer_data.root / "dicom" / "ct").iterdir()):
            archive.write(path, f"series/{path.name}")
    scan = client.post("/api/upload", params={"name": "ct.zip"}, content=buffer.getvalue()).json()["scan"]
    assert scan["format"] == "dicom" and scan["shape"] == [6, 16, 20]
    evil = io.BytesIO()
    with zipfile.ZipFile(evil, "w") as archive:
        archive.writestr("../../evil.dcm", b"x")
    response = client.post("/api/upload", params={"name": "evil.zip"}, content=evil.getvalue())
    assert response.status_code == 400 and "outside its folder" in response.json()["error"]


def test_segmentation_equals_predict_and_downloads_carry_the_source_geometry(client_factory, viewer_data, segmenters, tmp_path):
    client = client_factory()
    scan = _open(client, "ct.nii.gz")
    assert scan["spacing"] == pytest.approx(viewer_data.spacing) and scan["units"] == "HU"
    job = _wait(client, _segment(client, scan["id"])["id"])
    assert job["state"] == "done", job

    assert segmenters.get(viewer_data.model.resolve()).path == load_segmenter(viewer_data.model).path
    expected = predict_file(segmenters.get(viewer_data.model.resolve()), viewer_data.root / "ct.nii.gz", tmp_path / "pred.nii.gz")
    np.testing.assert_array_equal(expected["labels"], viewer_data.expected())
    results = client.get(f"/api/scans/{scan['id']}/results").json()
    assert {r["name"]: (r["voxels"], r["volume_ml"]) for r in results["volumes"]} == expected["volumes_ml"]
    [lesion] = results["lesions"]
    assert lesion["label_name"] == "tumour" and lesion["voxels"] == 32 and lesion["slices"] == [2, 3]
    # farthest voxel centres: 1 slice (2.5 mm) and 3 x 3 pixels (0.8 mm) apart
    assert lesion["largest_diameter_mm"] == pytest.approx(np.sqrt(2.5**2 + 2 * 2.4**2), rel=1e-6)

    response = client.get(f"/api/scans/{scan['id']}/download/label.nii.gz")
    assert response.status_code == 200 and "ct_label.nii.gz" in response.headers["content-disposition"]
    (tmp_path / "viewer.nii.gz").write_bytes(response.content)
    ours, theirs = nib.load(tmp_path / "viewer.nii.gz"), nib.load(tmp_path / "pred.nii.gz")
    np.testing.assert_array_equal(np.asarray(ours.dataobj), np.asarray(theirs.dataobj))
    np.testing.assert_allclose(ours.affine, theirs.affine)
    assert ours.get_data_dtype() == np.uint8
    for what in ("seg.dcm", "overlay.zip"):  # a NIfTI scan has no DICOM series to refer to
        response = client.get(f"/api/scans/{scan['id']}/download/{what}")
        assert response.status_code == 400 and "need a DICOM source series" in response.json()["error"]


def test_slices_of_the_three_views_with_labels(client_factory, viewer_data):
    client = client_factory()
    scan = _open(client, "ct.nii.gz")
    assert _wait(client, _segment(client, scan["id"])["id"])["state"] == "done"
    ct, labels = viewer_data.ct(), viewer_data.expected()
    for view, index, image, label, spacing in (
        ("axial", 3, ct[3], labels[3], (0.8, 0.8)),
        ("coronal", 5, ct[::-1, 5, :], labels[::-1, 5, :], (2.5, 0.8)),
        ("sagittal", 6, ct[::-1, :, 6], labels[::-1, :, 6], (2.5, 0.8)),
    ):
        response = client.get(f"/api/scans/{scan['id']}/slice", params={"view": view, "index": index})
        rows, cols = int(response.headers["x-rows"]), int(response.headers["x-cols"])
        assert (rows, cols) == image.shape and response.headers["x-has-labels"] == "1"
        assert (float(response.headers["x-row-spacing"]), float(response.headers["x-col-spacing"])) == pytest.approx(spacing)
        got = np.frombuffer(response.content[: rows * cols * 4], "<f4").reshape(rows, cols)
        np.testing.assert_array_equal(got, image)
        np.testing.assert_array_equal(np.frombuffer(response.content[rows * cols * 4:], np.uint8).reshape(rows, cols), label)
    response = client.get(f"/api/scans/{scan['id']}/slice", params={"view": "axial", "index": 6})
    assert response.status_code == 400 and "outside [0, 5]" in response.json()["error"]


def test_two_concurrent_requests_are_queued_and_both_segment_their_own_scan(client_factory, viewer_data):
    client = client_factory(start_worker=False)
    first, second = _open(client, "ct.nii.gz"), _open(client, "shifted.nii.gz")
    job1, job2 = _segment(client, first["id"]), _segment(client, second["id"])
    assert (job1["state"], job1["position"]) == ("queued", 0) and (job2["state"], job2["position"]) == ("queued", 1)
    client.app.state.viewer.jobs.start()
    done1, done2 = _wait(client, job1["id"]), _wait(client, job2["id"])
    assert done1["state"] == done2["state"] == "done"
    state = client.app.state.viewer
    np.testing.assert_array_equal(state.scans.get(first["id"]).labels, viewer_data.expected())
    np.testing.assert_array_equal(state.scans.get(second["id"]).labels, viewer_data.expected(shift=3))


def test_a_failing_job_reports_its_error_and_the_queue_goes_on(client_factory):
    client = client_factory()
    scan = _open(client, "ct.nii.gz")
    assert client.post(f"/api/scans/{scan['id']}/segment", json={"model": "nope/1"}).status_code == 404
    state = client.app.state.viewer
    bad = state.jobs.submit("scan-999", "liver_ct_2d3d/1")
    good = _segment(client, scan["id"])
    assert _wait(client, bad.id)["error"] == "scan-999: no such open scan (it may have been closed; open it again)"
    assert _wait(client, good["id"])["state"] == "done"


def test_dicom_series_downloads_seg_and_overlay_series(client_factory, viewer_data, tmp_path):
    pytest.importorskip("highdicom")
    import pydicom

    client = client_factory()
    scan = _open(client, "dicom/ct")
    assert scan["format"] == "dicom"
    assert _wait(client, _segment(client, scan["id"])["id"])["state"] == "done"
    response = client.get(f"/api/scans/{scan['id']}/download/seg.dcm")
    assert response.status_code == 200
    seg = pydicom.dcmread(io.BytesIO(response.content))
    assert seg.Modality == "SEG" and len(seg.SegmentSequence) == 2
    response = client.get(f"/api/scans/{scan['id']}/download/overlay.zip")
    with zipfile.ZipFile(io.BytesIO(response.content)) as archive:
        names = archive.namelist()
        assert len(names) == 6
        first = pydicom.dcmread(io.BytesIO(archive.read(names[0])))
    assert first.SamplesPerPixel == 3
    label = client.get(f"/api/scans/{scan['id']}/download/label.nii.gz")
    (tmp_path / "l.nii.gz").write_bytes(label.content)
    np.testing.assert_array_equal(read_nifti(tmp_path / "l.nii.gz", "SEG").array, viewer_data.expected())


def test_run_directory_and_its_prediction_on_a_scan(client_factory, viewer_data):
    client = client_factory()
    run = client.post("/api/open", json={"path": "runs/quick"}).json()["run"]
    assert run["summary"] == {"liver_dice": 0.9}
    assert run["tables"][0]["header"] == ["case", "liver_dice"] and run["tables"][0]["rows"] == [["ct", "0.9"]]
    assert [v["path"] for v in run["volumes"]] == ["runs/quick/predictions/ct.nii.gz"]
    assert client.get("/api/run/file", params={"path": "runs/quick/summary.md"}).text == "# Liver Dice\n"
    scan = _open(client, "ct.nii.gz")
    response = client.post(f"/api/scans/{scan['id']}/labels", json={"path": "runs/quick/predictions/ct.nii.gz"})
    assert [lab["name"] for lab in response.json()["scan"]["labels"]] == ["liver", "tumour"]
    assert client.get(f"/api/scans/{scan['id']}/results").json()["volumes"][1]["voxels"] == 32


def test_sirt_plan_from_spect_counts_uses_the_clinical_functions(client_factory, viewer_data):
    from tfmedseg.clinical.maa_report import patient_dosimetry

    client = client_factory()
    scan = _open(client, "ct.nii.gz")
    response = client.post(f"/api/scans/{scan['id']}/sirt", json={"lung_shunt": 0.1})
    assert response.status_code == 400 and "segment the scan" in response.json()["error"]
    assert _wait(client, _segment(client, scan["id"])["id"])["state"] == "done"
    response = client.post(f"/api/scans/{scan['id']}/sirt", json={"lung_shunt": 0.1})
    assert response.status_code == 400 and "SPECT counts" in response.json()["error"]
    # counts: the phantom itself shifted to be positive (tumour 1180, liver 1070) on the same grid
    client.post(f"/api/scans/{scan['id']}/counts", json={"path": "ct.nii.gz", "modality": "NM"})
    plan = client.post(f"/api/scans/{scan['id']}/sirt", json={"lung_shunt": 0.1, "target_normal_dose_gy": 40}).json()["sirt"]
    counts = np.clip(viewer_data.ct(), 0, None)
    labels = viewer_data.expected()
    reference = patient_dosimetry(counts, labels == 1, labels == 2, viewer_data.spacing, lung_shunt=0.1, target_normal_dose_gy=40)
    assert plan["tlr"] == pytest.approx(reference["tlr"]) and plan["tlr"] == pytest.approx(180.0 / 70.0)
    assert plan["activity_gbq"] == pytest.approx(reference["activity_gbq"])


def test_command_line_refuses_bad_roots_and_prints_one_line(tmp_path, capsys, monkeypatch):
    from tfmedseg.viewer.__main__ import build_parser, main

    assert main(["--root", str(tmp_path / "missing")]) == 2
    assert capsys.readouterr().err.strip().endswith("--root must be an existing folder")
    assert main(["--root", str(tmp_path), "--work-dir", str(tmp_path / "work")]) == 2
    assert "must not lie inside --root" in capsys.readouterr().err
    assert not (tmp_path / "work").exists()  # refused before anything is written into the input
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))  # the default temporary work folder: inside --root
    (tmp_path / "tmp").mkdir()
    assert main(["--root", str(tmp_path)]) == 2
    assert "pass --work-dir" in capsys.readouterr().err and list((tmp_path / "tmp").iterdir()) == []
    assert build_parser().parse_args(["--root", "x"]).host == "127.0.0.1"


@pytest.mark.parametrize("host, warned", [(None, False), ("0.0.0.0", True)])
def test_server_binds_to_loopback_unless_told_otherwise(viewer_data, tmp_path, capsys, monkeypatch, host, warned):
    import uvicorn

    from tfmedseg.viewer.__main__ import main

    import tfmedseg.viewer.__main__ as viewer_main

    seen = {}
    monkeypatch.setattr(uvicorn.Server, "run", lambda self: seen.update(host=self.config.host, port=self.config.port))
    monkeypatch.setattr(viewer_main, "_check_can_listen", lambda host, port: None)  # 8765 may be in use on this box
    args = ["--root", str(viewer_data.root), "--models", str(viewer_data.models), "--work-dir", str(tmp_path / "w")]
    assert main(args + (["--host", host] if host else [])) == 0
    captured = capsys.readouterr()
    assert seen == {"host": host or "127.0.0.1", "port": 8765}
    assert "1 model(s)" in captured.out
    assert ("other computers on the network can open the viewer" in captured.err) == warned
