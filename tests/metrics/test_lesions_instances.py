"""LiTS lesion correspondence, detection counts, Dice by size; seed-001 instance metrics; Keras Dice."""

from __future__ import annotations

import numpy as np
import pytest

from tfmedseg.datasets.case import LESION_CLASSES, Instance
from tfmedseg.errors import InvalidInputError
from tfmedseg.metrics import (
    box_iou,
    compute_box_jaccard,
    compute_dice_by_lesion_size,
    compute_instance_metrics,
    compute_lesion_detection,
    compute_metastasis_detection,
    lesion_size_group,
    match_lesions,
)


def _vol():
    return np.zeros((1, 20, 20), bool)


def test_one_prediction_bridging_two_references_merges_them():
    y = _vol()
    y[0, 2:6, 2:6] = True  # 16 voxels
    y[0, 2:6, 8:12] = True  # 16 voxels
    p = _vol()
    p[0, 2:6, 2:12] = True  # 40 voxels, bridges both
    matches, unmatched, info = match_lesions(p, y)
    assert info["n_ref"] == 2 and info["n_pred"] == 1 and unmatched == []
    assert len(matches) == 1
    m = matches[0]
    assert m.ref_labels == [1, 2] and m.n_ref == 2 and m.intersection == 32
    assert m.iou == pytest.approx(32 / 40)
    det = compute_lesion_detection(p, y, iou_threshold=0.5)
    assert (det["tp"], det["fp"], det["fn"]) == (2, 0, 0)  # both reference lesions credited


def test_two_predictions_on_one_reference_merge_into_one():
    y = _vol()
    y[0, 2:10, 2:10] = True  # 64
    p = _vol()
    p[0, 2:10, 2:5] = True  # 24
    p[0, 2:10, 7:10] = True  # 24
    matches, unmatched, _ = match_lesions(p, y)
    assert len(matches) == 1 and matches[0].pred_labels == [1, 2] and unmatched == []
    assert matches[0].iou == pytest.approx(48 / 64)
    det = compute_lesion_detection(p, y)
    assert (det["tp"], det["fp"], det["fn"], det["n_pred"]) == (1, 0, 0, 1)


def test_reference_shared_by_two_predictions_goes_to_the_larger_overlap():
    y = _vol()
    y[0, 2:6, 2:6] = True  # A
    y[0, 2:6, 10:14] = True  # B
    p = _vol()
    p[0, 2:6, 3:11] = True  # covers 12 of A (cols 3-5) and 1 col (4 vox) of B
    p[0, 2:6, 12:18] = True  # covers 8 of B
    matches, unmatched, _ = match_lesions(p, y)
    # B's largest overlap is with prediction 2, so prediction 1 does not merge A and B.
    assert sorted(m.ref_labels for m in matches) == [[1], [2]]
    by_ref = {tuple(m.ref_labels): m for m in matches}
    assert by_ref[(1,)].pred_labels == [1] and by_ref[(2,)].pred_labels == [2]
    assert by_ref[(1,)].iou == pytest.approx(12 / (16 + 32 - 12))
    det0 = compute_lesion_detection(p, y, iou_threshold=0.0)
    det5 = compute_lesion_detection(p, y, iou_threshold=0.5)
    assert (det0["tp"], det0["fp"], det0["fn"]) == (2, 0, 0)
    # A: IoU 12/36 < .5 -> its prediction is a FP; B: 8/(16+24-8)=0.25 -> FP too.
    assert (det5["tp"], det5["fp"], det5["fn"]) == (0, 2, 2)
    assert det5["precision"] == 0.0 and det5["recall"] == 0.0


def test_false_positive_and_missed_lesion_counts():
    y = _vol()
    y[0, 1:4, 1:4] = True
    y[0, 10:13, 10:13] = True
    p = _vol()
    p[0, 1:4, 1:4] = True
    p[0, 16:18, 1:3] = True  # no overlap
    det = compute_lesion_detection(p, y, iou_threshold=0.5)
    assert (det["tp"], det["fp"], det["fn"]) == (1, 1, 1)
    assert det["precision"] == 0.5 and det["recall"] == 0.5
    empty = compute_lesion_detection(_vol(), _vol())
    assert (empty["tp"], empty["fp"], empty["fn"]) == (0, 0, 0)
    assert np.isnan(empty["precision"]) and np.isnan(empty["recall"])
    with pytest.raises(InvalidInputError, match="iou_threshold"):
        compute_lesion_detection(p, y, iou_threshold=2.0)


def test_dice_by_lesion_size_groups():
    assert [lesion_size_group(v) for v in (1, 999, 1000, 10000, 10001)] == [
        "small", "small", "medium", "medium", "large"]
    y = np.zeros((30, 30, 30), bool)
    y[0:2, 0:5, 0:5] = True  # 50 voxels, small
    y[10:20, 0:10, 10:22] = True  # 1200 voxels, medium
    p = np.zeros_like(y)
    p[0:2, 0:5, 0:5] = True  # perfect
    p[10:20, 0:10, 10:16] = True  # half of the medium one
    out = compute_dice_by_lesion_size(p, y)
    assert out["small"]["dice"] == 1.0 and out["small"]["count"] == 1
    assert out["medium"]["dice"] == pytest.approx(2 * 600 / (600 + 1200))
    assert out["large"]["count"] == 0 and np.isnan(out["large"]["dice"])


def _inst(cls, box, score=1.0):
    return {"class_name": cls, "box": box, "score": score}


def test_instance_metrics_per_class_weighted_and_confusion():
    refs = [
        [_inst("malignant", (0, 0, 10, 10)), _inst("degenerative", (20, 20, 30, 30))],
        [_inst("malignant", (0, 0, 10, 10)), _inst("malignant", (40, 40, 50, 50))],
    ]
    preds = [
        [_inst("malignant", (0, 0, 10, 10), 0.9), _inst("malignant", (20, 20, 30, 30), 0.8)],
        [_inst("malignant", (0, 0, 10, 9), 0.95), _inst("post_trauma", (60, 60, 70, 70), 0.9),
         _inst("malignant", (40, 40, 50, 50), 0.5)],
    ]
    out = compute_instance_metrics(preds, refs, LESION_CLASSES, score_threshold=0.7)
    # the 0.5-score prediction is ignored -> the reference at (40,40) is missed
    loc = out["localization"]
    assert (loc["tp"], loc["fp"], loc["fn"]) == (3, 1, 1)
    mal = out["per_class"]["malignant"]
    assert (mal["tp"], mal["fp"], mal["fn"]) == (2, 1, 1)
    assert mal["precision"] == pytest.approx(2 / 3) and mal["sensitivity"] == pytest.approx(2 / 3)
    deg = out["per_class"]["degenerative"]
    assert (deg["tp"], deg["fp"], deg["fn"]) == (0, 0, 1)
    assert out["support"] == {"malignant": 3, "infection_inflammation": 0, "degenerative": 1, "post_trauma": 0}
    assert out["weighted"]["f1"] == pytest.approx(0.75 * (2 / 3) + 0.25 * 0.0)
    conf = out["confusion"]
    assert conf[0, 0] == 2 and conf[2, 0] == 1 and conf.sum() == 3  # degenerative predicted as malignant
    with pytest.raises(InvalidInputError, match="class_name"):
        compute_instance_metrics([[_inst("tumour", (0, 0, 1, 1))]], [[]], LESION_CLASSES)


def test_mask_iou_used_when_masks_present():
    m1 = np.zeros((10, 10), bool)
    m1[0:4, 0:4] = True
    m2 = np.zeros((10, 10), bool)
    m2[0:4, 0:2] = True
    ref = Instance(view="anterior", class_name="malignant", box=(0, 0, 4, 4), mask=m1)
    pred = Instance(view="anterior", class_name="malignant", box=(0, 0, 4, 4), mask=m2)
    out = compute_instance_metrics([[pred]], [[ref]], LESION_CLASSES)
    assert out["localization"]["tp"] == 1  # mask IoU 0.5 >= 0.5 (box IoU would be 1.0 too)
    pred.mask = m2 & (np.arange(10)[None, :] < 1)
    assert compute_instance_metrics([[pred]], [[ref]], LESION_CLASSES)["localization"]["tp"] == 0  # mask IoU 0.25
    assert compute_instance_metrics([[pred]], [[ref]], LESION_CLASSES, use="box")["localization"]["tp"] == 1


def test_metastasis_image_level():
    mal = _inst("malignant", (0, 0, 10, 10))
    refs = [[mal], [mal], [], [_inst("degenerative", (0, 0, 5, 5))]]
    preds = [
        [mal],  # TP
        [_inst("malignant", (50, 50, 60, 60))],  # false alarm on a positive image -> FN
        [_inst("malignant", (0, 0, 3, 3))],  # FP
        [_inst("degenerative", (0, 0, 5, 5))],  # TN
    ]
    out = compute_metastasis_detection(preds, refs)
    assert (out["tp"], out["fn"], out["fp"], out["tn"]) == (1, 1, 1, 1)
    assert out["sensitivity"] == 0.5 and out["specificity"] == 0.5 and out["accuracy"] == 0.5


def test_box_jaccard():
    assert box_iou((0, 0, 10, 10), (0, 5, 10, 15)) == pytest.approx(50 / 150)
    out = compute_box_jaccard([(0, 0, 10, 10), None, (0, 0, 10, 5)], [(0, 0, 10, 10)] * 3)
    assert out["min"] == 0.0 and out["max"] == 1.0 and out["mean"] == pytest.approx(0.5)


def test_keras_dice_metric_equals_global_dice():
    from tfmedseg.metrics import DiceMetric, compute_global_dice

    rng = np.random.default_rng(0)
    y = (rng.random((2, 3, 8, 8, 1)) > 0.5).astype("float32")
    prob = rng.random((2, 3, 8, 8, 1)).astype("float32")
    m = DiceMetric()
    for b in range(2):
        m.update_state(y[b], prob[b])
    assert float(m.result()) == pytest.approx(compute_global_dice(list(prob >= 0.5), list(y)), rel=1e-6)
    # multi-class, sparse labels
    lab = rng.integers(0, 3, (2, 8, 8, 1))
    logits = rng.normal(size=(2, 8, 8, 3)).astype("float32")
    m2 = DiceMetric(class_id=2)
    m2.update_state(lab, logits)
    expect = compute_global_dice([logits.argmax(-1) == 2], [lab[..., 0] == 2])
    assert float(m2.result()) == pytest.approx(expect, rel=1e-6)
    m3 = DiceMetric.from_config(m2.get_config())
    assert m3.class_id == 2


def test_patient_metastasis_counts_a_patient_once():
    from tfmedseg.metrics.instances import compute_patient_metastasis

    o = lambda tp=0, fp=0, fn=0, tn=0: {"tp": tp, "fp": fp, "fn": fn, "tn": tn}  # noqa: E731
    per_image = [("a", o(tp=1)), ("a", o(fn=1)),   # metastatic, found on one view -> TP
                 ("b", o(fn=1)), ("b", o(fn=1)),   # metastatic, missed -> FN
                 ("c", o(fp=1)), ("c", o(tn=1)),   # not metastatic, a false alarm -> FP
                 ("d", o(tn=1)), ("d", o(tn=1))]   # TN
    m = compute_patient_metastasis(per_image)
    assert (m["tp"], m["fp"], m["fn"], m["tn"]) == (1, 1, 1, 1)
    assert m["sensitivity"] == 0.5 and m["specificity"] == 0.5 and m["accuracy"] == 0.5


def test_confusion_scores_and_image_row():
    from tfmedseg.metrics.instances import compute_confusion_scores, compute_image_scores

    conf = np.array([[3, 1], [0, 4]])
    out = compute_confusion_scores(conf, ("malignant", "post_trauma"))
    assert out["malignant"]["accuracy"] == pytest.approx(7 / 8) and out["malignant"]["specificity"] == 1.0
    assert out["post_trauma"]["specificity"] == pytest.approx(3 / 4)
    assert np.isnan(compute_confusion_scores(np.zeros((2, 2)), ("a", "b"))["a"]["accuracy"])
    ref = _inst("malignant", (0, 0, 4, 4))
    pred = _inst("malignant", (0, 0, 4, 4), 0.9)
    row = compute_image_scores([pred], [ref], (0, 0, 10, 10), (0, 0, 10, 5), classes=LESION_CLASSES)
    assert row["chest_jaccard"] == pytest.approx(0.5) and (row["tp"], row["fp"], row["fn"]) == (1, 0, 0)
    assert row["metastasis_outcome"] == "tp" and row["metastasis_pred"] == 1 and row["tp_malignant"] == 1
    empty = compute_image_scores([], [ref], None, (0, 0, 10, 5), classes=LESION_CLASSES)
    assert empty["chest_jaccard"] == 0.0 and empty["metastasis_outcome"] == "fn"
