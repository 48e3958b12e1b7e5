"""The servable two-stage model: in-graph intensity, SSD chest crop, lesion model, view mapping;
SavedModel (TF Serving layout) reload gives the same instances."""

import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfmedseg.export.whole_body import export_whole_body_savedmodel, served_matches_keras
from tfmedseg.models.detection.malignet import MaligNetConfig, build_malignet
from tfmedseg.models.detection.mask_rcnn import MaskRCNNConfig
from tfmedseg.models.detection.ssd import SSDConfig, build_ssd
from tfmedseg.models.detection.two_stage import (
    WholeBodyLesionModel,
    percentile_normalise,
)

VIEW = (96, 48)


@pytest.fixture(scope="module")
def pipeline():
    keras.utils.set_random_seed(1)
    ssd = build_ssd(SSDConfig.tiny())
    lesion = build_malignet(MaskRCNNConfig.tiny(detection_min_confidence=0.0), MaligNetConfig(global_filters=8))
    model = WholeBodyLesionModel(ssd, lesion, VIEW, name="bone_malignet")
    views = np.random.default_rng(0).poisson(20.0, (2, *VIEW)).astype(np.float32)
    return model, views


@pytest.fixture(scope="module")
def exported(pipeline, tmp_path_factory):
    model, _ = pipeline
    root = tmp_path_factory.mktemp("export")
    return export_whole_body_savedmodel(model, root / "bone_malignet" / "1", class_names=("malignant", "degenerative"))


def test_percentile_normalise_matches_numpy():
    x = np.random.default_rng(1).gamma(2.0, 30.0, (2, 17, 9)).astype(np.float32)
    got = percentile_normalise(x, 99.5).numpy()
    for i in range(2):
        lo, hi = x[i].min(), np.percentile(x[i], 99.5)
        np.testing.assert_allclose(got[i], np.clip((x[i] - lo) / (hi - lo), 0, 1), atol=1e-5)


def test_instances_in_view_coordinates_and_savedmodel_round_trip(pipeline, exported):
    model, views = pipeline
    out = model(views)
    n = out["num_detections"].numpy()
    assert n.min() > 0
    boxes, chest = out["boxes"].numpy(), out["chest_box"].numpy()
    for i in range(2):  # lesions lie inside the chest crop, masks inside their boxes, view-sized
        b = boxes[i, : n[i]]
        assert np.all(b[:, 0] >= chest[i, 0] - 1e-3) and np.all(b[:, 3] <= chest[i, 3] + 1e-3)
        assert np.all(boxes[i, n[i]:] == 0)
    assert out["masks"].shape == (2, model.lesion_model.config.detection_max_instances, *VIEW)
    m = out["masks"].numpy()
    ys = np.nonzero(m[0, 0])[0]
    if len(ys):
        assert ys.min() >= np.floor(boxes[0, 0, 0]) and ys.max() < np.ceil(boxes[0, 0, 2])
    path = exported
    meta = json.loads((path / "metadata.json").read_text())
    assert meta["class_names"] == ["malignant", "degenerative"] and meta["inputs"]["views"]["shape"] == [None, *VIEW]
    served = tf.saved_model.load(str(path)).signatures["serving_default"](views=tf.constant(views))
    np.testing.assert_array_equal(served["num_detections"].numpy(), n)
    np.testing.assert_allclose(served["boxes"].numpy(), boxes, atol=1.0)
    np.testing.assert_array_equal(served["classes"].numpy(), out["classes"].numpy())
    np.testing.assert_allclose(served["scores"].numpy(), out["scores"].numpy(), atol=1e-4)
    assert np.mean(served["masks"].numpy() != m) < 1e-3


def test_served_matches_keras_compares_instances(pipeline, exported):
    """The run's export check (issue 14): reload, same counts/classes, boxes within 1 px; a shift is caught."""
    model, views = pipeline
    check = served_matches_keras(exported, model, views)
    assert check["match"] and check["views"] == 2 and check["instances"] > 0 and check["max_box_diff_px"] <= 1.0

    def shifted(v, training=False):
        out = dict(model(v, training=training))
        return {**out, "boxes": out["boxes"] + 1.5}

    check = served_matches_keras(exported, shifted, views)
    assert not check["match"] and check["same_counts"] and check["max_box_diff_px"] == pytest.approx(1.5, abs=0.05)


def test_predict_on_a_bone_scan_nm_dicom(exported, tmp_path, capsys):
    from tfmedseg.io.nm_planar import write_nm_wholebody
    from tfmedseg.predict import main

    export = exported
    rng = np.random.default_rng(5)
    big = rng.poisson(20.0, (2, 2 * VIEW[0], 2 * VIEW[1])).astype(np.float32)  # other size: resized in and out
    dcm = write_nm_wholebody(big[0], big[1], tmp_path / "scan.dcm", uid_seed="t")
    out = tmp_path / "pred"
    assert main(["--model", str(export), "--input", str(dcm), "--output", str(out)]) == 0
    data = json.loads((out / "instances.json").read_text())
    assert set(data["views"]) == {"anterior", "posterior"}
    ant = data["views"]["anterior"]
    assert ant["shape"] == [2 * VIEW[0], 2 * VIEW[1]] and ant["lesions"]
    for lesion in ant["lesions"]:
        y0, x0, y1, x1 = lesion["box"]
        assert 0 <= y0 <= y1 <= 2 * VIEW[0] and 0 <= x0 <= x1 <= 2 * VIEW[1]
        assert lesion["class_name"] in ("malignant", "degenerative")
    from PIL import Image

    assert Image.open(out / "overlay_anterior.png").size == (2 * VIEW[1], 2 * VIEW[0])
    before = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in out.iterdir()}
    assert main(["--model", str(export), "--input", str(dcm), "--output", str(out)]) == 0  # the same command again
    assert capsys.readouterr().out.endswith(f"{out} holds the result of this model, input and options already; "
                                            "nothing to do (pass --overwrite to write it again)\n")
    assert {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in out.iterdir()} == before
    os.utime(dcm, ns=(dcm.stat().st_atime_ns, dcm.stat().st_mtime_ns + 10**9))  # another input: exists, no --overwrite
    assert main(["--model", str(export), "--input", str(dcm), "--output", str(out)]) == 2
    assert {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in out.iterdir()} == before


def test_viewer_shows_the_same_instances_as_predict(exported, tmp_path):
    pytest.importorskip("starlette")
    from starlette.testclient import TestClient

    from tfmedseg.io.nm_planar import write_nm_wholebody
    from tfmedseg.predict import main
    from tfmedseg.viewer.app import ViewerConfig, create_app

    root = tmp_path / "root"
    root.mkdir()
    views = np.random.default_rng(5).poisson(20.0, (2, *VIEW)).astype(np.float32)
    dcm = write_nm_wholebody(views[0], views[1], root / "bone.dcm", uid_seed="v")
    assert main(["--model", str(exported), "--input", str(dcm), "--output", str(tmp_path / "pred")]) == 0
    expected = json.loads((tmp_path / "pred" / "instances.json").read_text())["views"]
    config = ViewerConfig(root, exported.parent.parent, work_dir=tmp_path / "work")
    with TestClient(create_app(config)) as client:
        assert client.get("/api/files").json()["entries"][0]["kind"] == "dicom_file"
        scan = client.post("/api/open", json={"path": "bone.dcm"}).json()["scan"]
        assert scan["planar"] and scan["view_names"] == ["anterior", "posterior"] and scan["shape"] == [2, *VIEW]
        job = client.post(f"/api/scans/{scan['id']}/segment", json={"model": "bone_malignet/1"}).json()["job"]
        state = client.app.state.viewer
        assert state.jobs.wait(state.jobs.get(job["id"]), 120).state == "done", state.jobs.get(job["id"]).error
        instances = client.get(f"/api/scans/{scan['id']}/results").json()["instances"]
        got = {(i["view"], i["class_name"], round(i["score"], 4), i["mask_pixels"]) for i in instances}
        want = {(view, les["class_name"], round(les["score"], 4), les["mask_pixels"])
                for view, v in expected.items() for les in v["lesions"]}
        assert got == want and got
        labels = state.scans.get(scan["id"]).labels
        assert labels.shape == (2, *VIEW) and set(np.unique(labels)) <= {0, 1, 2}
        download = client.get(f"/api/scans/{scan['id']}/download/instances.json")
        assert len(download.json()["instances"]) == len(instances)
        assert client.get(f"/api/scans/{scan['id']}/download/label.nii.gz").status_code == 400
