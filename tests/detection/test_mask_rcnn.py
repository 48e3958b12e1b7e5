"""Tiny Mask R-CNN: MirroredStrategy training, detection layer, targets, SavedModel, bad input."""

import importlib.util
import pathlib

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfmedseg.errors import ConfigError, InvalidInputError
from tfmedseg.export.savedmodel import export_detector
from tfmedseg.models import registry
from tfmedseg.models.detection.mask_rcnn import (
    LOSS_NAMES,
    MaskRCNN,
    MaskRCNNConfig,
    build_mask_rcnn,
    prepare_ground_truth,
)
from tfmedseg.models.detection.targets import detection_targets

_spec = importlib.util.spec_from_file_location("_synthetic", pathlib.Path(__file__).with_name("_synthetic.py"))
_synthetic = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_synthetic)


@pytest.fixture(scope="module")
def trained(two_cpu_strategy):
    keras.utils.set_random_seed(0)
    cfg = MaskRCNNConfig.tiny()
    images, boxes, classes, masks = _synthetic.rectangles(4, 64, 2, 2, seed=0)
    gt = prepare_ground_truth(boxes, classes, masks, cfg)
    data = {"images": images, "boxes": gt["boxes"], "classes": gt["classes"], "masks": gt["masks"]}
    with two_cpu_strategy.scope():
        model = build_mask_rcnn(cfg)
        model.compile(optimizer=keras.optimizers.Adam(1e-3, global_clipnorm=5.0), jit_compile=False)
    hist = model.fit(data, batch_size=4, epochs=6, verbose=0, shuffle=False)
    return model, images, gt, hist.history


def test_mask_rcnn_trains_under_mirrored_strategy(trained):
    model, _, _, hist = trained
    assert isinstance(model.distribute_strategy, tf.distribute.MirroredStrategy)
    assert set(LOSS_NAMES) <= set(hist)
    for name in LOSS_NAMES + ("loss",):
        assert np.all(np.isfinite(hist[name])), name
    assert hist["loss"][-1] < 0.7 * hist["loss"][0]
    assert hist["rpn_bbox_loss"][-1] < hist["rpn_bbox_loss"][0]


def test_inference_outputs_and_savedmodel_round_trip(trained, tmp_path):
    model, images, _, _ = trained
    # a permissive copy of the trained model so that the untrained-ish heads return detections
    cfg = MaskRCNNConfig.tiny(detection_min_confidence=0.0)
    clone = MaskRCNN.from_config({**model.get_config(), "config": cfg.__dict__})
    clone.set_weights(model.get_weights())
    out = clone(images[:2])
    d = cfg.detection_max_instances
    assert out["boxes"].shape == (2, d, 4) and out["masks"].shape == (2, d, 64, 64)
    assert out["mask_probs"].shape == (2, d, 14, 14) and out["masks"].dtype == tf.uint8
    n = out["num_detections"].numpy()
    assert n.min() > 0
    classes = out["classes"].numpy()
    assert np.all((classes[0, : n[0]] >= 1) & (classes[0, : n[0]] <= 2)) and np.all(classes[0, n[0]:] == 0)
    assert np.all(out["scores"].numpy()[0, : n[0]] > 0)
    loaded = tf.saved_model.load(export_detector(clone, tmp_path / "mrcnn"))
    served = loaded.serve(tf.constant(images[:2]))
    for key in ("boxes", "scores", "classes", "num_detections", "mask_probs", "masks"):
        np.testing.assert_allclose(served[key].numpy(), out[key].numpy(), atol=1e-4, err_msg=key)


def test_detection_layer_hand_case(trained):
    model = trained[0]
    rois = np.array([[[10, 10, 30, 30], [40, 40, 50, 60], [0, 0, 0, 0]]], np.float32)
    logits = np.log(np.array([[[0.05, 0.05, 0.9], [0.8, 0.1, 0.1], [0.0001, 0.9998, 0.0001]]], np.float32))
    deltas = np.zeros((1, 3, 3, 4), np.float32)
    deltas[0, 0, 2] = [1.0, 0.0, 0.0, 0.0]  # dy = 1 * 0.1 * h = 2 px
    out = model.detect(rois, logits, deltas)
    assert int(out["num_detections"][0]) == 1  # ROI 1 is background, ROI 2 is padding
    np.testing.assert_allclose(out["boxes"][0, 0], [12, 10, 32, 30], atol=1e-4)
    assert int(out["classes"][0, 0]) == 2
    np.testing.assert_allclose(out["scores"][0, 0], 0.9, rtol=1e-5)


def test_mask_loss_on_positive_rois_equals_the_all_roi_formula(trained):
    """The mask branch runs on the positives only; with the heads' batch norm in inference mode
    (no batch statistics) the loss equals the all-ROI computation weighted by the positives."""
    from tfmedseg.models.detection import losses as det_losses

    model, images, gt, _ = trained
    feats, pyramid = model._features(tf.constant(images[:2]), False)
    rng = np.random.default_rng(1)
    lo = rng.uniform(0, 40, (2, 6, 2))
    rois = tf.constant(np.concatenate([lo, lo + rng.uniform(4, 24, (2, 6, 2))], -1).astype(np.float32))
    classes = tf.constant(rng.integers(0, 3, (2, 6)).astype(np.int32))
    positive = tf.cast(classes > 0, tf.float32)
    s = model.mask_head_output_size
    targets = tf.constant((rng.random((2, 6, s, s)) > 0.5).astype(np.float32))
    got = model._mask_loss(pyramid, rois, classes, targets, positive, False)
    masks = model.mask_head(model.mask_roi_align(pyramid[:4], rois), training=False)
    masks = tf.gather(tf.transpose(masks, [0, 1, 4, 2, 3]), classes, axis=2, batch_dims=2)
    want = det_losses.binary_cross_entropy(targets, masks, positive)
    np.testing.assert_allclose(float(got), float(want), rtol=1e-5)
    nothing = model._mask_loss(pyramid, rois, classes, targets, tf.zeros_like(positive), False)
    assert float(nothing) == 0.0


def test_detection_targets_hand_case():
    gt_boxes = np.array([[[8, 8, 24, 24], [0, 0, 0, 0]]], np.float32)
    gt_classes = np.array([[2, 0]], np.int32)
    mini = np.zeros((1, 2, 4, 4), np.float32)
    mini[0, 0, :, :2] = 1.0  # left half
    props = np.array([[[8, 8, 24, 24], [40, 40, 60, 60], [8, 16, 24, 32], [0, 0, 0, 0]]], np.float32)
    t = detection_targets(props, gt_boxes, gt_classes, mini, num_rois=4, positive_fraction=0.5, mask_size=2, add_ground_truth=False, seed=1)
    valid = t["valid"].numpy()[0]
    pos = t["positive"].numpy()[0]
    assert valid.tolist() == [1, 1, 1, 0]  # the zero proposal is never sampled
    assert pos.tolist() == [1, 0, 0, 0]  # IoU of prop 2 with gt = 1/3 < 0.5
    np.testing.assert_allclose(t["rois"][0, 0], [8, 8, 24, 24])
    assert t["class_targets"].numpy()[0].tolist() == [2, 0, 0, 0]
    np.testing.assert_allclose(t["box_targets"][0, 0], 0, atol=1e-6)
    np.testing.assert_allclose(t["mask_targets"][0, 0], [[1, 0], [1, 0]])


def test_bad_input_and_config(trained):
    model = trained[0]
    cfg = MaskRCNNConfig.tiny()
    masks = [np.zeros((1, 64, 64), bool)]
    with pytest.raises(InvalidInputError, match="outside the 64x64 image"):
        prepare_ground_truth([np.array([[10, 10, 70, 20]])], [np.array([1])], masks, cfg)
    with pytest.raises(InvalidInputError, match="unknown class 3"):
        prepare_ground_truth([np.array([[10, 10, 20, 20]])], [np.array([3])], masks, cfg)
    with pytest.raises(InvalidInputError, match="masks"):
        prepare_ground_truth([np.array([[10, 10, 20, 20]])], [np.array([1])], [np.zeros((1, 32, 32))], cfg)
    with pytest.raises(InvalidInputError, match="images"):
        model(np.zeros((1, 64, 64, 3), np.float32))
    with pytest.raises(ConfigError, match="fpn_upsampling"):
        MaskRCNNConfig.tiny(fpn_upsampling="cubic")
    with pytest.raises(ConfigError, match="loss_weights"):
        MaskRCNNConfig.tiny(loss_weights={"mask": 1.0})
    with pytest.raises(ConfigError, match="image_size"):
        registry.build("mask_rcnn_r50_fpn", image_size=100)
