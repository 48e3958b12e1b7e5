"""Crafted and damaged resume checkpoints: refused with one line, never executed, never a traceback."""

from __future__ import annotations

import json
import pickle

import keras
import numpy as np
import pytest

from tfmedseg.errors import InvalidInputError
from tfmedseg.training.callbacks import ResumeCheckpoint


def _model():
    inp = keras.Input((4,))
    model = keras.Model(inp, keras.layers.Dense(1)(inp))
    model.compile(optimizer="adam", loss="mse")
    return model


@pytest.fixture(scope="module")
def good_backup(tmp_path_factory):
    """A real one-epoch checkpoint written by ResumeCheckpoint."""
    backup = tmp_path_factory.mktemp("ckpt") / "backup"
    model = _model()
    model.fit(np.zeros((4, 4)), np.zeros((4, 1)), epochs=1, verbose=0, callbacks=[ResumeCheckpoint(backup)])
    return backup


def _copy(good_backup, tmp_path):
    import shutil

    backup = tmp_path / "backup"
    shutil.copytree(good_backup, backup)
    return backup, backup / "ckpt-000001"


class _Exploit:
    def __reduce__(self):
        return (exec, ("open('PWNED', 'w').write('x')",))


def _craft(case, backup, ckpt, tmp_path):
    if case == "pickle_state_only":  # the old format, crafted: must not be loaded at all
        for name in ("state.json", "state.npz"):
            (ckpt / name).unlink()
        (ckpt / "state.pkl").write_bytes(pickle.dumps(_Exploit()))
    elif case == "reduce_in_state_json":
        (ckpt / "state.json").write_text(json.dumps({"epoch": 1, "state": {"__reduce__": ["exec", "print(1)"]}}))
    elif case == "object_array_in_state_npz":
        np.savez(ckpt / "state.npz", a0=np.array([_Exploit()], dtype=object))
    elif case == "truncated_state_json":
        (ckpt / "state.json").write_text((ckpt / "state.json").read_text()[:20])
    elif case == "negative_epoch":
        doc = json.loads((ckpt / "state.json").read_text())
        doc["epoch"] = -4
        (ckpt / "state.json").write_text(json.dumps(doc))
    elif case == "garbage_weights":
        (ckpt / "model.weights.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 100)
    elif case == "missing_weights":
        (ckpt / "model.weights.h5").unlink()
    elif case == "latest_escapes_backup":
        import shutil

        shutil.rmtree(ckpt)
        (backup / "latest.json").write_text(json.dumps({"epoch": 1, "dir": "../../../etc"}))
    elif case == "bad_rng_state":
        doc = json.loads((ckpt / "state.json").read_text())
        doc["state"]["__dict__"] = [item if item[0] != "numpy_rng" else ["numpy_rng", {"__tuple__": ["PCG64", 1, 2, 3, 4]}]
                                    for item in doc["state"]["__dict__"]]
        (ckpt / "state.json").write_text(json.dumps(doc))
    elif case == "missing_array_reference":
        np.savez(ckpt / "state.npz", unrelated=np.zeros(2))


CASES = ["pickle_state_only", "reduce_in_state_json", "object_array_in_state_npz", "truncated_state_json", "negative_epoch",
         "garbage_weights", "missing_weights", "latest_escapes_backup", "bad_rng_state", "missing_array_reference"]


@pytest.mark.parametrize("case", CASES)
def test_crafted_or_damaged_checkpoint_is_refused(good_backup, tmp_path, probe, monkeypatch, case):
    monkeypatch.chdir(tmp_path)
    backup, ckpt = _copy(good_backup, tmp_path)
    _craft(case, backup, ckpt, tmp_path)
    callback = ResumeCheckpoint(backup)
    callback.set_model(_model())
    probe.error(lambda: callback.on_train_begin(), ("backup", "latest.json"), watch=tmp_path, kind=InvalidInputError)
    assert not (tmp_path / "PWNED").exists()
