"""Resume checkpoints: AugmentedModel rerun, no code from checkpoints, damaged state, weight sizes (issue 13)."""

from __future__ import annotations

import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfmedseg.errors import InvalidInputError
from tfmedseg.training import TrainConfig, Trainer
from tfmedseg.training.augmented import AugmentedModel


def _build_augmented():
    from tfmedseg.augment.presets import build_preset

    inp = keras.Input((16, 16, 1))
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu")(inp)
    net = keras.Model(inp, keras.layers.Conv2D(1, 1)(x))
    return AugmentedModel(net, build_preset("seed002_table31", ndim=2, seed=0))


def _data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(8, 16, 16, 1)).astype("float32")
    y = (x > 0.2).astype("float32")
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(4).repeat()


def _cfg(out, epochs):
    return TrainConfig(loss="bce_with_logits", epochs=epochs, steps_per_epoch=2, output_dir=str(out), tensorboard=False,
                       seed=1, verbose=0, learning_rate=1e-2)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("resume") / "run"
    Trainer(_cfg(out, 2), _build_augmented).fit(_data())
    return out


def test_rerun_of_a_finished_augmented_run_resumes_instead_of_crashing(run_dir, caplog):
    # before: "loading weights into a model that has not yet been built" (the wrapper was not built)
    with caplog.at_level("INFO", logger="tfmedseg.training.callbacks"):
        history = Trainer(_cfg(run_dir, 2), _build_augmented).fit(_data())
    assert history.history == {} or not history.history.get("loss")  # nothing left to train
    assert "after epoch 2" in caplog.text
    history = Trainer(_cfg(run_dir, 3), _build_augmented).fit(_data())  # and it continues when asked for more
    assert len(history.history["loss"]) == 1
    assert json.loads((run_dir / "backup" / "latest.json").read_text())["epoch"] == 3


def test_checkpoint_holds_plain_data_only(run_dir):
    from tfmedseg.io._atomic import OUTPUT_MARKER

    ckpt = max((run_dir / "backup").glob("ckpt-*"))
    assert sorted(p.name for p in ckpt.iterdir()) == sorted([OUTPUT_MARKER, "model.weights.h5", "state.json", "state.npz"])
    assert json.loads((ckpt / OUTPUT_MARKER).read_text())["kind"] == "checkpoint"  # written by io._atomic.atomic_dir
    with np.load(ckpt / "state.npz", allow_pickle=False) as data:
        assert all(data[k].dtype.kind in "biuf" for k in data.files)


def test_best_and_last_weights_carry_no_optimizer_state(run_dir):
    ckpt = max((run_dir / "backup").glob("ckpt-*"))
    last, backup = (run_dir / "last.weights.h5").stat().st_size, (ckpt / "model.weights.h5").stat().st_size
    assert last < backup  # Adam's two moments are only in the resume checkpoint
    import h5py

    with h5py.File(run_dir / "last.weights.h5") as f:
        assert "optimizer" not in f
    net = _build_augmented()
    net.build((None, 16, 16, 1))
    net.load_weights(run_dir / "best.weights.h5")  # loads into a fresh model


def _copy_run(src, dst):
    import shutil

    shutil.copytree(src, dst)
    return dst


def test_crafted_checkpoint_cannot_run_code(run_dir, tmp_path):
    run = _copy_run(run_dir, tmp_path / "run")
    ckpt = max((run / "backup").glob("ckpt-*"))
    # an object array in state.npz (would need code execution to load) and a state.json with foreign objects
    np.savez(ckpt / "state.npz", a0=np.array([object()], dtype=object))
    with pytest.raises(InvalidInputError, match=r"state.npz|no complete checkpoint") as info:
        Trainer(_cfg(run, 3), _build_augmented).fit(_data())
    assert str(info.value).count("\n") == 0
    (ckpt / "state.json").write_text(json.dumps({"epoch": 2, "state": {"__reduce__": ["os.system", "touch pwned"]}}))
    with pytest.raises(InvalidInputError, match="no complete checkpoint"):
        Trainer(_cfg(run, 3), _build_augmented).fit(_data())
    assert not (tmp_path / "pwned").exists() and not os.path.exists("pwned")


@pytest.mark.parametrize("damage", ["truncated_latest", "garbage_latest", "latest_names_missing_folder", "missing_folder"])
def test_damaged_resume_state(run_dir, tmp_path, damage):
    run = _copy_run(run_dir, tmp_path / "run")
    latest = run / "backup" / "latest.json"
    ckpt = max((run / "backup").glob("ckpt-*"))
    if damage == "truncated_latest":
        latest.write_text(latest.read_text()[:7])
    elif damage == "garbage_latest":
        latest.write_bytes(b"\x00\xff" * 10)
    elif damage == "latest_names_missing_folder":
        latest.write_text(json.dumps({"epoch": 9, "dir": "ckpt-000009"}))
    else:
        import shutil

        shutil.rmtree(ckpt)
    trainer = Trainer(_cfg(run, 4), _build_augmented)
    if damage == "missing_folder":  # nothing complete left: one line naming the file
        with pytest.raises(InvalidInputError, match="latest.json: names a checkpoint that is missing") as info:
            trainer.fit(_data())
        assert "\n" not in str(info.value)
        return
    history = trainer.fit(_data())  # falls back to the newest complete checkpoint
    assert len(history.history["loss"]) == 4 - int(ckpt.name[5:])


def test_checkpoints_stage_like_every_output_and_a_killed_runs_staging_is_removed(run_dir, tmp_path, monkeypatch):
    """``ckpt-<epoch>`` is staged under the visible ``io._atomic`` staging name; staging left by a
    killed process (and the hidden ``.ckpt-*.tmp`` of older versions) is removed when training starts
    again and never taken for a checkpoint."""
    import socket

    from tfmedseg.io import _atomic
    from tfmedseg.io._atomic import STAGING_TAG

    run = _copy_run(run_dir, tmp_path / "run")
    backup = run / "backup"
    host = "".join(c for c in socket.gethostname() if c.isalnum())[:24] or "host"
    dead = backup / f"ckpt-000009{STAGING_TAG}{host}-999999999-abcd"  # no such pid
    dead.mkdir()
    (dead / "state.json").write_text("{}")
    legacy = backup / ".ckpt-000009.tmp"
    legacy.mkdir()
    staged = []
    real = _atomic.make_staging_dir
    monkeypatch.setattr(_atomic, "make_staging_dir", lambda final: staged.append(real(final)) or staged[-1])
    epoch = json.loads((backup / "latest.json").read_text())["epoch"] + 1  # one more epoch than the shared run has
    Trainer(_cfg(run, epoch), _build_augmented).fit(_data())
    assert not dead.exists() and not legacy.exists()
    assert [p.name.split(STAGING_TAG)[0] for p in staged] == [f"ckpt-{epoch:06d}"] and not staged[0].exists()
    assert sorted(p.name for p in backup.iterdir()) == [f"ckpt-{epoch:06d}", "latest.json"]


def _checkpointer(backup):
    """A ``ResumeCheckpoint`` on a tiny model, its epoch ends called directly (no training needed)."""
    from tfmedseg.training.callbacks import ResumeCheckpoint

    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    checkpoint = ResumeCheckpoint(backup)
    checkpoint.set_model(model)
    return checkpoint


def test_a_checkpoint_folder_we_did_not_write_is_never_replaced_nor_removed(tmp_path):
    """A ``ckpt-<epoch>`` folder holding someone else's file stops the run with one line naming it and
    the current checkpoint stays; when it is the oldest, the clean-up after a new epoch leaves it."""
    import shutil

    backup = tmp_path / "backup"
    checkpoint = _checkpointer(backup)
    checkpoint.on_epoch_end(0)
    foreign = backup / "ckpt-000002"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(InvalidInputError, match="did not write") as info:
        checkpoint.on_epoch_end(1)
    assert "ckpt-000002" in str(info.value) and "\n" not in str(info.value)
    assert (foreign / "notes.txt").read_text() == "mine"
    assert json.loads((backup / "latest.json").read_text())["epoch"] == 1  # the last checkpoint stays current
    shutil.move(foreign, backup / "ckpt-000000")  # now the oldest: the clean-up of old checkpoints leaves it
    checkpoint.on_epoch_end(1)
    assert (backup / "ckpt-000000" / "notes.txt").read_text() == "mine"
    assert json.loads((backup / "latest.json").read_text())["epoch"] == 2
    assert sorted(p.name for p in backup.iterdir()) == ["ckpt-000000", "ckpt-000002", "latest.json"]  # ours went (keep=1)


def test_a_checkpoint_written_before_checkpoints_carried_the_marker_is_replaced(tmp_path):
    """Resuming from an earlier epoch redoes the next one: its old folder (no marker, only checkpoint
    files, as tfmedseg wrote them before) is replaced by the new checkpoint."""
    import shutil

    from tfmedseg.io._atomic import OUTPUT_MARKER

    backup = tmp_path / "backup"
    checkpoint = _checkpointer(backup)
    checkpoint.on_epoch_end(0)
    old = backup / "ckpt-000002"
    shutil.copytree(backup / "ckpt-000001", old)
    (old / OUTPUT_MARKER).unlink()
    checkpoint.on_epoch_end(1)
    assert json.loads((old / "state.json").read_text())["epoch"] == 2 and (old / OUTPUT_MARKER).is_file()
