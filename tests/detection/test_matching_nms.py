"""IoU, target assignment, sampling, ground-truth checks and NMS on hand-computed cases."""

import numpy as np
import pytest

from tfmedseg.errors import InvalidInputError
from tfmedseg.models.detection.matching import (
    assign_targets,
    box_iou,
    pad_ground_truth,
    sample_balanced,
    select_fixed,
)
from tfmedseg.models.detection.nms import batched_nms, proposal_nms


def test_box_iou_hand():
    iou = box_iou(np.array([[0, 0, 2, 2], [0, 0, 0, 0]], np.float32), np.array([[1, 1, 3, 3], [0, 0, 2, 4]], np.float32))
    np.testing.assert_allclose(iou, [[1 / 7, 0.5], [0, 0]], rtol=1e-6)


def test_assign_targets_thresholds_padding_and_forced_match():
    anchors = np.array([[0, 0, 10, 10], [0, 0, 10, 12], [0, 0, 10, 20], [50, 50, 60, 60]], np.float32)
    gt = np.array([[[0, 0, 10, 10], [0, 0, 10, 10], [30, 30, 40, 40]]], np.float32)
    cls = np.array([[2, 0, 1]], np.int32)  # row 1 is padding; row 2 overlaps nothing
    out = assign_targets(anchors, gt, cls, positive_iou=0.7, negative_iou=0.3, force_match_best=True)
    # IoUs with gt0: 1, 10/12, 0.5, 0 -> pos, pos, ignore, neg; gt2 has no overlap -> no forced anchor
    np.testing.assert_array_equal(out["labels"], [[1, 1, -1, 0]])
    np.testing.assert_array_equal(out["matched_classes"], [[2, 2, 0, 0]])
    np.testing.assert_allclose(out["max_iou"], [[1, 10 / 12, 0.5, 0]], rtol=1e-6)
    # forced match: an object whose best IoU is below the positive threshold still gets its anchor
    gt2 = np.array([[[0, 0, 10, 25]]], np.float32)
    out2 = assign_targets(anchors, gt2, np.array([[1]]), 0.9, 0.3, force_match_best=True)
    np.testing.assert_array_equal(out2["labels"], [[-1, -1, 1, 0]])
    out3 = assign_targets(anchors, gt2, np.array([[1]]), 0.9, 0.3, force_match_best=False)
    np.testing.assert_array_equal(out3["labels"], [[-1, -1, -1, 0]])


def test_sample_balanced_counts():
    labels = np.full((2, 200), 0, np.int32)
    labels[0, :10] = 1
    labels[1, :2] = 1
    labels[:, 150:] = -1
    out = np.asarray(sample_balanced(labels, num_samples=16, positive_fraction=0.25, seed=3))
    assert (out[0] == 1).sum() == 4 and (out[0] == 0).sum() == 12
    assert (out[1] == 1).sum() == 2 and (out[1] == 0).sum() == 14
    assert np.all(out[:, 150:] == -1)
    assert np.all(labels[out == 1] == 1)
    idx, valid = select_fixed(out, 20)
    idx, valid = np.asarray(idx), np.asarray(valid)
    assert valid.sum(axis=1).tolist() == [16, 16]
    assert np.all(out[0, idx[0, :4]] == 1) and np.all(out[0, idx[0, 4:16]] == 0)


def test_pad_ground_truth_and_bad_input():
    b, c, n = pad_ground_truth([np.array([[1, 2, 5, 6]]), np.zeros((0, 4))], [np.array([3]), np.array([])], 3, (8, 8), 4)
    assert b.shape == (2, 3, 4) and c.tolist() == [[3, 0, 0], [0, 0, 0]] and n.tolist() == [1, 0]
    with pytest.raises(InvalidInputError, match=r"image\[0\]\[0\].*outside the 8x8 image"):
        pad_ground_truth([np.array([[1, 2, 9, 6]])], [np.array([1])], 3, (8, 8), 4)
    with pytest.raises(InvalidInputError, match="unknown class 5"):
        pad_ground_truth([np.array([[1, 2, 5, 6]])], [np.array([5])], 3, (8, 8), 4)
    with pytest.raises(InvalidInputError, match="empty"):
        pad_ground_truth([np.array([[5, 2, 5, 6]])], [np.array([1])], 3, (8, 8), 4)
    with pytest.raises(InvalidInputError, match="max_instances"):
        pad_ground_truth([np.array([[1, 1, 2, 2]] * 4)], [np.array([1] * 4)], 3, (8, 8), 4)


def test_batched_nms_hand():
    boxes = np.array([[[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30], [0, 0, 10, 10]]], np.float32)
    scores = np.array([[[0.9, 0.0], [0.8, 0.0], [0.7, 0.0], [0.0, 0.6]]], np.float32)
    out = batched_nms(boxes, scores, max_detections=5, iou_threshold=0.5, score_threshold=0.1)
    assert int(out["num_detections"][0]) == 3  # box 1 suppressed by box 0; box 3 is another class
    np.testing.assert_allclose(out["scores"][0], [0.9, 0.7, 0.6, 0, 0], rtol=1e-6)
    np.testing.assert_array_equal(out["classes"][0], [1, 1, 2, 0, 0])
    np.testing.assert_allclose(out["boxes"][0, 1], [20, 20, 30, 30])
    np.testing.assert_allclose(out["boxes"][0, 3:], 0)
    # IoU(box0, box1) = 81/119 = 0.68: kept at threshold 0.7
    out = batched_nms(boxes, scores, 5, iou_threshold=0.7, score_threshold=0.1)
    assert int(out["num_detections"][0]) == 4


def test_proposal_nms_pads_with_zeros():
    boxes = np.array([[[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30]]], np.float32)
    props = np.asarray(proposal_nms(boxes, np.array([[0.2, 0.9, 0.5]], np.float32), 2, 4, 0.5))
    # top-2 pre-NMS are boxes 1 and 2; box 0 never enters
    np.testing.assert_allclose(props[0], [[1, 1, 11, 11], [20, 20, 30, 30], [0, 0, 0, 0], [0, 0, 0, 0]])
