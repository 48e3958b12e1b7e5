"""Seed-001 experiment: wiring helpers, a tiny end-to-end run, bad input through main(), the quick run (slow)."""

from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pydicom
import pytest
import tensorflow as tf
import yaml

from tfmedseg.data import views as dv
from tfmedseg.datasets import load_dataset
from tfmedseg.datasets.phantoms import ensure_phantoms
from tfmedseg.errors import ConfigError
from tfmedseg.experiments import bone_malignet as bm

TINY = {
    "validation_fraction": 0.34,
    "crop_size": 64,
    "score_threshold": 0.0,
    "overlay_images": 2,
    "ssd": {
        "image_size": 64, "scales": [0.15, 0.3, 0.6, 0.9, 1.05], "steps": [8, 16, 32, 64], "offsets": [0.5] * 4,
        "aspect_ratios": [[1.0, 2.0, 0.5]] * 4, "backbone_filters": [8, 8, 16, 16, 16], "fc_filters": 16,
        "extra_filters": [[8, 16], [8, 16]], "max_detections": 10, "max_instances": 4,
    },
    "mask_rcnn": {
        "image_size": 64, "stem_filters": 8, "stage_filters": [8, 8, 16, 16], "stage_blocks": [1, 1, 1, 1],
        "fpn_filters": 16, "rpn_anchor_scales": [8, 16, 32, 64, 128], "rpn_filters": 16,
        "rpn_train_anchors_per_image": 64, "pre_nms_limit": 300, "post_nms_rois_training": 64,
        "post_nms_rois_inference": 32, "train_rois_per_image": 32, "head_fc_filters": 32, "mask_filters": 16,
        "mask_convs": 2, "detection_max_instances": 8, "max_gt_instances": 16, "mini_mask_size": 28,
        "detection_min_confidence": 0.0,
    },
    "ssd_stage": {"batch_size": 2, "steps_per_epoch": 2, "train": {"epochs": 1, "verbose": 0}},
    "lesion_stage": {"batch_size": 2, "steps_per_epoch": 1, "train": {"epochs": 1, "verbose": 0}},
}


@pytest.fixture(scope="module")
def phantom_root(tmp_path_factory):
    """Six phantom patients (BS0003 and BS0006 unlabeled)."""
    return ensure_phantoms("bone_scan", tmp_path_factory.mktemp("bone") / "bone_scan", 6, 0)


@pytest.fixture(scope="module")
def cases(phantom_root):
    return load_dataset("bone_scan", phantom_root)


def _config(**overrides):
    from tfmedseg.config import from_dict

    return from_dict(bm.BoneMaligNetConfig, {**TINY, **overrides})


# ----------------------------------------------------------------------------- library pieces on bone-scan phantoms
def test_split_is_by_patient_seeded_and_keeps_unlabeled_apart(cases):
    train, val, unlabeled = dv.split_patients(cases, 0.34, seed=3)
    again = dv.split_patients(cases, 0.34, seed=3)
    assert [c.case_id for c in val] == [c.case_id for c in again[1]]
    assert sorted(c.case_id for c in unlabeled) == ["BS0003", "BS0006"]
    assert len(val) == 1 and len(train) == 3
    assert not {c.case_id for c in train} & {c.case_id for c in val}
    with pytest.raises(ConfigError, match="2 labeled"):
        dv.split_patients(cases[2:3], 0.5, seed=0)


def test_views_keep_only_chest_lesions_and_crop_maps_back(cases):
    config = _config()
    case = cases[0]  # BS0001: lesions in the skull, the chest and the lumbar spine
    views = bm.collect_views([case], config)
    assert [v.view for v in views] == ["anterior", "posterior"]
    ant = views[0]
    assert 0.0 <= ant.image.min() and ant.image.max() == pytest.approx(1.0)
    all_ant = [i for i in case.instances if i.view == "anterior"]
    box = case.meta["chest_boxes"]["anterior"]
    inside = [i for i in all_ant if box[0] <= i.box[0] and i.box[2] <= box[2]]
    assert len(ant.lesions) == len(inside) < len(all_ant)
    sample, transform = dv.crop_sample(ant, 64, bm.LESION_CLASSES)
    assert sample.image.shape == (64, 64, 1) and len(sample.boxes) == len(ant.lesions)
    back = transform.boxes_to_source(sample.boxes)
    ref = np.array([i.box for i in ant.lesions], np.float32)
    sy, sx = transform.scale
    assert np.abs(back - ref).max() <= max(sy, sx) + 1e-4
    assert list(sample.classes) == [bm.LESION_CLASSES.index(i.class_name) + 1 for i in ant.lesions]
    unlabeled = bm.collect_views([cases[2]], config)
    assert unlabeled[0].lesions is None and unlabeled[0].chest_box is None



def test_quick_ssd_anchors_cover_the_squashed_chest_box(cases):
    """The quick SSD has several anchors at IoU >= 0.5 on every resized chest box (with the former
    scales 0.2/0.35 at strides 16/32 the best anchor reached 0.40, so each view had one forced
    positive whose near misses were all the hard negatives)."""
    from pathlib import Path

    from tfmedseg.config import load_config
    from tfmedseg.models.detection.anchors import feature_sizes, ssd_anchors
    from tfmedseg.models.detection.matching import box_iou

    quick = Path(bm.__file__).resolve().parents[1] / "configs" / "bone_malignet_quick.yaml"
    s = load_config(bm.BoneMaligNetConfig, quick).ssd
    anchors = ssd_anchors(s.image_size, feature_sizes(s.image_size, s.steps), s.scales, s.steps, s.offsets,
                          s.aspect_ratios, s.two_boxes_for_ar1)
    views = [v for v in bm.collect_views(cases, _config()) if v.chest_box is not None]
    _, boxes = dv.view_box_targets(views, s.image_size)
    iou = box_iou(anchors, boxes[:, 0]).numpy()  # [A, views]
    assert len(views) == 8 and iou.max(axis=0).min() > 0.55
    assert (iou >= 0.5).sum(axis=0).min() >= 4

def test_config_checks():
    with pytest.raises(ConfigError, match="crop_size"):
        _config(crop_size=128)
    with pytest.raises(ConfigError, match="unlabeled_per_batch"):
        _config(unlabeled_per_batch=4)  # Mask R-CNN has no unsupervised loss
    with pytest.raises(ConfigError, match="unlabeled_per_batch"):
        _config(unlabeled_per_batch=1, lesion_model="malignet", malignet={"ladder_fpn": False})
    assert _config(unlabeled_per_batch=1, lesion_model="malignet").unlabeled_per_batch == 1
    with pytest.raises(ConfigError, match="lesion_crop_boxes"):
        _config(lesion_crop_boxes="manual")
    with pytest.raises(ConfigError, match="lesion_model"):
        _config(lesion_model="yolo")
    # Table 4 rows in one run
    rows = _config(table4_rows=["mask_rcnn", "lfpn", "unlabeled", "self_training"], unlabeled_per_batch=1).rows()
    assert [(r, None if m is None else (m.ladder_fpn, m.global_features), u) for r, m, u in rows] == [
        ("mask_rcnn", None, 0), ("lfpn", (True, False), 0), ("unlabeled", (True, True), 1), ("self_training", (True, True), 1)]
    with pytest.raises(ConfigError, match="table4_rows"):
        _config(table4_rows=["mask_rcnn", "yolo"])
    with pytest.raises(ConfigError, match="teacher"):
        _config(table4_rows=["self_training"], unlabeled_per_batch=1)
    with pytest.raises(ConfigError, match="unlabeled_per_batch"):
        _config(table4_rows=["mask_rcnn", "unlabeled"])
    with pytest.raises(ConfigError, match="primary_row"):
        _config(table4_rows=["mask_rcnn", "malignet"], primary_row="lfpn")
    with pytest.raises(ConfigError, match="self_training.filter"):
        _config(self_training={"filter": "patient"})


def test_paper_config_matches_tables_10_and_11():
    from pathlib import Path

    from tfmedseg.config import load_config

    cfg = load_config(bm.BoneMaligNetConfig, Path(bm.__file__).resolve().parents[1] / "configs" / "bone_malignet.yaml")
    ssd, m, g = cfg.ssd, cfg.mask_rcnn, cfg.malignet
    # Table 10 (SSD chest detector)
    assert (ssd.image_size, cfg.ssd_stage.batch_size, cfg.ssd_stage.train.optimizer) == (512, 16, "adam")
    assert cfg.ssd_stage.train.learning_rate == 1e-3 and ssd.weight_decay == 5e-4 and ssd.nms_iou == 0.45
    assert ssd.scales == (0.07, 0.15, 0.3, 0.45, 0.6, 0.75, 0.9, 1.05)
    assert ssd.steps == (8, 16, 32, 64, 128, 256, 512) and ssd.offsets == (0.5,) * 7
    assert ssd.backbone_weights == "imagenet"  # section 4.1 / Appendix B: ImageNet VGG-16, fine-tuned
    # Table 11 (MaligNet, final column) and L1254 (lambda_us = 1, from scratch)
    assert m.image_size == cfg.crop_size == 320 and m.stage_blocks == (3, 4, 6, 3)
    assert all(m.loss_weights[k] == 1.0 for k in ("rpn_class_loss", "rpn_bbox_loss", "mrcnn_class_loss",
                                                  "mrcnn_bbox_loss", "mrcnn_mask_loss"))
    assert g.noise_stddev == 0.03 and g.unsupervised_weight == 1.0 and g.ladder_fpn and g.global_features
    assert g.upsampling == "bicubic" and cfg.lesion_model == "malignet"
    assert cfg.lesion_stage.batch_size + cfg.unlabeled_per_batch == 16 and cfg.lesion_stage.train.optimizer == "adam"
    assert cfg.lesion_stage.train.learning_rate == 1e-3 and m.weight_decay == 1e-4
    assert m.rpn_nms_threshold == 0.7 and m.train_rois_per_image == 200
    assert m.rpn_anchor_scales == (32, 64, 128, 256, 512) and m.rpn_anchor_ratios == (0.5, 1.0, 2.0)
    assert m.rpn_anchor_stride == 1 and m.rpn_train_anchors_per_image == 256
    assert m.max_gt_instances == 100 and m.detection_min_confidence == 0.7 == cfg.score_threshold
    # section 1 / L821: every batch mixes unlabeled views; section 6.2: crops at the SSD's boxes
    assert cfg.unlabeled_per_batch == cfg.lesion_stage.batch_size == 8 and cfg.lesion_crop_boxes == "predicted"
    with pytest.raises(ConfigError, match="iou_type"):
        _config(iou_type="centre")


# ----------------------------------------------------------------------------- end to end
def _event_tags(log_dir) -> set[str]:
    """Scalar tags written to the TensorBoard event files under ``log_dir``."""
    tags = set()
    for path in log_dir.rglob("events.*"):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            tags.update(v.tag for v in event.summary.value)
    return tags


def test_tiny_run_end_to_end(phantom_root, cases, tmp_path, capsys):
    # Table 4 rows in one run: Mask R-CNN, then a self-training round on its pseudo-labels (Table 8) whose
    # student is MaligNet with one unlabeled view joining each batch of 2 (crops at the SSD's boxes); two
    # lesion models only, to keep the default run cheap (every row runs in the slow quick-config test)
    cfg_path = tmp_path / "tiny.yaml"
    cfg_path.write_text(yaml.safe_dump({**TINY, "unlabeled_per_batch": 1, "lesion_crop_boxes": "predicted",
                                        "malignet": {"global_filters": 8}, "timing_repeats": 2,
                                        "table4_rows": ["mask_rcnn", "self_training"], "primary_row": "self_training",
                                        "self_training": {"min_confidence": 0.0, "threshold": 0.0, "filter": "lesion",
                                                          "report_thresholds": [0.0, 0.5]}}))
    out, export = tmp_path / "run", tmp_path / "saved_models"
    argv = ["--config", str(cfg_path), "--data-dir", str(phantom_root), "--output-dir", str(out),
            "--set", f"export_dir={export}", "--seed", "0"]
    assert bm.main(argv) == 0
    captured = capsys.readouterr()
    printed = captured.out + captured.err
    assert "self-training round 1/1: lesion-level > 0.0 keeps 4 of 4 unlabeled images" in printed
    assert "row self_training: 10 labeled crops, 4 unlabeled (of 4 unlabeled views) at 1 per batch" in printed
    # per-view CSV: the validation patient's two views per row, reference lesions as counted from the loader
    _, val, _ = dv.split_patients(cases, TINY["validation_fraction"], 0)
    with open(out / "per_case.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [(r["case"], r["view"]) for r in rows] == [(val[0].case_id, "anterior"), (val[0].case_id, "posterior")] * 2
    assert [r["model"] for r in rows[::2]] == [bm.TABLE4_ROWS[n][0] for n in ("mask_rcnn", "self_training")]
    views = bm.collect_views(val, _config())
    assert [int(r["lesions_ref"]) for r in rows[:2]] == [len(v.lesions) for v in views]
    summary = json.loads((out / "summary.json").read_text())["summary"]
    for key in ("chest_jaccard_min", "chest_jaccard_mean", "chest_jaccard_max", "lesion_precision",
                "lesion_sensitivity", "lesion_f1", "metastasis_sensitivity", "metastasis_specificity",
                "mask_rcnn_lesion_f1", "self_training_lesion_f1"):
        assert 0.0 <= summary[key] <= 1.0, key
    assert summary["primary_row"] == "self_training" and summary["lesion_f1"] == summary["self_training_lesion_f1"]
    assert summary["chest_jaccard_min"] <= summary["chest_jaccard_mean"] <= summary["chest_jaccard_max"]
    assert summary["inference_seconds_per_image"] > 0 and summary["ssd_train_seconds"] > 0
    assert summary["inference_ratio"] == pytest.approx(summary["self_training_seconds_per_view"]
                                                       / summary["mask_rcnn_seconds_per_view"])
    assert summary["self_training_unlabeled_views_per_epoch"] == 1.0  # one step of 1 unlabeled view
    assert summary["self_training_denoising_first"] > 0
    text = (out / "summary.md").read_text()
    for heading in ("Table 4-style", "Table 5-style", "Table 6-style", "Table 7-style", "Table 8-style", "box Jaccard",
                    "Fig. 17-style", "Fig. 18-style", "Semi-supervised", "Inference time per view"):
        assert heading in text, heading
    table8 = text.split("Table 8-style")[1]
    assert "| All | all |" in table8 and "| 0.5 | image |" in table8 and "| 1 | 0.0 | lesion |" in table8
    assert (out / "montage.png").stat().st_size > 0 and (out / "config.yaml").is_file()
    for stage in ("ssd", "lesion_mask_rcnn", "lesion_self_training_r1"):
        assert (out / stage / "best.weights.h5").is_file() and (out / stage / "last.weights.h5").is_file()
    # validation detection metrics per epoch in TensorBoard (not only losses)
    assert {"epoch_chest_jaccard_mean", "epoch_loss"} <= _event_tags(out / "ssd" / "logs" / "validation")
    assert {"epoch_lesion_f1", "epoch_localization_f1"} <= _event_tags(out / "lesion_self_training_r1" / "logs" / "validation")
    assert list((out / "logs" / "predictions").rglob("events.*"))
    # the exported inference models (their round trips: tests/detection/test_ssd.py, test_mask_rcnn.py; served
    # from this experiment's export in the slow test below)
    for name in ("bone_malignet_ssd", "bone_malignet_maskrcnn"):
        assert (export / name / "1" / "saved_model.pb").is_file()
    # the servable whole-body model (its reload is tested in tests/detection/test_whole_body.py)
    meta = json.loads((export / "bone_malignet" / "1" / "metadata.json").read_text())
    assert meta["class_names"] == list(bm.LESION_CLASSES) and (export / "bone_malignet" / "1" / "saved_model.pb").is_file()
    assert meta["lesion_row"] == "self_training"
    check = meta["served_vs_keras"]  # reloaded with tf.saved_model.load, compared with Keras on the validation views
    assert check["match"] and check["views"] == 2 and check["max_box_diff_px"] <= 1.0
    # issue 13: rerun a finished run (says so, exits 0); a killed run: the slow test below
    capsys.readouterr()
    assert bm.main(argv) == 0 and "holds a finished run" in capsys.readouterr().out


@pytest.mark.slow
def test_tiny_run_killed_after_training_resumes(phantom_root, tmp_path, rerun_killed):
    """Issue 13: a run killed after training (no run_complete.json) resumes: no crash, no NaN in the time
    table, nothing exported again (a second whole run, so slow; the default run covers the finished rerun)."""
    cfg_path = tmp_path / "tiny.yaml"
    cfg_path.write_text(yaml.safe_dump({**TINY, "lesion_model": "malignet", "unlabeled_per_batch": 1,
                                        "lesion_crop_boxes": "predicted", "malignet": {"global_filters": 8}}))
    out, export = tmp_path / "run", tmp_path / "saved_models"
    argv = ["--config", str(cfg_path), "--data-dir", str(phantom_root), "--output-dir", str(out),
            "--set", f"export_dir={export}", "--seed", "0"]
    assert bm.main(argv) == 0
    # the exported inference models load and serve fixed-size detections
    ssd = tf.saved_model.load(str(export / "bone_malignet_ssd" / "1"))
    det = ssd.serve(tf.zeros([1, 64, 64, 1]))
    assert tuple(det["boxes"].shape) == (1, 10, 4)
    mrcnn = tf.saved_model.load(str(export / "bone_malignet_maskrcnn" / "1"))
    out_m = mrcnn.serve(tf.zeros([2, 64, 64, 1]))
    assert tuple(out_m["masks"].shape) == (2, 8, 64, 64) and out_m["masks"].dtype == tf.uint8
    rerun_killed(bm.main, argv, out, [export / n for n in ("bone_malignet_ssd", "bone_malignet_maskrcnn", "bone_malignet")])
    assert "nan" not in (out / "summary.md").read_text().split("### Training time")[-1].split("### Inference")[0].lower()
    assert json.loads((out / "summary.json").read_text())["summary"]["ssd_train_seconds"] > 0
    # issue 13: the documented whole-body command line (docs/predict.md) runs on this run's export
    import importlib.util
    import pathlib

    from tfmedseg.predict import main as predict_main

    spec = importlib.util.spec_from_file_location("_documented", pathlib.Path(__file__).with_name("_documented.py"))
    documented = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(documented)
    commands = [argv for module, argv in documented.documented_commands()
                if module == "predict" and "bone_malignet" in argv[argv.index("--model") + 1]]
    assert commands
    scan = next(phantom_root.rglob("wholebody.dcm"))
    for k, argv in enumerate(commands):
        values = {"--model": lambda v: v.replace("saved_models", str(export)), "--input": lambda v: str(scan),
                  "--output": lambda v, k=k: str(tmp_path / f"cmd{k}" / v)}
        argv = [values[argv[i - 1]](a) if i and argv[i - 1] in values else a for i, a in enumerate(argv)]
        assert predict_main(argv) == 0, argv


# ----------------------------------------------------------------------------- bad input through main()
def _copy(phantom_root, tmp_path):
    root = tmp_path / "data"
    shutil.copytree(phantom_root, root)
    return root


def _main_error(root, tmp_path, capsys) -> str:
    assert bm.main(["--data-dir", str(root), "--output-dir", str(tmp_path / "run")]) == 2
    return capsys.readouterr().err


def test_scan_with_one_view_missing(phantom_root, tmp_path, capsys):
    root = _copy(phantom_root, tmp_path)
    scan = root / "BS0002" / "wholebody.dcm"
    ds = pydicom.dcmread(scan)
    code = ds.DetectorInformationSequence[1].ViewCodeSequence[0]
    code.CodeValue, code.CodeMeaning = "399067008", "Lateral projection"
    ds.save_as(scan)
    err = _main_error(root, tmp_path, capsys)
    assert str(scan) in err and "posterior" in err


def test_annotation_box_outside_the_image(phantom_root, tmp_path, capsys):
    root = _copy(phantom_root, tmp_path)
    path = root / "BS0004" / "annotation.json"
    data = json.loads(path.read_text())
    data["views"]["anterior"]["chest_box"] = [10, 10, 900, 100]
    path.write_text(json.dumps(data))
    err = _main_error(root, tmp_path, capsys)
    assert str(path) in err and "outside" in err


def test_unknown_lesion_class(phantom_root, tmp_path, capsys):
    root = _copy(phantom_root, tmp_path)
    path = root / "BS0001" / "annotation.json"
    data = json.loads(path.read_text())
    data["views"]["posterior"]["lesions"][0]["class"] = "benign"
    path.write_text(json.dumps(data))
    err = _main_error(root, tmp_path, capsys)
    assert str(path) in err and "benign" in err and "malignant" in err


# ----------------------------------------------------------------------------- quick configuration
#: A directory laid out like this test's tmp_path (run/, cache/, saved_models/) that holds this test's
#: run: the test reruns main() into it, which says "holds a finished run" (same config, seed, data;
#: other settings are refused) or resumes a killed one, then checks the same Must-show figures.
QUICK_RUN_DIR = "TFMEDSEG_BONE_MALIGNET_QUICK_RUN"


def check_quick_run(out, export) -> dict:
    """Issue 14's Must show on a finished quick run (``out``: the run directory, ``export``: its export_dir)."""
    data = json.loads((out / "summary.json").read_text())
    summary = data["summary"]
    assert summary["primary_row"] == "unlabeled"
    assert {f"{r}_lesion_f1" for r in bm.TABLE4_ROWS} <= set(summary)  # every Table 4 row trained and scored
    assert summary["chest_jaccard_mean"] >= 0.85 and summary["chest_jaccard_min"] >= 0.75
    assert summary["mask_rcnn_lesion_f1"] >= 0.5  # trained long enough to find lesions
    assert summary["lesion_f1"] >= summary["mask_rcnn_lesion_f1"] - 0.03  # MaligNet (+ unlabeled) vs Mask R-CNN
    assert summary["inference_ratio"] <= 1.15  # whole inference per view, same views, interleaved, median
    # the unlabeled views are consumed (2 per step, counted per epoch) and the denoising cost falls
    steps = data["timings"]["unlabeled"]["steps"] / data["timings"]["unlabeled"]["epochs"]
    assert summary["unlabeled_unlabeled_views_per_epoch"] == 2 * steps
    with open(out / "lesion_unlabeled" / "history.csv") as fh:
        assert {float(r["unlabeled_views"]) for r in csv.DictReader(fh)} == {2.0 * steps}
    assert summary["unlabeled_denoising_last"] < 0.5 * summary["unlabeled_denoising_first"]
    text = (out / "summary.md").read_text()
    for heading in ("Table 4-style", "Table 5-style", "Table 6-style", "Table 7-style", "Table 8-style",
                    "Fig. 17-style", "Fig. 18-style", "Inference time per view"):
        assert heading in text, heading
    table4 = text.split("Table 4-style")[1].split("###")[0]
    for label, *_ in bm.TABLE4_ROWS.values():  # every row printed
        assert f"| {label} |" in table4, label
    # the exported whole-body MaligNet, reloaded with tf.saved_model.load, gives the Keras instances
    version = max((export / "bone_malignet").iterdir(), key=lambda p: int(p.name))
    check = json.loads((version / "metadata.json").read_text())["served_vs_keras"]
    assert check["match"] and check["views"] == 10 and check["max_box_diff_px"] <= 1.0
    return summary


@pytest.mark.slow
def test_quick_config_on_default_phantoms(quick_run_dir):
    """The default command on the default phantoms: every Table 4 row in one run (issue 14's Must show).

    With ``TFMEDSEG_BONE_MALIGNET_QUICK_RUN`` set, the run there is reused (see :data:`QUICK_RUN_DIR`).
    Figures reached are in docs/experiments.md ("Quick configuration on this machine").
    """
    base = quick_run_dir(QUICK_RUN_DIR)  # tests/experiments/conftest.py
    out = base / "run"
    assert bm.main(["--output-dir", str(out), "--cache-dir", str(base / "cache"),
                    "--set", f"export_dir={base / 'saved_models'}"]) == 0
    check_quick_run(out, base / "saved_models")
