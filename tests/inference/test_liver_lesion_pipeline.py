"""Seed 003: fusion weights learned on hand-built votes, the two-stage pipeline, error overlap."""

from __future__ import annotations

import numpy as np
import pytest

from tfmedseg.inference.fusion import (
    build_decision_fusion,
    decision_fusion_predict,
    normalized_weights,
    train_decision_fusion,
)
from tfmedseg.inference.liver_lesion import PipelineSettings, segment_liver_lesions
from tfmedseg.metrics.ensemble import (
    compute_error_overlap,
    format_ensemble_table,
    summarize_ensemble,
)


def _votes(rng, n=64, size=8):
    """Reference masks and four voters: one 97 % right, one 85 %, two at 65 %."""
    y = rng.random((n, size, size)) < 0.4
    voters = []
    for accuracy in (0.97, 0.85, 0.65, 0.65):
        flip = rng.random(y.shape) > accuracy
        voters.append(y ^ flip)
    return np.stack(voters, axis=-1).astype(np.float32), y


def test_learned_fusion_is_the_weighted_majority_of_its_weights():
    rng = np.random.default_rng(0)
    votes, y = _votes(rng)
    model = build_decision_fusion(4, initial_weight=0.25)
    train_decision_fusion(model, votes, y, epochs=5, learning_rate=10.0, momentum=0.9, batch_size=16, seed=0)
    w = normalized_weights(model)
    assert np.argmax(w) == 0 and w[0] > w[2] and w[0] > w[3]  # the best voter weighs most
    fused = decision_fusion_predict(model, votes)
    by_hand = (votes * w).sum(axis=-1) >= 0.5  # weighted majority of the normalised weights
    agree = (fused == by_hand).mean()
    assert agree > 0.999  # exact up to float ties
    accuracy = lambda m: (m == y).mean()
    assert accuracy(fused) >= max(accuracy(votes[..., i] > 0.5) for i in range(4)) - 0.005
    # equal initial weights: one vote of four is background, three are foreground
    equal = build_decision_fusion(4)
    single = np.zeros((1, 1, 1, 4), np.float32)
    single[..., 0] = 1
    triple = np.ones((1, 1, 1, 4), np.float32)
    triple[..., 3] = 0
    assert not decision_fusion_predict(equal, single).any() and decision_fusion_predict(equal, triple).all()


def _threshold(levels):
    return lambda x: np.concatenate([20.0 * (x - level) for level in levels], axis=-1)


def test_two_stage_pipeline_finds_the_liver_and_the_lesion_on_the_source_grid():
    hu = np.full((6, 48, 48), -500.0, np.float32)
    hu[1:5, 8:40, 8:40] = 100.0  # "liver": HU 100 -> 0.4 in [-1, 1]
    hu[2:4, 20:28, 20:28] = 220.0  # "lesion": bright inside the liver
    equal = _threshold([0.0])
    fuse = lambda v: (v * 2 - 1).sum(axis=-1, keepdims=True)
    settings = PipelineSettings(size=32, lesion_min_size=2, clahe=False)
    result = segment_liver_lesions(hu, _threshold([0.0, 0.1]), _threshold([0.6, 0.7]), fuse, fuse, settings, keep_models=True)
    assert result.liver.shape == hu.shape
    assert result.liver[1:5, 10:38, 10:38].all() and not result.liver[0].any() and not result.liver[:, :6].any()
    assert result.lesion[2:4, 22:26, 22:26].all() and not result.lesion[1].any() and not result.lesion[:, :, :16].any()
    assert set(np.unique(result.labels)) == {0, 1, 2}
    assert len(result.liver_models_raw) == 2 and len(result.lesion_models) == 2
    empty = segment_liver_lesions(np.full((3, 16, 16), -900.0), equal, equal, fuse, fuse, settings)
    assert not empty.liver.any() and not empty.lesion.any()


def test_error_overlap_and_tables():
    y = np.array([1, 1, 0, 0, 1])
    a, b = np.array([1, 0, 0, 0, 1]), np.array([1, 0, 1, 0, 1])  # errors {1} and {1, 2}
    m = compute_error_overlap([[a, b]], [y])
    assert m[0, 1] == pytest.approx(2 * 1 / (1 + 2)) and m[0, 0] == 1.0
    rows = [{"liver_a_raw": 0.9, "liver_a_post": 0.95, "liver_fusion": 0.96}, {"liver_a_raw": 0.8, "liver_a_post": 0.85, "liver_fusion": 0.9}]
    means = summarize_ensemble(rows, ["liver_a_raw", "liver_a_post", "liver_fusion"])
    assert means["liver_a_post"] == pytest.approx(0.9)
    text = format_ensemble_table(means, ["a"], [("raw", "liver_{name}_raw"), ("post", "liver_{name}_post")], "liver_fusion", "T")
    assert "| post | 90.00 | 93.00 |" in text and "| raw | 85.00 | - |" in text
