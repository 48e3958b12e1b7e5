"""Tiny SSD: MirroredStrategy training, SavedModel round trip, config round trip, crop helper."""

import dataclasses
import importlib.util
import pathlib

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfmedseg.errors import ConfigError, InvalidInputError
from tfmedseg.export.savedmodel import export_detector
from tfmedseg.models import registry
from tfmedseg.models.detection.box_coder import clip_boxes, decode_boxes
from tfmedseg.models.detection.crop import box_jaccard_summary, crop_box, crop_top_detection
from tfmedseg.models.detection.matching import pad_ground_truth
from tfmedseg.models.detection.nms import batched_nms
from tfmedseg.models.detection.ssd import SSD, SSDConfig, build_ssd

_spec = importlib.util.spec_from_file_location("_synthetic", pathlib.Path(__file__).with_name("_synthetic.py"))
_synthetic = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_synthetic)


@pytest.fixture(scope="module")
def trained(two_cpu_strategy):
    keras.utils.set_random_seed(0)
    cfg = SSDConfig.tiny()
    images, boxes, classes, _ = _synthetic.rectangles(8, 64, 1, 1, seed=1, min_side=20, max_side=40)
    gt_b, gt_c, _ = pad_ground_truth(boxes, classes, cfg.max_instances, (64, 64), cfg.num_classes)
    with two_cpu_strategy.scope():
        model = build_ssd(cfg)
        model.compile(optimizer=keras.optimizers.Adam(1e-3), jit_compile=False)
    hist = model.fit(images, {"boxes": gt_b, "classes": gt_c}, batch_size=4, epochs=6, verbose=0, shuffle=False)
    return model, images, gt_b, hist.history


def test_ssd_trains_under_mirrored_strategy(trained):
    model, _, _, hist = trained
    assert isinstance(model.distribute_strategy, tf.distribute.MirroredStrategy)
    loss = hist["loss"]
    assert np.all(np.isfinite(loss))
    assert loss[-1] < 0.5 * loss[0]
    assert hist["box_loss"][-1] < hist["box_loss"][0]


def test_ssd_inference_and_savedmodel_round_trip(trained, tmp_path):
    model, images, gt_b, _ = trained
    out = model(images[:2])
    assert out["boxes"].shape == (2, 10, 4) and int(out["num_detections"][0]) > 0
    assert np.all(np.diff(out["scores"][0].numpy()) <= 1e-6)  # sorted
    path = export_detector(model, tmp_path / "ssd")
    loaded = tf.saved_model.load(path)
    served = loaded.serve(tf.constant(images[:2]))
    for key in ("boxes", "scores", "classes", "num_detections"):
        np.testing.assert_allclose(served[key].numpy(), out[key].numpy(), atol=1e-4)
    # the crop helper takes the top box of these detections
    crop, tfm = crop_top_detection(images[0, :, :, 0], {k: v.numpy() for k, v in out.items()}, 0, output_size=32)
    assert crop.shape == (32, 32)
    np.testing.assert_allclose(tfm.boxes_to_source([[0, 0, 32, 32]])[0], tfm.box, atol=1e-4)


def test_ssd_default_anchor_count_and_config_round_trip(trained):
    model, images, _, _ = trained
    cfg = model.get_config()
    clone = SSD.from_config(cfg)
    clone.set_weights(model.get_weights())
    np.testing.assert_allclose(clone(images[:1])["boxes"], model(images[:1])["boxes"], atol=1e-4)
    assert len(model.anchors) == 8 * 8 * 4 + 4 * 4 * 4 + 2 * 2 * 4 + 1 * 4


def test_ssd_bad_input(trained):
    model = trained[0]
    with pytest.raises(InvalidInputError, match="images"):
        model(np.zeros((1, 32, 32, 1), np.float32))
    with pytest.raises(ConfigError, match="scales"):
        SSDConfig.tiny(scales=(0.1, 0.2))
    with pytest.raises(ConfigError, match="nms"):
        registry.build("ssd512_vgg16", nms=0.5)


def test_crop_box_inverse_mapping():
    img = np.zeros((100, 80), np.float32)
    img[20:40, 30:50] = 1.0
    crop, t = crop_box(img, (10.4, 20.0, 59.6, 60.0), output_size=(50, 40))
    assert t.box == (10, 20, 60, 60) and crop.shape == (50, 40)
    np.testing.assert_allclose(crop[10:30, 10:30], 1.0)  # scale 1: object at (20..40) - (10, 20)
    np.testing.assert_allclose(t.boxes_to_crop([[20, 30, 40, 50]]), [[10, 10, 30, 30]])
    mask = crop > 0.5
    back = t.mask_to_source(mask)
    assert back.dtype == bool and back.shape == (100, 80)
    np.testing.assert_array_equal(back, img > 0.5)
    np.testing.assert_array_equal(t.mask_to_crop(img > 0.5), mask)
    _, t2 = crop_box(img, (0, 0, 50, 40), output_size=100)
    np.testing.assert_allclose(t2.boxes_to_source([[10, 10, 20, 30]]), [[5, 4, 10, 12]])
    with pytest.raises(InvalidInputError, match="overlap"):
        crop_box(img, (200, 200, 300, 300))
    summary = box_jaccard_summary([[0, 0, 10, 10], [0, 0, 10, 10]], [[0, 0, 10, 10], [0, 0, 10, 20]])
    assert summary["min"] == 0.5 and summary["max"] == 1.0 and summary["mean"] == 0.75


def test_ssd_near_miss_anchors_are_ignored_not_mined_as_negatives(trained):
    """A wide object no anchor covers at IoU 0.5 (the quick chest box): only its best anchor is
    positive, and the anchors overlapping it by 0.3-0.5 are ignored (``ssd_keras`` neg_iou_limit
    0.3); as negatives they were the hardest ones and kept the class loss near its start value."""
    from tfmedseg.models.detection.box_coder import decode_boxes
    from tfmedseg.models.detection.matching import box_iou

    model = trained[0]
    assert (model.config.positive_iou, model.config.negative_iou) == (0.5, 0.3)
    gt = np.array([[[14.0, 4.0, 30.0, 60.0], [0.0, 0.0, 0.0, 0.0]]], np.float32)
    labels, targets = model.anchor_targets(gt, np.array([[1, 0]], np.int32))
    labels = labels.numpy()[0]
    iou = box_iou(model.anchors, gt[0, :1]).numpy()[:, 0]
    assert iou.max() < 0.5
    best = np.flatnonzero(iou >= iou.max() - 1e-6)  # two mirror-image anchors tie
    np.testing.assert_array_equal(np.flatnonzero(labels == 1), best)
    near = (iou >= 0.3) & (labels != 1)
    assert near.sum() == 6
    np.testing.assert_array_equal(labels[near], -1)
    np.testing.assert_array_equal(labels[iou < 0.3], 0)
    decoded = decode_boxes(targets[0, best[0]], model.anchors[best[0]], model.config.variances).numpy()
    np.testing.assert_allclose(decoded, gt[0, 0], atol=1e-3)


def test_ssd_pre_nms_top_k_keeps_each_class_best_candidates(trained):
    """``pre_nms_top_k`` (torchvision's ``topk_candidates``): NMS sees each class's k best anchors only."""
    model = trained[0]
    cfg = dataclasses.replace(model.config, pre_nms_top_k=7, score_threshold=0.0, max_detections=20)
    a = len(model.anchors)
    rng = np.random.default_rng(3)
    logits = rng.normal(size=(2, a, cfg.num_classes + 1)).astype(np.float32)
    deltas = (0.3 * rng.normal(size=(2, a, 4))).astype(np.float32)
    saved, model.config = model.config, cfg
    try:
        out = model.detect(logits, deltas)
    finally:
        model.config = saved
    probs = tf.nn.softmax(logits, axis=-1).numpy()[..., 1:]
    boxes = clip_boxes(decode_boxes(deltas, model.anchors[None], cfg.variances), (cfg.image_size,) * 2).numpy()
    for i in range(2):
        for c in range(cfg.num_classes):
            top = np.argsort(-probs[i, :, c])[:7]
            want = batched_nms(boxes[i : i + 1, top], probs[i : i + 1, top, c : c + 1], 20, cfg.nms_iou, 0.0)
            got = out["classes"].numpy()[i] == c + 1
            np.testing.assert_allclose(np.sort(out["scores"].numpy()[i][got]),
                                       np.sort(want["scores"].numpy()[0, : int(want["num_detections"][0])]), rtol=1e-6)
