"""The lesion list: components, volumes, largest diameter (exact and through the convex hull), extent."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.distance import pdist

from tfmedseg.metrics.lesion_list import largest_diameter_mm, lesion_list


def test_components_sorted_by_size_with_volume_diameter_and_slices():
    mask = np.zeros((5, 10, 10), bool)
    mask[1:4, 2:5, 2:4] = True  # 18 voxels
    mask[4, 8, 8] = True  # corner-touching nothing: its own lesion
    mask[0, 8:10, 0] = True
    records = lesion_list(mask, (2.0, 0.5, 0.5))
    assert [r["voxels"] for r in records] == [18, 2, 1] and [r["id"] for r in records] == [1, 2, 3]
    big = records[0]
    assert big["volume_ml"] == pytest.approx(18 * 0.5 / 1000)
    assert big["largest_diameter_mm"] == pytest.approx(np.sqrt(4.0**2 + 1.0**2 + 0.5**2))
    assert big["slices"] == [1, 3] and big["bbox"] == [[1, 4], [2, 5], [2, 4]]
    assert mask[tuple(big["center"])]
    assert records[2]["largest_diameter_mm"] == 0.0 and lesion_list(np.zeros((2, 2, 2)), 1.0) == []


def test_hull_reduction_gives_the_exact_all_pairs_maximum(rng):
    points = rng.normal(size=(5000, 3)) * (3.0, 1.0, 2.0)
    assert largest_diameter_mm(points) == pytest.approx(pdist(points).max())
    flat = np.c_[np.zeros(4000), rng.normal(size=(4000, 2))]  # one slice: a degenerate hull
    assert largest_diameter_mm(flat) == pytest.approx(pdist(flat).max())
