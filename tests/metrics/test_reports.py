"""The experiment report: per-case CSV, seed-layout summary, overlay montage."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest
from medpy.metric import binary as mp
from PIL import Image

from tfmedseg.errors import ConfigError, InvalidInputError
from tfmedseg.reports import (
    LITS_TUMOUR_LAYOUT,
    Column,
    OverlayItem,
    evaluate_segmentation_case,
    summarize,
    write_report,
)


def _case(shift):
    y = np.zeros((6, 16, 16), np.uint8)
    y[1:5, 2:14, 2:14] = 1
    y[2:4, 5:9, 5:9] = 2
    p = y.copy()
    p[p == 2] = 1
    p[2:4, 5 + shift : 9 + shift, 5:9] = 2
    return p, y


def test_evaluate_case_row_matches_medpy():
    p, y = _case(1)
    sp = (3.0, 0.8, 0.8)
    row = evaluate_segmentation_case(p, y, spacing=sp)
    pt, yt = p == 2, y == 2
    assert row["tumour_dice"] == pytest.approx(mp.dc(pt, yt))
    assert row["tumour_assd"] == pytest.approx(mp.assd(pt, yt, voxelspacing=sp))
    assert row["tumour_hd95"] == pytest.approx(mp.hd95(pt, yt, voxelspacing=sp))
    assert row["liver_dice"] == 1.0 and row["liver_mssd"] == 0.0
    assert row["tumour_dice_small"] == pytest.approx(mp.dc(pt, yt))  # one 32-voxel lesion
    with pytest.raises(InvalidInputError, match="spacing"):
        evaluate_segmentation_case(p, y, spacing=None)


def test_write_report_files(tmp_path):
    rows = []
    for model, shift in (("A", 0), ("A", 1), ("B", 2)):
        p, y = _case(shift)
        rows.append({"model": model, "case": f"c{shift}", **evaluate_segmentation_case(p, y, spacing=1.0)})
    e = np.zeros((6, 16, 16), np.uint8)
    rows.append({"model": "B", "case": "empty", **evaluate_segmentation_case(e, _case(0)[1], spacing=1.0)})
    ct = np.random.default_rng(0).normal(size=(6, 16, 16))
    p, y = _case(1)
    paths = write_report(tmp_path / "rep", rows, layout=LITS_TUMOUR_LAYOUT, group_by="model", title="Table 4.8",
                         overlays=[OverlayItem("c1", ct, y >= 1, y == 2), OverlayItem("c1-2d", ct[2], p[2] >= 1, p[2] == 2)])
    with open(paths["per_case"]) as f:
        read = list(csv.DictReader(f))
    assert len(read) == 4 and read[0]["model"] == "A" and float(read[1]["tumour_dice"]) == pytest.approx(0.75)
    text = paths["summary"].read_text()
    assert text.splitlines()[2] == "| Model | Dice/case | Global Dice | VOE | RVD | ASSD |"
    # model A: Dice 1.0 and 0.75 -> 0.875 per case; the global Dice pools the voxel counts
    table, n_inf = summarize(rows, LITS_TUMOUR_LAYOUT, "model")
    assert table[0]["Dice/case"] == pytest.approx(0.875)
    inter = rows[0]["tumour_intersection"] + rows[1]["tumour_intersection"]
    tot = sum(rows[i]["tumour_pred"] + rows[i]["tumour_ref"] for i in (0, 1))
    assert table[0]["Global Dice"] == pytest.approx(2 * inter / tot)
    assert n_inf == {"ASSD": 1}
    assert "| A | 0.875 |" in text and "Infinite values" in text
    img = np.asarray(Image.open(paths["montage"]))
    assert img.shape == (256, 512, 3)
    # lesion red and liver green pixels are present in the first tile
    tile = img[:, :256].astype(int)
    assert ((tile[..., 0] - tile[..., 1]) > 40).any() and ((tile[..., 1] - tile[..., 0]) > 40).any()


def test_layout_errors():
    with pytest.raises(ConfigError, match="reduce"):
        summarize([{"a": 1.0}], [Column("A", "a", "mode")])
    with pytest.raises(ConfigError, match="tumour_intersection"):
        summarize([{"a": 1.0}], [Column("G", "tumour", "global_dice")])
    assert math.isnan(summarize([{"a": math.inf}], [Column("A", "a")])[0][0]["A"])


def test_read_history_counts_an_epoch_logged_again_after_a_resume_once(tmp_path):
    """A run killed after logging epoch 1 but before its checkpoint resumes at epoch 1 and logs it again."""
    from tfmedseg.reports.instances import read_history

    (tmp_path / "history.csv").write_text("epoch,loss,note\n0,3.0,a\n1,2.0,b\n1,1.5,c\n2,1.0,d\n")
    history = read_history(tmp_path)
    assert history["epoch"] == [0.0, 1.0, 2.0] and history["loss"] == [3.0, 1.5, 1.0]
    assert read_history(tmp_path / "missing") == {}
