"""SIGTERM / Ctrl-C during training and the history after a resume: one row per epoch, nothing half-written."""

from __future__ import annotations

import json
import os
import signal

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfmedseg.command import stop_exit_code
from tfmedseg.training import TrainConfig, Trainer
from tfmedseg.training.callbacks import trim_history
from tfmedseg.training.trainer import sigterm_as_keyboard_interrupt


def _build():
    inp = keras.Input((8, 8, 1))
    return keras.Model(inp, keras.layers.Conv2D(1, 3, padding="same")(inp))


def _data():
    x = np.random.default_rng(0).normal(size=(8, 8, 8, 1)).astype("float32")
    return tf.data.Dataset.from_tensor_slices((x, (x > 0).astype("float32"))).batch(4).repeat()


def _fit(out, epochs, callbacks=()):
    cfg = TrainConfig(loss="bce_with_logits", epochs=epochs, steps_per_epoch=2, output_dir=str(out), tensorboard=False,
                      seed=1, verbose=0, learning_rate=1e-2)
    return Trainer(cfg, _build, callbacks=list(callbacks)).fit(_data())


def _epochs(out):
    return [line.split(",")[0] for line in (out / "history.csv").read_text().splitlines()[1:]]


def _partial_files(out):
    return [p for p in out.rglob("*") if "tfmedseg-partial" in p.name or p.name.endswith(".tmp")]


def test_trim_history_keeps_rows_before_the_resumed_epoch(tmp_path):
    path = tmp_path / "history.csv"
    assert trim_history(path, 2) == 0  # no file yet
    path.write_text("epoch,loss\n0,0.9\n1,0.8\n2,0.7\n3,0.6\n4,0.")  # last line cut by a kill
    assert trim_history(path, 2) == 3
    assert path.read_text() == "epoch,loss\n0,0.9\n1,0.8\n"
    assert trim_history(path, 2) == 0 and path.read_text() == "epoch,loss\n0,0.9\n1,0.8\n"
    assert trim_history(path, 0) == 3 and path.read_text() == ""  # training from scratch: a new header follows
    assert sorted(p.name for p in tmp_path.iterdir()) == ["history.csv"]


def test_resume_from_an_earlier_epoch_replaces_the_rows_of_the_lost_epochs(tmp_path):
    """A row logged after the last checkpoint (a run stopped between the two) is redone, not repeated."""
    out = tmp_path / "run"
    _fit(out, 2)
    header = (out / "history.csv").read_text().splitlines()[0]
    with open(out / "history.csv", "a") as f:  # epoch 2 logged, its checkpoint never written
        f.write("2," + ",".join(["12345.5"] * (len(header.split(",")) - 1)) + "\n")
    history = _fit(out, 3)
    assert len(history.history["loss"]) == 1  # resumed after epoch 2: only epoch 2 (0-based) redone
    assert _epochs(out) == ["0", "1", "2"]
    assert "12345.5" not in (out / "history.csv").read_text()


class _SigtermAt(keras.callbacks.Callback):
    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if self._epoch == self.epoch:
            os.kill(os.getpid(), signal.SIGTERM)

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch


def test_sigterm_mid_epoch_stops_cleanly_and_a_rerun_resumes(tmp_path, caplog):
    out = tmp_path / "run"
    before = signal.getsignal(signal.SIGTERM)
    with caplog.at_level("WARNING", logger="tfmedseg.training.trainer"), pytest.raises(KeyboardInterrupt, match="SIGTERM") as info:
        _fit(out, 3, [_SigtermAt(1)])
    assert f"training interrupted (stopped by SIGTERM); {out / 'backup'} holds the last completed epoch" in caplog.text
    assert stop_exit_code(info.value) == 143  # the Trainer re-raises the signal's stop: a command line exits 128 + 15
    assert signal.getsignal(signal.SIGTERM) is before  # handler restored
    assert json.loads((out / "backup" / "latest.json").read_text())["epoch"] == 1
    assert _epochs(out) == ["0"] and _partial_files(out) == []
    _fit(out, 3)
    assert _epochs(out) == ["0", "1", "2"]
    assert json.loads((out / "backup" / "latest.json").read_text())["epoch"] == 3


def test_sigterm_while_the_checkpoint_is_written_leaves_no_partial_checkpoint(tmp_path, monkeypatch):
    """Stopped inside the epoch-2 checkpoint (after its history row): the epoch-1 checkpoint stays
    current, no staging folder is left, and the rerun redoes epoch 2 with one history row."""
    import tfmedseg.io.npz as npz

    real, calls = npz.save_npz, []

    def stopping(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            os.kill(os.getpid(), signal.SIGTERM)
        return real(*args, **kwargs)

    monkeypatch.setattr(npz, "save_npz", stopping)
    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        _fit(out, 3)
    monkeypatch.setattr(npz, "save_npz", real)
    assert json.loads((out / "backup" / "latest.json").read_text())["epoch"] == 1
    assert [p.name for p in (out / "backup").iterdir() if p.is_dir()] == ["ckpt-000001"]
    assert _partial_files(out) == [] and _epochs(out) == ["0", "1"]
    _fit(out, 3)
    assert _epochs(out) == ["0", "1", "2"]


def test_sigterm_handler_is_scoped():
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(KeyboardInterrupt, match="stopped by SIGTERM"), sigterm_as_keyboard_interrupt():
        os.kill(os.getpid(), signal.SIGTERM)
    assert signal.getsignal(signal.SIGTERM) is before
