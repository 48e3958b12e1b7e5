"""Post-processing cases and decision fusion (weighted majority, not OR)."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from tfmedseg.errors import InvalidInputError
from tfmedseg.inference import (
    WeightedVote,
    build_decision_fusion,
    combine_labels,
    decision_fusion_predict,
    drop_low_confidence_components,
    fill_holes,
    filter_liver_slices,
    fuse_majority_vote,
    fuse_mean_probability,
    largest_connected_component,
    normalized_weights,
    remove_small_components,
    restrict_to_mask,
    train_decision_fusion,
)
from tfmedseg.metrics import compute_dice


def test_largest_component_and_small_components():
    m = np.zeros((6, 10, 10), bool)
    m[0:3, 0:3, 0:3] = True  # 27
    m[4:6, 6:10, 6:10] = True  # 32
    m[5, 0, 9] = True  # 1
    lcc = largest_connected_component(m)
    assert lcc.sum() == 32 and lcc[4:6, 6:10, 6:10].all()
    assert remove_small_components(m, 2).sum() == 59
    assert remove_small_components(m, 28).sum() == 32
    assert not largest_connected_component(np.zeros((3, 3, 3))).any()


def test_seed003_liver_slice_filter():
    sl = np.zeros((400, 400), bool)
    sl[100:200, 100:200] = True  # main: 10000 px, centroid (149.5, 149.5)
    sl[100:140, 220:260] = True  # 1600 px >= 1250, near -> kept
    sl[300:330, 100:130] = True  # 900 px < 10000/8 -> removed
    sl[380:400, 370:400] = True  # 600 px, far (> 200 px) -> removed
    out = filter_liver_slices(sl)
    assert out.sum() == 11600
    # a large region far away is removed by the distance rule alone
    sl2 = np.zeros((400, 400), bool)
    sl2[0:60, 0:60] = True  # main 3600
    sl2[340:390, 340:390] = True  # 2500 >= 450 but centroid ~ 480 px away
    assert filter_liver_slices(sl2).sum() == 3600
    assert filter_liver_slices(sl2, max_distance_px=600).sum() == 6100
    vol = np.stack([sl, sl2])
    assert filter_liver_slices(vol).sum() == 11600 + 3600


def test_drop_low_confidence_tumours_and_restriction():
    prob = np.zeros((1, 10, 10), np.float32)
    prob[0, 1:3, 1:3] = 0.6  # component peak 0.6
    prob[0, 6:8, 6:8] = 0.55
    prob[0, 7, 7] = 0.95  # peak 0.95
    mask = prob >= 0.5
    kept = drop_low_confidence_components(mask, prob, threshold=0.9)
    assert kept.sum() == 4 and kept[0, 7, 7]
    liver = np.zeros_like(mask)
    liver[0, :, 5:] = True
    assert restrict_to_mask(mask, liver).sum() == 4
    lab = combine_labels(liver, restrict_to_mask(mask, liver))
    assert lab.dtype == np.uint8 and (lab == 2).sum() == 4 and (lab == 1).sum() == 46
    bad = prob.copy()
    bad[0, 0, 0] = np.nan
    with pytest.raises(InvalidInputError, match="probability: contains 1 NaN"):
        drop_low_confidence_components(mask, bad, 0.5)
    with pytest.raises(InvalidInputError, match="probability: must have the same shape"):
        drop_low_confidence_components(mask, prob[0], 0.5)
    with pytest.raises(InvalidInputError, match="region"):
        restrict_to_mask(mask, liver[0])


def test_fill_holes():
    m = np.zeros((3, 7, 7), bool)
    m[:, 1:6, 1:6] = True
    m[:, 3, 3] = False
    assert fill_holes(m, per_slice=True).sum() == 75
    assert fill_holes(m).sum() == 72  # in 3D the tunnel reaches the first and last slice: open
    assert fill_holes(m[1]).sum() == 25


@pytest.fixture(scope="module")
def fusion_model():
    return build_decision_fusion(4)


def test_one_of_four_is_not_enough_two_are(fusion_model):
    votes = np.zeros((5, 1, 1, 4), np.float32)
    for k in range(5):
        votes[k, 0, 0, :k] = 1.0  # k models say foreground
    out = decision_fusion_predict(fusion_model, votes)[:, 0, 0]
    np.testing.assert_array_equal(out, [False, False, True, True, True])
    np.testing.assert_allclose(normalized_weights(fusion_model), 0.25)
    # the seed's literal formula is a logical OR
    literal = build_decision_fusion(4, formulation="literal")
    np.testing.assert_array_equal(decision_fusion_predict(literal, votes)[:, 0, 0], [False, True, True, True, True])


def test_weighted_majority_follows_the_weights():
    model = build_decision_fusion(3)
    model.get_layer("vote").kernel.assign(np.array([[3.0], [1.0], [1.0]], np.float32))
    votes = np.array([[[[1, 0, 0]]], [[[0, 1, 1]]]], np.float32)
    # model 0 alone has 60 % of the weight; models 1+2 together only 40 %
    np.testing.assert_array_equal(decision_fusion_predict(model, votes)[:, 0, 0], [True, False])
    cfg = model.get_layer("vote").get_config()
    assert WeightedVote.from_config(cfg).formulation == "majority"


def test_training_upweights_the_reliable_model(fusion_model):
    rng = np.random.default_rng(0)
    truth = rng.random((32, 8, 8)) > 0.5
    votes = np.stack([truth ^ (rng.random(truth.shape) < e) for e in (0.02, 0.3, 0.3, 0.3)], -1).astype(np.float32)
    model = keras.models.clone_model(fusion_model)
    model.set_weights(fusion_model.get_weights())
    hist = train_decision_fusion(model, votes, truth, epochs=5, batch_size=16)
    assert hist["loss"][-1] < hist["loss"][0]
    w = normalized_weights(model)
    assert np.all(w[0] > 2 * w[1:]), w
    fused = decision_fusion_predict(model, votes)
    noisy_best = max(compute_dice(votes[..., k], truth) for k in range(1, 4))
    assert compute_dice(fused, truth) > noisy_best + 0.2
    assert compute_dice(fused, truth) > compute_dice(fuse_majority_vote(votes), truth)


def test_mean_probability_and_majority_vote():
    probs = np.array([[0.9, 0.2, 0.3, 0.4], [0.6, 0.6, 0.4, 0.5]], np.float32)
    np.testing.assert_array_equal(fuse_mean_probability(probs), [False, True])
    masks = np.array([[1, 0, 0, 0], [1, 1, 0, 0], [1, 1, 1, 0]])
    np.testing.assert_array_equal(fuse_majority_vote(masks), [False, True, True])
    np.testing.assert_array_equal(fuse_majority_vote(masks, min_votes=3), [False, False, True])
    with pytest.raises(InvalidInputError, match="probabilities: contains"):
        fuse_mean_probability(np.array([np.nan, 0.5]))


def test_a_stop_during_fusion_training_logs_one_line_and_propagates(fusion_model, monkeypatch, caplog):
    """SIGTERM inside the fusion model's ``fit`` takes the Trainer's path (``command.interruptible``): a
    ``KeyboardInterrupt`` (exit 143 at a command line) after one warning, the previous handler back."""
    import os
    import signal

    from tfmedseg.command import stop_exit_code

    class SigtermLoss(keras.losses.BinaryCrossentropy):
        def call(self, y_true, y_pred):
            os.kill(os.getpid(), signal.SIGTERM)  # while fit traces its training step
            return super().call(y_true, y_pred)

    def unhandled(signum, frame):  # without the fusion's handler: fail this test, not the whole run
        raise RuntimeError("SIGTERM reached the previous handler")

    monkeypatch.setattr(keras.losses, "BinaryCrossentropy", SigtermLoss)
    model = keras.models.clone_model(fusion_model)
    votes = np.ones((4, 2, 2, 4), np.float32)
    before = signal.signal(signal.SIGTERM, unhandled)
    try:
        with caplog.at_level("WARNING", logger="tfmedseg.inference.fusion"), pytest.raises(KeyboardInterrupt) as info:
            train_decision_fusion(model, votes, votes[..., 0], epochs=1)
        assert signal.getsignal(signal.SIGTERM) is unhandled
    finally:
        signal.signal(signal.SIGTERM, before)
    assert stop_exit_code(info.value) == 143
    assert [r.getMessage() for r in caplog.records] == [
        "fusion-weight training interrupted (stopped by SIGTERM); nothing of it was written; a rerun fits the weights again"]
