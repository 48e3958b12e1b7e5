"""LiTS-style per-case rows and their pooled summary."""

from __future__ import annotations

import numpy as np
import pytest

from tfmedseg.metrics.lits import evaluate_liver_tumour_case, summarize_liver_tumour


def _case():
    ref = np.zeros((4, 20, 20), np.uint8)
    ref[:, 2:18, 2:18] = 1
    ref[1:3, 4:8, 4:8] = 2  # 32-voxel lesion
    ref[1:3, 12:14, 12:14] = 2  # 8-voxel lesion
    pred = ref.copy()
    pred[1:3, 12:14, 12:14] = 1  # misses the small lesion
    pred[:, 17, 2:18] = 0  # liver slightly under-segmented
    return pred, ref


def test_case_row_by_hand():
    pred, ref = _case()
    row = evaluate_liver_tumour_case(pred, ref, spacing=(2.0, 1.0, 1.0), case_id="c1")
    liver_ref = 4 * 16 * 16
    liver_pred = liver_ref - 4 * 16
    assert row["liver_dice"] == pytest.approx(2 * liver_pred / (liver_pred + liver_ref))
    assert row["tumour_dice"] == pytest.approx(2 * 32 / (32 + 40))
    assert row["tumour_rvd"] == pytest.approx((32 - 40) / 40)
    assert (row["lesion_tp_iou50"], row["lesion_fn_iou50"], row["lesion_fp_iou50"]) == (1, 1, 0)
    assert row["lesion_dices_small"] == [1.0, 0.0]


def test_summary_pools_voxels_and_lesions():
    pred, ref = _case()
    rows = [evaluate_liver_tumour_case(pred, ref, (1, 1, 1)), evaluate_liver_tumour_case(ref, ref, (1, 1, 1))]
    s = summarize_liver_tumour(rows)
    assert s["tumour_dice_per_case"] == pytest.approx((2 * 32 / 72 + 1.0) / 2)
    assert s["tumour_global_dice"] == pytest.approx(2 * (32 + 40) / (32 + 40 + 40 + 40))
    assert s["lesion_recall_iou50"] == pytest.approx(3 / 4)
    assert s["lesion_precision_iou50"] == pytest.approx(1.0)
    assert s["tumour_count_small"] == 4 and s["tumour_dice_small"] == pytest.approx(0.75)
    assert np.isnan(s["tumour_dice_large"])
