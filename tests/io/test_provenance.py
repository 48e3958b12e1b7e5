"""``tfmedseg.io.provenance``: cheap, deterministic fingerprints of what made an output."""

from __future__ import annotations

import os

import tfmedseg.io.provenance as provenance
from tfmedseg.io.provenance import input_fingerprint, job_digest, model_fingerprint


def _touch(path, content: bytes, mtime_ns: int = 10**18):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    os.utime(path, ns=(mtime_ns, mtime_ns))


def test_savedmodel_fingerprint_follows_its_definition_files_only(tmp_path):
    model = tmp_path / "m" / "1"
    _touch(model / "saved_model.pb", b"graph")
    _touch(model / "variables" / "variables.index", b"index with checksums")
    _touch(model / "variables" / "variables.data-00000-of-00001", b"weights")
    first = model_fingerprint(model)
    assert first == model_fingerprint(model) and first["path"] == str(model)
    _touch(model / "variables" / "variables.data-00000-of-00001", b"other weights")  # the index holds their checksums
    _touch(model / "notes.txt", b"not part of the model")
    assert model_fingerprint(model) == first
    _touch(model / "variables" / "variables.index", b"index with other checksums")
    assert model_fingerprint(model) != first


def test_run_dir_and_keras_file_fingerprints(tmp_path, monkeypatch):
    run = tmp_path / "run"
    _touch(run / "model.keras", b"zip")
    _touch(run / "serving_spec.json", b"{}")
    first = model_fingerprint(run)
    _touch(run / "export_info.json", b"{\"seed\": 1}")
    assert model_fingerprint(run) != first
    keras_file = model_fingerprint(run / "model.keras")  # a .keras file and the spec beside it
    _touch(run / "serving_spec.json", b"{\"mode\": \"2d\"}")
    assert model_fingerprint(run / "model.keras") != keras_file
    monkeypatch.setattr(provenance, "CONTENT_HASH_LIMIT", 2)  # large files: size and mtime, never their bytes
    large = model_fingerprint(run)
    _touch(run / "model.keras", b"ZIP")
    assert model_fingerprint(run) == large
    _touch(run / "model.keras", b"ZIP", mtime_ns=10**18 + 1)
    assert model_fingerprint(run) != large


def test_input_fingerprint_of_a_file_and_of_a_dicom_folder(tmp_path):
    scan = tmp_path / "scan.nii.gz"
    _touch(scan, b"voxels")
    assert input_fingerprint(scan) == {"path": str(scan), "size": 6, "mtime_ns": 10**18}
    series = tmp_path / "series"
    for k in range(3):
        _touch(series / "sub" / f"{k}.dcm", b"dicom" * k)
    first = input_fingerprint(series)
    assert first["files"] == 3 and first == input_fingerprint(series)
    _touch(series / "sub" / "1.dcm", b"dicom", mtime_ns=10**18 + 5)
    assert input_fingerprint(series) != first
    assert job_digest({"a": 1, "b": [1, 2]}) == job_digest({"b": [1, 2], "a": 1}) != job_digest({"a": 2, "b": [1, 2]})
