"""Callbacks: SWA, BatchNorm recomputation, plateau on a schedule, overlays, early stopping."""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from tfmedseg.training.callbacks import (
    PendingStop,
    ReduceLROnPlateau,
    StochasticWeightAveraging,
    overlay_panels,
    recompute_batchnorm_statistics,
)
from tfmedseg.training.schedules import ScaledSchedule, step_decay


def _dense_model(lr):
    inp = keras.Input((4,))
    model = keras.Model(inp, keras.layers.Dense(1, kernel_initializer="zeros")(inp))
    model.compile(optimizer=keras.optimizers.SGD(lr), loss="mse")
    return model


class _Record(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.weights = []

    def on_epoch_end(self, epoch, logs=None):
        self.weights.append([w.copy() for w in self.model.get_weights()])


def test_a_dropped_stop_ends_fit_at_the_next_step(capsys):
    """A Ctrl-C whose KeyboardInterrupt C code dropped (simulated: swallowed on the spot) stops ``fit``
    before its next step (PendingStop), not after the last epoch; the command line says so, exit 130."""
    import signal

    from stops import drop_a_stop

    from tfmedseg.command import report_user_errors

    steps = []

    class DropStop(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            steps.append(batch)
            if batch == 1:
                drop_a_stop(signal.SIGINT)

    model = _dense_model(0.01)
    x, y = np.zeros((16, 4), np.float32), np.zeros((16, 1), np.float32)
    outer = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        fit = lambda: model.fit(x, y, batch_size=2, epochs=3, verbose=0, callbacks=[PendingStop(), DropStop()])  # noqa: E731
        assert report_user_errors(fit) == 130
    finally:
        signal.signal(signal.SIGINT, outer)
    assert steps == [0, 1]
    assert capsys.readouterr().err.startswith("interrupted (stopped by Ctrl-C): ")


def test_swa_is_mean_of_epoch_weights(rng):
    x = rng.normal(size=(8, 4)).astype("float32")
    y = x.sum(1, keepdims=True).astype("float32")
    model = _dense_model(0.05)
    record = _Record()
    swa = StochasticWeightAveraging(start_epoch=1, verbose=0)
    model.fit(x, y, batch_size=4, epochs=4, verbose=0, shuffle=False, callbacks=[record, swa])
    expected = [np.mean([w[i] for w in record.weights[1:]], axis=0) for i in range(2)]
    for got, ref in zip(model.get_weights(), expected):
        np.testing.assert_allclose(got, ref, rtol=1e-6)
    assert swa.n_averaged == 3 and not np.allclose(record.weights[-1][0], expected[0])


def test_batchnorm_statistics_recomputed_exactly(rng):
    inp = keras.Input((3,))
    model = keras.Model(inp, keras.layers.BatchNormalization(momentum=0.9)(inp))
    batches = [rng.normal(loc=i, scale=1 + i, size=(5, 3)).astype("float32") for i in range(3)]
    used = recompute_batchnorm_statistics(model, tf.data.Dataset.from_tensor_slices(np.stack(batches)).repeat(), steps=3)
    bn = model.layers[1]
    assert used == 3 and bn.momentum == 0.9
    np.testing.assert_allclose(bn.moving_mean.numpy(), np.mean([b.mean(0) for b in batches], 0), rtol=1e-5)
    np.testing.assert_allclose(bn.moving_variance.numpy(), np.mean([b.var(0) for b in batches], 0), rtol=1e-4)


def test_plateau_scales_a_schedule():
    x = np.ones((4, 4), "float32")
    y = np.ones((4, 1), "float32")
    inp = keras.Input((4,))
    model = keras.Model(inp, keras.layers.Dense(1)(inp))
    schedule = ScaledSchedule(step_decay(0.1, 0.5, 100))
    model.compile(optimizer=keras.optimizers.SGD(schedule), loss="mse")
    plateau = ReduceLROnPlateau(monitor="loss", factor=0.5, patience=1, min_delta=1e3)
    history = model.fit(x, y, epochs=3, verbose=0, callbacks=[plateau])
    assert float(schedule.factor.numpy()) == 0.25  # reduced after epochs 2 and 3
    np.testing.assert_allclose(history.history["learning_rate"], [0.1, 0.1, 0.05], rtol=1e-6)
    np.testing.assert_allclose(float(model.optimizer.learning_rate), 0.025, rtol=1e-6)
    state = plateau.get_resume_state()
    schedule.factor.assign(1.0)
    plateau.set_resume_state(state)
    assert float(schedule.factor.numpy()) == 0.25


def test_plateau_on_a_float_rate_logs_instead_of_printing(capsys, caplog):
    x = np.ones((4, 4), "float32")
    inp = keras.Input((4,))
    model = keras.Model(inp, keras.layers.Dense(1)(inp))
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    plateau = ReduceLROnPlateau(monitor="loss", factor=0.5, patience=1, min_delta=1e3, verbose=1)
    with caplog.at_level("INFO", logger="tfmedseg.training.callbacks"):
        model.fit(x, x[:, :1], epochs=2, verbose=0, callbacks=[plateau])
    np.testing.assert_allclose(float(model.optimizer.learning_rate), 0.05, rtol=1e-6)  # Keras' reduction, as before
    assert "epoch 2: ReduceLROnPlateau reducing the learning rate to 0.05" in caplog.text
    assert "ReduceLROnPlateau" not in capsys.readouterr().out


def test_overlay_panels_2d_and_3d():
    image = np.zeros((1, 4, 4, 1), "float32")
    image[0, 0, 0] = 1.0  # max -> white after min-max scaling
    label = np.zeros((1, 4, 4, 1), "float32")
    label[0, 0, 0] = 1
    logits = np.full((1, 4, 4, 1), -5.0, "float32")
    logits[0, 3, 3] = 5.0
    panels = overlay_panels(image, label, logits)
    assert panels.shape == (1, 4, 12, 3) and panels.dtype == np.uint8
    np.testing.assert_array_equal(panels[0, 0, 0], [255, 255, 255])  # input panel
    np.testing.assert_array_equal(panels[0, 0, 4], [255, 140, 140])  # label: 0.55 * 255 + 0.45 * red
    np.testing.assert_array_equal(panels[0, 3, 11], [115, 0, 0])  # prediction on black: 0.45 * 255
    np.testing.assert_array_equal(panels[0, 0, 8], [255, 255, 255])  # not predicted there
    vol = np.random.default_rng(0).random((2, 9, 4, 4, 1)).astype("float32")
    lab3 = np.zeros((2, 9, 4, 4), "int64")
    lab3[:, 2] = 2
    probs = np.zeros((2, 9, 4, 4, 3), "float32")
    probs[..., 0] = 1
    out = overlay_panels(vol, lab3, probs, num_slices=3)
    assert out.shape == (6, 4, 12, 3)
    # slices 2, 4, 6 are chosen: the first one of each sample carries class 2 (green tint)
    assert out[0, :, 4:8, 1].min() >= 0.45 * 255 and np.array_equal(out[1, :, 4:8], out[1, :, :4])


def test_overlay_panels_3d_slab_shows_the_labelled_middle_slices():
    vol = np.zeros((1, 8, 4, 4, 1), "float32")
    vol[0, :, 0, 0, 0] = np.arange(8)  # slice index written into the image
    vol[0, :, 1, 1, 0] = 10.0  # keep the min-max range fixed
    lab = np.zeros((1, 4, 4, 4, 1), "int64")  # labels of slices 2..5
    probs = np.zeros((1, 4, 4, 4, 2), "float32")
    probs[..., 0] = 1
    out = overlay_panels(vol, lab, probs, num_slices=2)
    assert out.shape == (2, 4, 12, 3)
    shown = np.round(out[:, 0, 0, 0] / 255.0 * 10).astype(int)
    np.testing.assert_array_equal(shown, [3, 4])  # the inner two of the labelled slices 2..5
