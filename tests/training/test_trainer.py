"""Trainer: strategies, outputs, TensorBoard events, early stopping, config errors, SIGKILL resume, multi-worker."""

from __future__ import annotations

import importlib.util
import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
import yaml
from PIL import Image

import tfmedseg
from tfmedseg.errors import ConfigError
from tfmedseg.training import TrainConfig, Trainer

SCRIPT = Path(__file__).with_name("train_script.py")
REPO = Path(__file__).resolve().parents[2]


def _build():
    inp = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu")(inp)
    return keras.Model(inp, keras.layers.Conv2D(1, 1)(x))


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(7)
    x = rng.normal(size=(16, 8, 8, 1)).astype("float32")
    y = (x > 0.2).astype("float32")
    return x, y


def _ds(x, y, batch=8):
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(batch).repeat()


def _cfg(tmp_path, name, **kw):
    base = dict(
        loss="dice",
        loss_kwargs={"activation": "sigmoid"},
        learning_rate=0.05,
        epochs=2,
        steps_per_epoch=2,
        output_dir=str(tmp_path / name),
        tensorboard=False,
        seed=11,
        verbose=0,
    )
    base.update(kw)
    return TrainConfig(**base)


def _events(directory: Path):
    out = {}
    for f in sorted(directory.glob("events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(str(f)):
            for v in event.summary.value:
                out.setdefault(v.tag, []).append((event.step, v))
    return out


def test_mirrored_two_cpus_matches_one_device_and_writes_events(tmp_path, data, caplog):
    caplog.set_level("INFO", logger="tfmedseg")
    x, y = data
    one = Trainer(_cfg(tmp_path, "one", strategy="default"), _build)
    h1 = one.fit(_ds(x, y))
    cfg2 = _cfg(tmp_path, "two", strategy="cpu:2", tensorboard=True, image_every_epochs=1, image_max_outputs=2, clipnorm=1.0)
    two = Trainer(cfg2, _build)
    h2 = two.fit(_ds(x, y), validation_data=_ds(x, y).take(1))
    assert two.strategy.num_replicas_in_sync == 2
    assert two.optimizer.clipnorm == 1.0
    # Same seed, same global batch of 8 (4 per replica): the same losses as one device.
    np.testing.assert_allclose(h2.history["loss"], h1.history["loss"], rtol=1e-4)
    assert all(0.0 <= v <= 1.0 for v in h2.history["loss"] + h2.history["val_loss"])
    assert h1.history["loss"][1] < h1.history["loss"][0]
    for a, b in zip(one.model.get_weights(), two.model.get_weights()):
        np.testing.assert_allclose(a, b, atol=1e-5)

    out = Path(cfg2.output_dir)
    assert f"TensorBoard logs: {out / 'logs'}" in caplog.text
    epoch_lines = [r.getMessage() for r in caplog.records if r.name == "tfmedseg.training"]
    assert [line.split(" (")[0] for line in epoch_lines] == ["epoch 1/2", "epoch 2/2"] * 2  # verbose=0: log lines
    assert "val_loss" in epoch_lines[-1] and "\r" not in caplog.text
    assert yaml.safe_load((out / "config.yaml").read_text())["strategy"] == "cpu:2"
    info = json.loads((out / "version.json").read_text())
    assert info["tfmedseg"] == tfmedseg.__version__ and info["num_replicas"] == 2
    assert (out / "best.weights.h5").exists() and (out / "last.weights.h5").exists()

    train = _events(out / "logs" / "train")
    np.testing.assert_allclose([tf.make_ndarray(v.tensor) for _, v in train["epoch_loss"]], h2.history["loss"], rtol=1e-5)
    np.testing.assert_allclose([tf.make_ndarray(v.tensor) for _, v in train["epoch_learning_rate"]], [0.05, 0.05], rtol=1e-6)
    assert "epoch_loss" in _events(out / "logs" / "validation")
    images = _events(out / "logs" / "images")["overlays"]
    assert [step for step, _ in images] == [1, 2]
    encoded = tf.make_ndarray(images[-1][1].tensor)  # [width, height, png, png]
    assert encoded[:2].tolist() == [b"24", b"8"] and len(encoded) == 4
    png = np.asarray(Image.open(io.BytesIO(encoded[2])))
    assert png.shape == (8, 24, 3)
    label_panel = png[:, 8:16]
    mask = y[0, ..., 0] > 0
    assert (label_panel[mask, 0] >= label_panel[mask, 1]).all() and mask.any()  # red tint on the label


def test_early_stopping_restores_best_weights(tmp_path, data, capsys, caplog):
    x, y = data
    # Validation labels are the complement of the training labels: validation loss rises as
    # training improves, so epoch 1 is the best and training stops after patience 1.
    cfg = _cfg(tmp_path, "es", epochs=6, early_stopping_patience=1, loss="bce_with_logits", loss_kwargs={})
    trainer = Trainer(cfg, _build)
    with caplog.at_level("INFO", logger="tfmedseg.training.callbacks"):
        history = trainer.fit(_ds(x, y), validation_data=_ds(x, 1.0 - y).take(2))
    val = history.history["val_loss"]
    assert len(val) == 2 and val[1] > val[0]
    # said through logging (-q silences it), not printed by Keras among the log lines
    assert "epoch 2: early stopping" in caplog.text and "restored the weights of the best epoch (1, val_loss" in caplog.text
    assert "Restoring model weights" not in capsys.readouterr().out
    assert json.loads((Path(cfg.output_dir) / "best.json").read_text())["epoch"] == 1
    best = _build()
    best.load_weights(Path(cfg.output_dir) / "best.weights.h5")
    for a, b in zip(trainer.model.get_weights(), best.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_mixed_bfloat16_smoke(tmp_path, data):
    x, y = data
    from tfmedseg.training import bias_gradient

    bias_gradient._uninstall()
    trainer = Trainer(_cfg(tmp_path, "bf16", strategy="default", epochs=1, steps_per_epoch=1, mixed_precision="mixed_bfloat16"), _build)
    assert trainer.model.layers[1].compute_dtype == "bfloat16"
    assert bias_gradient.float32_bias_gradients_installed()  # bias gradients summed in float32 (TF's sums bf16)
    assert bias_gradient.float32_kernel_gradients_installed()  # and the convolutions' kernel gradients
    assert keras.config.dtype_policy().name == "float32"  # the global policy is restored
    loss = trainer.fit(_ds(x, y)).history["loss"][0]
    assert 0.0 < loss < 1.0


@pytest.mark.parametrize(
    ("field", "value", "match"),
    [("optimizer", "adamm", "optimizer: unknown value 'adamm'"), ("loss", "dicey", "loss: unknown value 'dicey'"), ("strategy", "gpu:2", "strategy")],
)
def test_unknown_names_fail_before_building(tmp_path, field, value, match):
    def build():
        raise AssertionError("the model must not be built for an invalid config")

    with pytest.raises(ConfigError, match=match):
        Trainer(_cfg(tmp_path, "bad", **{field: value}), build)
    with pytest.raises(ConfigError, match="steps_per_epoch"):
        Trainer(_cfg(tmp_path, "bad", schedule="cosine_restarts", steps_per_epoch=None), build)
    with pytest.raises(ConfigError, match="loss_kwargs"):
        Trainer(_cfg(tmp_path, "bad", loss_kwargs={"smoothing": 1.0}), build)
    with pytest.raises(ConfigError, match="schedule_kwargs"):
        Trainer(_cfg(tmp_path, "bad", schedule="step", schedule_kwargs={"gamma": 0.5}), build)
    assert not (tmp_path / "bad").exists()


def _run_script(out: Path, *args, env=None, **kw):
    return subprocess.Popen(
        [sys.executable, str(SCRIPT), str(out), *args],
        cwd=REPO,
        env=env or dict(os.environ),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        **kw,
    )


def test_sigkill_mid_run_then_resume_finishes_all_epochs(tmp_path):
    killed = tmp_path / "killed"
    proc = _run_script(killed, "--hang-after-epoch", "1")
    marker = killed / "marker"
    deadline = time.time() + 120
    while not marker.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    assert marker.exists(), proc.communicate()[0] if proc.poll() is not None else "no marker"
    time.sleep(0.5)  # let it run one batch of epoch 3 (discarded by the resume)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    resumed = _run_script(killed)
    log = resumed.communicate(timeout=120)[0]
    assert resumed.returncode == 0, log
    assert "resumed from" in log and "after epoch 2 (optimizer step 4)" in log
    epochs = [line.split(",")[0] for line in (killed / "history.csv").read_text().splitlines()[1:]]
    assert epochs == ["0", "1", "2", "3"]
    spec = importlib.util.spec_from_file_location("train_script", SCRIPT)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    full = script.run(tmp_path / "full", verbose=0)  # the same run uninterrupted, in this process
    got, ref = np.load(killed / "result.npz"), np.load(full)
    assert int(got["iterations"]) == int(ref["iterations"]) == 8  # 4 epochs x 2 steps
    lr = [float(r.split(",")[1]) for r in (killed / "history.csv").read_text().splitlines()[1:]]
    np.testing.assert_allclose(lr, [5e-3, 2.5e-3, 1.25e-3, 6.25e-4], rtol=1e-5)  # step schedule continued
    for key in [k for k in ref.files if k.startswith("w")]:
        np.testing.assert_allclose(got[key], ref[key], atol=1e-6)  # optimizer state + dropout RNG restored


def _free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def test_multiworker_two_processes_end_with_equal_weights(tmp_path):
    ports = _free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    procs = []
    for index in range(2):
        env = dict(os.environ, TF_CONFIG=json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}}))
        procs.append(_run_script(tmp_path / "mw", "--strategy", "multiworker", "--epochs", "2", env=env))
    logs = [p.communicate(timeout=180)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], logs
    chief = np.load(tmp_path / "mw" / "result.npz")
    worker = np.load(tmp_path / "mw" / "worker-1" / "result.npz")
    assert int(chief["iterations"]) == int(worker["iterations"]) == 4
    assert "CollectiveAllReduceStrategy x2" in logs[0]  # the class behind MultiWorkerMirroredStrategy
    keys = [k for k in chief.files if k.startswith("w")]
    for key in keys:
        np.testing.assert_array_equal(chief[key], worker[key])
    np.testing.assert_allclose(chief["losses"], worker["losses"], rtol=1e-6)
    assert np.isfinite(chief["losses"]).all()


def test_optimizer_slots_are_built_before_the_first_step_which_traces_once(tmp_path, data):
    """Keras builds the optimizer inside the first traced step when no strategy is set, which traces
    the step twice; the trainer builds it eagerly (build_optimizer_now)."""
    from tfmedseg.training.augmented import AugmentedModel

    trainer = Trainer(_cfg(tmp_path, "once", strategy="default", epochs=1, steps_per_epoch=2), lambda: AugmentedModel(_build()))
    assert trainer.model.optimizer.built
    traces = []
    original = trainer.model.train_step
    trainer.model.train_step = lambda batch: traces.append(1) or original(batch)
    trainer.fit(_ds(*data))
    assert len(traces) == 1
