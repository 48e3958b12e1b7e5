"""Issue 17: SWA is a separate candidate that never replaces the selected weights; iteration timing."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfmedseg.data.geometry import SliceGeometry
from tfmedseg.data.source import CaseArrays
from tfmedseg.errors import ConfigError
from tfmedseg.training.config import TrainConfig
from tfmedseg.training.iteration_timer import IterationTimer, TimeStats, time_batches
from tfmedseg.training.stages import SegmentationStage, candidate_weights, train_stage


def _build():
    inp = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu")(inp)
    x = keras.layers.BatchNormalization()(x)
    return keras.Model(inp, keras.layers.Conv2D(1, 1)(x))


def _data(seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(16, 8, 8, 1)).astype("float32")
    return tf.data.Dataset.from_tensor_slices((x, (x > 0).astype("float32"))).batch(4).repeat()


def _weights(path):
    model = _build()
    model.load_weights(path)
    return model.get_weights()


def _same(a, b):
    return all(np.array_equal(x, y) for x, y in zip(a, b))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One tiny stage with early stopping, best weights and SWA from epoch 1 (of 4)."""
    out = tmp_path_factory.mktemp("stage")
    cfg = TrainConfig(loss="bce_with_logits", learning_rate=0.05, epochs=4, early_stopping_patience=3,
                      swa_start_epoch=1, tensorboard=False, verbose=0)
    result = train_stage("s", cfg, _build, _data(0), _data(1), output_dir=out, seed=0, steps_per_epoch=4,
                         validation_steps=2, units_per_step=4, unit="slice", select_weights="best")
    return out / "s", result



def test_candidates_load_without_optimizer_warnings(trained):
    """Best / last / SWA weights are saved without the optimizer; loading them skips it the same way
    (``model.load_weights`` printed Keras' "Skipping variable loading for optimizer" twice per stage of every run)."""
    import warnings

    _, result = trained
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with candidate_weights(result, "swa"):
            pass
    assert [str(w.message) for w in caught if "optimizer" in str(w.message)] == []

def test_swa_never_replaces_the_selected_weights(trained):
    stage_dir, result = trained
    assert result.selected == "best" and set(result.candidates) == {"best", "last", "swa"}
    best, swa = _weights(stage_dir / "best.weights.h5"), _weights(stage_dir / "swa.weights.h5")
    assert not _same(best, swa)  # the average differs from the best epoch ...
    assert _same(result.model.get_weights(), best)  # ... and the stage returns the best epoch's weights
    with candidate_weights(result, "swa") as model:
        assert _same(model.get_weights(), swa)
    assert _same(result.model.get_weights(), best)  # back after the candidate's evaluation


def test_selecting_swa_needs_swa_and_unknown_choices_fail():
    with pytest.raises(ConfigError, match="select_weights"):
        SegmentationStage(select_weights="swa")  # SWA off by default
    with pytest.raises(ConfigError, match="allowed"):
        SegmentationStage(select_weights="median")


def test_training_time_is_measured_per_iteration(trained):
    stage_dir, result = trained
    t = result.timing
    # 4 epochs x 4 steps, the first step of the run not timed
    assert t["iterations_timed"] == 15
    assert 0 < t["iteration_seconds"] < t["train_seconds"] / 15  # fit's wall time includes validation, callbacks
    assert t["iteration_seconds_per_slice"] == pytest.approx(t["iteration_seconds"] / 4)
    saved = json.loads((stage_dir / "iteration_seconds.json").read_text())
    assert saved["count"] == 15


def test_time_stats_merge_and_batches():
    a, b, both = TimeStats(), TimeStats(), TimeStats()
    for i, v in enumerate([0.1, 0.3, 0.2, 0.6, 0.5]):
        (a if i < 2 else b).add(v)
        both.add(v)
    merged = a.merge(b)
    assert merged.count == 5 and merged.mean == pytest.approx(both.mean) and merged.std == pytest.approx(both.std)
    assert merged.std == pytest.approx(np.std([0.1, 0.3, 0.2, 0.6, 0.5], ddof=1))
    calls = []
    stats = time_batches(lambda x: calls.append(1) or tf.constant(x), [np.zeros(2)] * 4)
    assert len(calls) == 4 and stats.count == 3  # the first (tracing) call is not timed
    timer = IterationTimer(skip_first=2)
    assert timer.skip_first == 2 and timer.total().count == 0


def test_prediction_timing_divides_by_batch_and_output_slices():
    """Tables 4.4/4.5: t / (b z) for 3D slabs (z = 4 output slices per sample)."""
    from tfmedseg.experiments.lits_cascade import prediction_timing
    from tfmedseg.inference.spec import ServingSpec

    geometry = SliceGeometry(rank=3, context_slices=8, output_slices=4)
    inp = keras.Input((8, 16, 16, 1))
    net = keras.Model(inp, keras.layers.Conv3D(2, 1)(keras.layers.Cropping3D(((2, 2), (0, 0), (0, 0)))(inp)))
    spec = ServingSpec(input_size=(16, 16), labels=("background", "tumour"), batch_size=2, **geometry.serving_fields())
    label = np.zeros((12, 16, 16), np.uint8)
    label[4:8, 4:12, 4:12] = 1
    timing = prediction_timing(net, spec, geometry, [CaseArrays("c", label.astype("float32"), label)], batches=4)
    assert timing["predict_batches_timed"] == 3
    assert 0 < timing["predict_batch_seconds_per_slice"] < 1.0
