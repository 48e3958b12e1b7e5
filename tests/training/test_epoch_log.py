"""Training output when stdout is not a terminal, and validation metrics in TensorBoard per epoch."""

from __future__ import annotations

import logging
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfmedseg.metrics.keras_metrics import DiceMetric
from tfmedseg.training import TrainConfig, Trainer
from tfmedseg.training.epoch_log import fit_verbosity, format_logs


def _build():
    inp = keras.Input((8, 8, 1))
    return keras.Model(inp, keras.layers.Conv2D(1, 3, padding="same")(inp))


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(8, 8, 8, 1)).astype("float32")
    return tf.data.Dataset.from_tensor_slices((x, (x > 0).astype("float32"))).batch(4).repeat()


def _scalars(directory: Path) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {}
    for f in sorted(directory.glob("events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(str(f)):
            for v in event.summary.value:
                out.setdefault(v.tag, []).append(float(tf.make_ndarray(v.tensor)))
    return out


def test_fit_verbosity(monkeypatch):
    assert fit_verbosity(2) == 2 and fit_verbosity(0) == 0
    assert fit_verbosity("auto") == 2  # not a terminal, no logging configured: Keras' line per epoch
    logging.getLogger("tfmedseg").setLevel(logging.INFO)  # a command line configured logging
    try:
        assert fit_verbosity("auto") == 0  # our one line per epoch
        monkeypatch.setattr("sys.stdout.isatty", lambda: True, raising=False)
        assert fit_verbosity("auto") == 1
        logging.getLogger("tfmedseg").setLevel(logging.WARNING)  # -q: no bar, no lines
        assert fit_verbosity("auto") == 0
    finally:
        logging.getLogger("tfmedseg").setLevel(logging.NOTSET)
    assert format_logs({"loss": 0.41234, "learning_rate": 1e-3, "x": "skip"}) == "loss 0.4123 - learning_rate 0.001"


def test_auto_verbosity_logs_one_line_per_epoch_and_validation_metrics_reach_tensorboard(tmp_path, data, caplog, capfd):
    caplog.set_level(logging.INFO, logger="tfmedseg")  # as configure_logging does
    calls = []

    def detection_like(model):  # e.g. a detector's F1, computed outside Keras' metrics
        calls.append(1)
        return {"f1": 0.25 * len(calls)}

    cfg = TrainConfig(loss="bce_with_logits", learning_rate=0.01, epochs=3, steps_per_epoch=2, validation_steps=1,
                      output_dir=str(tmp_path / "run"), image_every_epochs=0, seed=1, strategy="default")
    trainer = Trainer(cfg, _build, metrics=lambda: [DiceMetric(from_logits=True, name="dice")], epoch_metrics=detection_like)
    history = trainer.fit(data, validation_data=data)
    out = capfd.readouterr().out
    assert "\r" not in out and "\x08" not in out  # no Keras progress bar when stdout is not a terminal
    lines = [r.getMessage() for r in caplog.records if r.name == "tfmedseg.training"]
    assert [line.split(" (")[0] for line in lines] == ["epoch 1/3", "epoch 2/3", "epoch 3/3"]
    assert all("val_dice" in line and "val_f1" in line for line in lines)
    np.testing.assert_allclose(history.history["val_f1"], [0.25, 0.5, 0.75])
    validation = _scalars(tmp_path / "run" / "logs" / "validation")
    np.testing.assert_allclose(validation["epoch_dice"], history.history["val_dice"], rtol=1e-6)
    np.testing.assert_allclose(validation["epoch_f1"], [0.25, 0.5, 0.75], rtol=1e-6)
    assert "epoch_dice" in _scalars(tmp_path / "run" / "logs" / "train")
    assert "val_f1" in (tmp_path / "run" / "history.csv").read_text().splitlines()[0]
